"""Segmentation losses that all take a per-voxel weight map.

Every loss is called as ``loss(logits, target, weight=None)``:

- ``logits``: (B, C, *spatial) raw network outputs, channel 0 = background;
- ``target``: (B, *spatial) integer channel indices (a singleton channel axis is accepted);
- ``weight``: (B, *spatial) non-negative floats, or ``None`` for all ones.

``loss(logits, target, weight, reduction="none")`` returns one loss per sample, shape (B,):
each sample's loss on its own (Dice and Tversky then sum over that sample only, whatever
their ``batch`` setting). Sample-quality weighting (:mod:`.sample_quality`) weighs these.
The default, ``reduction="mean"``, is the batch loss and is unchanged by this option.

A voxel of weight 0 contributes exactly nothing, to the value and to the gradient: its
target is replaced by 0 before one-hot encoding (so unlabelled voxels may hold any value,
even one outside ``0..C-1``), and every per-voxel term is multiplied by its weight before
any sum. The sparse-annotation mode relies on this.

Why some of these are written here rather than taken from MONAI: MONAI's ``DiceLoss``,
``TverskyLoss`` and ``DiceCELoss`` take per-class weights but no per-voxel weight map, and
their ``ignore_index`` masks a label value, not an arbitrary map. The focal loss uses MONAI's
``softmax_focal_loss`` for the per-voxel terms and only adds the weighting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses.focal_loss import softmax_focal_loss
from torch import nn

from ..errors import InputError

LOSS_NAMES = ("ce", "dice", "vnet_dice", "dice_ce", "focal", "tversky", "focal_dice")
REDUCTIONS = ("mean", "none")


def _check_reduction(reduction: str) -> bool:
    """True for the per-sample form (``"none"``); a programming error for anything else."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    return reduction == "none"


def _prepare(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float32 logits, a sanitized long target and a float weight map of the target's shape."""
    if target.ndim == logits.ndim and target.shape[1] == 1:
        target = target[:, 0]
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    logits = logits.float()
    if weight is None:
        weight = torch.ones(target.shape, dtype=torch.float32, device=logits.device)
    else:
        if weight.ndim == logits.ndim and weight.shape[1] == 1:
            weight = weight[:, 0]
        if weight.shape != target.shape:
            raise ValueError(f"weight shape {tuple(weight.shape)} does not match target {tuple(target.shape)}")
        weight = weight.to(device=logits.device, dtype=torch.float32)
    target = target.long()
    # Unlabelled voxels may carry anything (e.g. 255 or -1): make them a valid index; their weight is 0.
    target = torch.where(weight > 0, target, torch.zeros_like(target))
    return logits, target, weight


def _one_hot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, *spatial) indices -> (B, C, *spatial) float one-hot."""
    return F.one_hot(target, num_classes).movedim(-1, 1).float()


def _weighted_mean(per_voxel: torch.Tensor, weight: torch.Tensor, per_sample: bool = False) -> torch.Tensor:
    """Σ w·l / Σ w (per sample: over each sample's voxels, shape (B,)); exactly 0 where every weight is 0."""
    if per_sample:
        dims = list(range(1, per_voxel.ndim))
        return (per_voxel * weight).sum(dims) / weight.sum(dims).clamp_min(1e-12)
    total = weight.sum()
    return (per_voxel * weight).sum() / total.clamp_min(1e-12)


class SegmentationLoss(nn.Module):
    """Base class: ``forward(logits, target, weight=None, reduction="mean")`` -> scalar, or (B,) for ``"none"``."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                reduction: str = "mean") -> torch.Tensor:
        raise NotImplementedError


class CrossEntropyLoss(SegmentationLoss):
    """Voxel-weighted softmax cross entropy, the weighted loss of 3D U-Net (seed 002 appendix).

    ``class_weights`` (one per channel) multiply each voxel's weight by its class's weight;
    the result is normalized by the sum of the effective weights.
    """

    def __init__(self, class_weights: Sequence[float] | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.class_weights = None if class_weights is None else torch.tensor(list(class_weights), dtype=torch.float32)
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                reduction: str = "mean") -> torch.Tensor:
        per_sample = _check_reduction(reduction)
        logits, target, weight = _prepare(logits, target, weight)
        if self.class_weights is not None:
            if self.class_weights.numel() != logits.shape[1]:
                raise ValueError(f"class_weights has {self.class_weights.numel()} entries for {logits.shape[1]} classes")
            weight = weight * self.class_weights.to(logits.device)[target]
        per_voxel = F.cross_entropy(logits, target, reduction="none", label_smoothing=self.label_smoothing)
        return _weighted_mean(per_voxel, weight, per_sample)


def _overlap_terms(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, squared: bool, batch: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted soft TP, Σ w·p (or Σ w·p²) and Σ w·y per class, shape (C,) or (B, C)."""
    probabilities = logits.softmax(1)
    onehot = _one_hot(target, logits.shape[1])
    w = weight.unsqueeze(1)
    dims = [0, *range(2, logits.ndim)] if batch else list(range(2, logits.ndim))
    tp = (w * probabilities * onehot).sum(dims)
    predicted = (w * (probabilities * probabilities if squared else probabilities)).sum(dims)
    reference = (w * onehot).sum(dims)
    return tp, predicted, reference


class DiceLoss(SegmentationLoss):
    """Soft Dice ``1 - (2Σwpy + ε) / (Σwp + Σwy + ε)``, averaged over classes.

    ``squared=True`` is the V-Net form of seed 004, ``1 - (2Σŷy + ε)/(Σŷ² + Σy² + ε)``
    (with ε = 1 there). ``batch=True`` sums over the whole batch before the ratio (stable on
    patches where a class is absent); ``include_background=False`` averages over the label
    channels only.
    """

    def __init__(
        self, smooth: float = 1e-5, squared: bool = False, include_background: bool = False, batch: bool = True
    ) -> None:
        super().__init__()
        self.smooth, self.squared = float(smooth), bool(squared)
        self.include_background, self.batch = bool(include_background), bool(batch)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                reduction: str = "mean") -> torch.Tensor:
        per_sample = _check_reduction(reduction)
        logits, target, weight = _prepare(logits, target, weight)
        tp, predicted, reference = _overlap_terms(logits, target, weight, self.squared, self.batch and not per_sample)
        dice = (2 * tp + self.smooth) / (predicted + reference + self.smooth)
        if not self.include_background and logits.shape[1] > 1:
            dice = dice[..., 1:]
        return 1 - (dice.mean(-1) if per_sample else dice.mean())


