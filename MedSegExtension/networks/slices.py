"""A 2D U-Net run slice by slice over a 3D patch: the 2.5D model (seed 004) and one plane of the per-plane model.

Each output slice sees ``slices`` adjacent input slices as channels (k = 1: plain 2D, seed
003; k = 3: the 2.5D hybrid of seed 004). The network takes and returns 3D tensors
(B, C, k, j, i) like the 3D U-Net, so training patches, sliding-window inference, TTA mirrors,
the module and fine-tuning use it unchanged. At the patch border along the slice axis the
missing neighbours repeat the border slice (replicate padding); overlapping windows at
prediction time hide that seam the same way they hide the 3D U-Net's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.card import NetworkConfig
from .unet import UNet3D


class SliceStackUNet(nn.Module):
    """2D U-Net over the slices normal to tensor dimension ``axis`` (2 = k: axial, 3 = j: coronal, 4 = i: sagittal)."""

    def __init__(self, in_channels: int, num_classes: int, config: NetworkConfig, axis: int = 2,
                 slices: int | None = None) -> None:
        super().__init__()
        self.slices = int(config.slices if slices is None else slices)
        if self.slices < 1 or self.slices % 2 == 0:
            raise ValueError(f"slices must be an odd number >= 1, got {self.slices}")
        if axis not in (2, 3, 4):
            raise ValueError(f"axis must be 2, 3 or 4 (a spatial dimension), got {axis}")
        self.axis, self.in_channels, self.num_classes = axis, in_channels, num_classes
        self.unet = UNet3D(in_channels * self.slices, num_classes, config, spatial_dims=2)

    @property
    def size_divisor(self) -> int:
        return self.unet.size_divisor

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x = x.movedim(self.axis, 2)  # (B, C, S, P, Q): S slices of P×Q
        b, c, s, p, q = x.shape
        half = self.slices // 2
        if half:
            x = F.pad(x, (0, 0, 0, 0, half, half), mode="replicate")
        stacks = x.unfold(2, self.slices, 1)  # (B, C, S, P, Q, k)
        stacks = stacks.permute(0, 2, 1, 5, 3, 4).reshape(b * s, c * self.slices, p, q)
        outputs = self.unet(stacks)

        def to_volume(logits: torch.Tensor) -> torch.Tensor:
            return logits.reshape(b, s, -1, p, q).transpose(1, 2).movedim(2, self.axis)

        return [to_volume(o) for o in outputs] if isinstance(outputs, list) else to_volume(outputs)
