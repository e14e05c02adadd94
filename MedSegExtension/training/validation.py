"""Validation during training: sliding-window prediction of the validation cases and their Dice."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.card import ModelCard
from .optimization import autocast

Validator = Callable[[nn.Module], tuple[float, dict[str, Any]]]


def dice_scores(prediction: np.ndarray, reference: np.ndarray, num_classes: int) -> list[float]:
    """Dice of channels 1..num_classes-1; NaN where a class is absent from both."""
    scores = []
    for channel in range(1, num_classes):
        p, r = prediction == channel, reference == channel
        total = int(p.sum()) + int(r.sum())
        scores.append(float("nan") if total == 0 else 2.0 * int((p & r).sum()) / total)
    return scores


def make_validator(cases: list[Any], card: ModelCard, patch_size_kji: tuple[int, int, int], device: torch.device,
                   amp: bool = False, overlap: float = 0.25, batch_size: int = 2) -> Validator:
    """Sliding-window (MONAI, Gaussian blending) prediction of each validation case on the model grid.

    The score is the mean over labels of the per-label Dice averaged over cases (cases where a
    label is absent from both prediction and reference do not count for it).
    """
    from monai.inferers import sliding_window_inference

    names = [label.name for label in card.labels]

    def validate(network: nn.Module) -> tuple[float, dict[str, Any]]:
        network.eval()
        per_case = []
        with torch.no_grad(), autocast(device, amp):
            for case in cases:
                image = torch.from_numpy(case.image)[None]  # stays on the CPU; windows go to the device
                logits = sliding_window_inference(image, patch_size_kji, batch_size, network, overlap=overlap,
                                                  mode="gaussian", sw_device=device, device="cpu")
                prediction = logits.argmax(1)[0].cpu().numpy()
                per_case.append(dice_scores(prediction, case.labels, card.num_classes))
        table = np.array(per_case, dtype=np.float64).reshape(len(cases), len(names))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a label absent from every case: NaN
            per_label = np.nanmean(table, axis=0) if len(cases) else np.full(len(names), np.nan)
        valid = per_label[np.isfinite(per_label)]
        score = float(valid.mean()) if valid.size else 0.0
        dice = {name: (None if not math.isfinite(v) else round(float(v), 4)) for name, v in zip(names, per_label, strict=False)}
        return score, {"mean_dice": round(score, 4), "dice": dice}

    return validate