class TverskyLoss(SegmentationLoss):
    """Tversky ``1 - (TP + ε) / (TP + α·FP + β·FN + ε)`` with soft, weighted counts (seed 003).

    ``alpha`` weighs false positives and ``beta`` false negatives (α = β = 0.5 is Dice);
    seed 003 found α = 0.85, β = 0.15 best for its 20 brain regions.
    """

    def __init__(
        self, alpha: float = 0.5, beta: float = 0.5, smooth: float = 1e-5, include_background: bool = False,
        batch: bool = True,
    ) -> None:
        super().__init__()
        self.alpha, self.beta, self.smooth = float(alpha), float(beta), float(smooth)
        self.include_background, self.batch = bool(include_background), bool(batch)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                reduction: str = "mean") -> torch.Tensor:
        per_sample = _check_reduction(reduction)
        logits, target, weight = _prepare(logits, target, weight)
        tp, predicted, reference = _overlap_terms(logits, target, weight, False, self.batch and not per_sample)
        fp, fn = predicted - tp, reference - tp
        score = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)
        if not self.include_background and logits.shape[1] > 1:
            score = score[..., 1:]
        return 1 - (score.mean(-1) if per_sample else score.mean())


class FocalLoss(SegmentationLoss):
    """Softmax focal loss ``-α_t (1 - p_t)^γ log p_t`` (seed 000: α = 0.75, γ = 2), voxel-weighted.

    A scalar ``alpha`` gives weight α to every label channel and 1 - α to background (MONAI's
    convention); a list gives one weight per channel; ``None`` disables class balancing.
    """

    def __init__(self, alpha: float | Sequence[float] | None = 0.75, gamma: float = 2.0) -> None:
        super().__init__()
        self.alpha = alpha if alpha is None or isinstance(alpha, (int, float)) else torch.tensor(list(alpha))
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                reduction: str = "mean") -> torch.Tensor:
        per_sample = _check_reduction(reduction)
        logits, target, weight = _prepare(logits, target, weight)
        onehot = _one_hot(target, logits.shape[1])
        per_voxel = softmax_focal_loss(logits, onehot, self.gamma, self.alpha).sum(1)
        return _weighted_mean(per_voxel, weight, per_sample)


