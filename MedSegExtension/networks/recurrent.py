"""Recurrent refinement (seed 002): the network sees the image and its own previous prediction.

Pass 1 gets all-zero "previous probabilities"; each later pass gets the softmax of the one
before, concatenated to the image channels. Seed 002 measured +0.002 Dice on top of residual
and squeeze-and-excitation blocks. Training back-propagates through every pass; inference
runs the same passes, so a model costs ``passes`` times one network's time.
"""

from __future__ import annotations

import torch
from torch import nn


class RecurrentRefinement(nn.Module):
    """Runs ``core`` (built for image + class channels) ``passes`` times, feeding back its probabilities."""

    def __init__(self, core: nn.Module, num_classes: int, passes: int) -> None:
        super().__init__()
        if passes < 2:
            raise ValueError(f"recurrent refinement needs passes >= 2, got {passes}")
        self.core, self.num_classes, self.passes = core, num_classes, passes

    @property
    def size_divisor(self) -> int:
        return self.core.size_divisor

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        previous = x.new_zeros((x.shape[0], self.num_classes, *x.shape[2:]))
        for _ in range(self.passes):
            outputs = self.core(torch.cat([x, previous], dim=1))
            logits = outputs[0] if isinstance(outputs, list) else outputs
            previous = logits.softmax(1).to(x.dtype)
        return outputs
