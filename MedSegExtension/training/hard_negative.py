"""The hard-negative loss of seed 004, switched on late in training (recipe ``training.hard_negative``).

Seed 004 (liver tumours, < 1 % of voxels) added, late in training, a loss on the hardest
negatives: per class, as many of the highest-scoring background voxels as there are voxels
of the class, together with the class's own voxels, by mean absolute (or squared) error of
the class probability. Early on every negative is hard and the term would only shrink the
predictions; late, it singles out the few confident false positives (organ borders, look-alike
tissue) that Dice and cross-entropy average away among millions of easy negatives.

Per sample and class c: P = voxels labelled c, N = the other labelled voxels; the n = max(|P|, 1)
voxels of N with the highest p_c are the hard negatives H (one even when the patch has no c, so a
patch without the class still punishes its worst false positive). The term is the mean over
P ∪ H of (1 − p_c) on P and p_c on H (MAE), or their squares (MSE), times the voxel weight;
classes absent from a sample (no P, no N) are left out; the sample's term is the mean over its
classes. Voxels of weight 0 are neither positive nor negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from .losses import _check_reduction, _prepare

HARD_NEGATIVE_KINDS = ("mae", "mse")
HARD_NEGATIVE_KEYS = ("start_fraction", "weight", "kind")


def hard_negative_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                       kind: str = "mae", reduction: str = "mean") -> torch.Tensor:
    """The term above for (B, C, *spatial) logits; (B,) with ``reduction="none"``."""
    per_sample = _check_reduction(reduction)
    logits, target, weight = _prepare(logits, target, weight)
    p = logits.softmax(1)[:, 1:].flatten(2)  # (B, K, V): foreground classes only
    voxels = p.shape[2]
    labelled = (weight > 0).flatten(1).unsqueeze(1)
    classes = torch.arange(1, p.shape[1] + 1, device=p.device).view(1, -1, 1)
    positive = (target.flatten(1).unsqueeze(1) == classes) & labelled
    negative = labelled & ~positive
    count = torch.minimum(positive.sum(2).clamp_min(1), negative.sum(2))  # hard negatives per (sample, class)
    order = p.detach().masked_fill(~negative, -1.0).argsort(2, descending=True)
    rank = torch.empty_like(order).scatter_(2, order, torch.arange(voxels, device=p.device).expand_as(order))
    chosen = positive | (negative & (rank < count.unsqueeze(2)))
    error = torch.where(positive, 1 - p, p)
    if kind == "mse":
        error = error**2
    per_class = (error * weight.flatten(1).unsqueeze(1) * chosen).sum(2) / chosen.sum(2).clamp_min(1)
    present = chosen.any(2)
    per_sample_loss = (per_class * present).sum(1) / present.sum(1).clamp_min(1)
    return per_sample_loss if per_sample else per_sample_loss.mean()


class LateHardNegative(nn.Module):
    """``loss`` plus ``weight`` × :func:`hard_negative_loss` from step ``start_step`` on (the loop calls ``set_step``)."""

    def __init__(self, loss: nn.Module, start_step: int, weight: float = 1.0, kind: str = "mae") -> None:
        super().__init__()
        self.loss, self.start_step, self.weight, self.kind = loss, int(start_step), float(weight), kind
        self.active = False

    def set_step(self, step: int) -> None:
        """Before each training step: the term is on from ``start_step`` (0-based) on."""
        self.active = step >= self.start_step

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor,
                weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
        value = self.loss(outputs, target, weight, reduction)
        if not self.active:
            return value
        logits = outputs if isinstance(outputs, torch.Tensor) else outputs[0]  # deep supervision: full resolution
        return value + self.weight * hard_negative_loss(logits, target, weight, self.kind, reduction)


def check_hard_negative(spec: Any, source: str) -> dict[str, Any] | None:
    """The recipe's ``training.hard_negative`` with defaults filled in (``None``: off); one line per problem."""
    if spec is None or spec is False:
        return None
    where = f"{source}: training.hard_negative"
    if spec is True:
        spec = {}
    if not isinstance(spec, dict):
        raise InputError(f"{where} must be a mapping such as {{start_fraction: 0.75}}, got {spec!r}")
    unknown = sorted(set(spec) - set(HARD_NEGATIVE_KEYS))
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(HARD_NEGATIVE_KEYS)})")
    settings = {"start_fraction": 0.75, "weight": 1.0, "kind": "mae", **spec}
    fraction, factor = settings["start_fraction"], settings["weight"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise InputError(f"{where}.start_fraction must be a number in [0, 1), got {fraction!r}")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
        raise InputError(f"{where}.weight must be a positive number, got {factor!r}")
    if settings["kind"] not in HARD_NEGATIVE_KINDS:
        raise InputError(f"{where}.kind must be one of {', '.join(HARD_NEGATIVE_KINDS)}, got {settings['kind']!r}")
    return settings


def with_hard_negative(loss: nn.Module, settings: dict[str, Any] | None, steps: int) -> nn.Module:
    """``loss`` as is when ``settings`` is ``None``, else wrapped to add the term from ``start_fraction × steps`` on."""
    if settings is None:
        return loss
    start = round(float(settings["start_fraction"]) * steps)
    return LateHardNegative(loss, start, settings["weight"], settings["kind"])
