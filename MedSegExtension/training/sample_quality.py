"""Sample-quality weighting for noisy labels: the QAM and OCM of seed 002 (recipe ``training.sample_weighting``).

Users bring their own labels, and some are bad (dilated, eroded, shifted, another annotator's
habit). Seed 002 learns, without any quality annotation, which samples of a batch to trust:

- **QAM** (quality-awareness module): a small VGG-like 3D network Φ scores each sample from its
  image and its label, ``t_i = Φ(x_i ⊕ onehot(y_i))`` (the image channels, then one channel per
  class; unlabelled voxels of a weight map are all-zero in the one-hot part).
- **OCM** (overfitting-control module): ``t_i → λ·tanh(t_i)`` (λ = 2) before the softmax, so
  every score lies in (−λ, λ) and the ratio of any two weights is below ``e^{2λ}``. Without it
  the softmax hands a few samples nearly all the weight, and a sample scored very low early
  sits where the softmax gradient vanishes and never recovers (seed 002: under 75 % noisy
  labels, Dice 0.636 with QAM alone, 0.892 with QAM + OCM).
- Weights: ``Θ = softmax(scores)`` over the batch (Σ Θ_i = 1, 0 < Θ_i < 1); the training loss is
  ``Σ_i Θ_i · L_i`` with ``L_i`` the segmentation loss of sample ``i`` alone, written here as
  ``mean_i(w_i · L_i)`` with ``w_i = B·Θ_i`` (mean weight 1, so the loss keeps the scale of the
  unweighted batch mean).
- Joint training: one loss, one backward pass updates both networks (seed 002 §3.2, §5.2). The
  segmentation network gets ``w_i·∂L_i``; the QAM gets ``∂Loss/∂s_j = Θ_j (L_j − Σ_i Θ_i L_i)``,
  so a sample whose loss stays above the batch's weighted mean has its score lowered. Noisy
  labels are the ones the network fits slowest (their standards contradict the clean ones), so
  they lose weight. The QAM has its own learning rate (seed 002: 1e-4) and is used only in
  training; the saved model is the segmentation network alone.

A softmax over one sample is always 1: the recipe refuses ``batch_size`` 1.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

SAMPLE_WEIGHTINGS = ("none", "qam", "qam_ocm")


def sample_weights(scores: torch.Tensor, ocm_lambda: float | None = None) -> torch.Tensor:
    """Per-sample weights ``B·softmax(λ·tanh(s))`` (or ``B·softmax(s)`` without OCM) of (B,) scores; mean 1."""
    bounded = scores if ocm_lambda is None else ocm_lambda * torch.tanh(scores)
    return bounded.softmax(0) * scores.shape[0]


class QualityNetwork(nn.Module):
    """VGG-like scorer: (conv-ReLU ×2, max-pool) per level, global average pool, one score per sample.

    No batch norm: it would mix the samples whose relative quality is being judged. The last
    layer starts at zero, so training starts from equal weights (the unweighted loss).
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...] = (8, 16, 32)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for index, width in enumerate(widths):
            if index:
                layers.append(nn.MaxPool3d(2, ceil_mode=True))
            layers += [nn.Conv3d(channels, width, 3, padding=1), nn.LeakyReLU(0.1),
                       nn.Conv3d(width, width, 3, padding=1), nn.LeakyReLU(0.1)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.score = nn.Linear(channels, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(self.features(x).mean(dim=(2, 3, 4)))[:, 0]


class SampleQualityWeighting(nn.Module):
    """QAM (+ OCM when ``ocm_lambda`` is set): turns per-sample losses into the batch's training loss."""

    def __init__(self, image_channels: int, num_classes: int, ocm_lambda: float | None = 2.0, lr: float = 1e-4) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.ocm_lambda = None if ocm_lambda is None else float(ocm_lambda)
        self.lr = float(lr)
        self.network = QualityNetwork(image_channels + self.num_classes)
        self.last_weights: torch.Tensor | None = None  # of the latest batch, detached (for logs and tests)

    def scores(self, image: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Raw QAM scores (B,) of image (B, n, *spatial) ⊕ one-hot target (B, *spatial) (weight 0 = unlabelled)."""
        if target.ndim == image.ndim:
            target = target[:, 0]
        labelled = torch.ones_like(target, dtype=torch.bool) if weight is None else (
            (weight[:, 0] if weight.ndim == image.ndim else weight) > 0)
        target = torch.where(labelled, target.long(), torch.zeros_like(target, dtype=torch.long))
        onehot = F.one_hot(target, self.num_classes).movedim(-1, 1).float() * labelled.unsqueeze(1)
        return self.network(torch.cat([image.float(), onehot], dim=1))

    def weights(self, image: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample weights (B,), positive, mean 1 (``weights / B`` sums to 1)."""
        return sample_weights(self.scores(image, target, weight), self.ocm_lambda)

    def forward(self, image: torch.Tensor, target: torch.Tensor, per_sample_losses: torch.Tensor,
                weight: torch.Tensor | None = None) -> torch.Tensor:
        """``mean_i(w_i · L_i)``: the loss whose backward pass trains the segmentation network and the QAM."""
        if per_sample_losses.shape != image.shape[:1]:
            raise ValueError(f"expected one loss per sample {tuple(image.shape[:1])}, got {tuple(per_sample_losses.shape)}")
        weights = self.weights(image, target, weight)
        self.last_weights = weights.detach()
        return (weights * per_sample_losses.float()).mean()


def check_sample_weighting(mode: Any, batch_size: int, ocm_lambda: Any, qam_lr: Any, source: str) -> None:
    """Recipe checks, one line each: a known mode, batch size ≥ 2, positive λ and QAM learning rate."""
    if mode not in SAMPLE_WEIGHTINGS:
        raise InputError(f"{source}: training.sample_weighting must be one of {', '.join(SAMPLE_WEIGHTINGS)}, "
                         f"got {mode!r}")
    if mode == "none":
        return
    if batch_size < 2:
        raise InputError(f"{source}: training.sample_weighting {mode!r}: sample weighting needs batch_size ≥ 2 "
                         f"(the weights are a softmax over the batch), got batch_size {batch_size}")
    for name, value in (("ocm_lambda", ocm_lambda), ("qam_lr", qam_lr)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise InputError(f"{source}: training.{name} must be a positive number, got {value!r}")


def build_sample_weighting(mode: str, image_channels: int, num_classes: int, ocm_lambda: float = 2.0,
                           qam_lr: float = 1e-4) -> SampleQualityWeighting | None:
    """The weighting module of a recipe's ``sample_weighting`` (``None`` for ``"none"``)."""
    if mode == "none":
        return None
    return SampleQualityWeighting(image_channels, num_classes, ocm_lambda if mode == "qam_ocm" else None, qam_lr)