class CompoundLoss(SegmentationLoss):
    """A weighted sum of losses, e.g. cross entropy + Dice (seed 002: BCE + Dice)."""

    def __init__(self, parts: Sequence[tuple[float, SegmentationLoss]]) -> None:
        super().__init__()
        self.factors = [float(f) for f, _ in parts]
        self.parts = nn.ModuleList(loss for _, loss in parts)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                reduction: str = "mean") -> torch.Tensor:
        shape = (logits.shape[0],) if _check_reduction(reduction) else ()
        total = logits.new_zeros(shape, dtype=torch.float32)
        for factor, loss in zip(self.factors, self.parts, strict=False):
            if factor:
                total = total + factor * loss(logits, target, weight, reduction)
        return total


class DeepSupervisionLoss(SegmentationLoss):
    """Applies a loss to each output of a deep-supervision list with weights 1, ½, ¼, … (normalized).

    Written here because MONAI's ``DeepSupervisionLoss`` cannot pass a weight map through;
    our U-Net's auxiliary outputs are already at full resolution, so the target is shared.
    A plain tensor input is passed straight to the wrapped loss.
    """

    def __init__(self, loss: SegmentationLoss, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.weights = None if weights is None else [float(w) for w in weights]

    def forward(
        self, logits: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor, weight: torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        if isinstance(logits, torch.Tensor):
            return self.loss(logits, target, weight, reduction)
        outputs = list(logits)
        factors = self.weights if self.weights is not None else [0.5**i for i in range(len(outputs))]
        factors = (list(factors) + [0.0] * len(outputs))[: len(outputs)]
        norm = sum(factors) or 1.0
        shape = (outputs[0].shape[0],) if _check_reduction(reduction) else ()
        total = outputs[0].new_zeros(shape, dtype=torch.float32)
        for factor, output in zip(factors, outputs, strict=False):
            if factor:
                total = total + (factor / norm) * self.loss(output, target, weight, reduction)
        return total


def build_loss(spec: str | dict[str, Any] | None, source: str = "config") -> DeepSupervisionLoss:
    """A loss from its config: a name, or ``{"name": ..., params...}``; always deep-supervision ready.

    Names: ``ce``, ``dice``, ``vnet_dice``, ``dice_ce`` (default), ``focal``, ``tversky``,
    ``focal_dice``. Parameters go to the classes above; compounds take ``ce_weight`` /
    ``focal_weight`` and ``dice_weight`` plus the parameters of their parts, and every loss takes
    ``deep_supervision_weights``.
    """
    params: dict[str, Any] = {"name": spec} if isinstance(spec, str) else dict(spec or {"name": "dice_ce"})
    name = str(params.pop("name", "dice_ce")).lower()
    ds_weights = params.pop("deep_supervision_weights", None)

    def take(*keys: str) -> dict[str, Any]:
        return {k: params.pop(k) for k in keys if k in params}

    dice_keys = ("smooth", "squared", "include_background", "batch")
    try:
        if name == "ce":
            loss: SegmentationLoss = CrossEntropyLoss(**take("class_weights", "label_smoothing"))
        elif name == "dice":
            loss = DiceLoss(**take(*dice_keys))
        elif name == "vnet_dice":
            loss = DiceLoss(**{"smooth": 1.0, "squared": True, **take(*dice_keys)})
        elif name == "dice_ce":
            weights = take("ce_weight", "dice_weight")
            loss = CompoundLoss([
                (weights.get("ce_weight", 1.0), CrossEntropyLoss(**take("class_weights", "label_smoothing"))),
                (weights.get("dice_weight", 1.0), DiceLoss(**take(*dice_keys))),
            ])
        elif name == "focal":
            loss = FocalLoss(**take("alpha", "gamma"))
        elif name == "tversky":
            loss = TverskyLoss(**take("alpha", "beta", "smooth", "include_background", "batch"))
        elif name == "focal_dice":
            weights = take("focal_weight", "dice_weight")
            loss = CompoundLoss([
                (weights.get("focal_weight", 1.0), FocalLoss(**take("alpha", "gamma"))),
                (weights.get("dice_weight", 1.0), DiceLoss(**take(*dice_keys))),
            ])
        else:
            raise InputError(f"{source}: unknown loss {name!r} (use one of {', '.join(LOSS_NAMES)})")
    except (TypeError, ValueError) as exc:
        raise InputError(f"{source}: bad parameters for loss {name!r} ({exc})") from None
    if params:
        raise InputError(f"{source}: loss {name!r} does not take {', '.join(sorted(params))}")
    return DeepSupervisionLoss(loss, ds_weights)
