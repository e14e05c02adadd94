"""A configurable 3D U-Net built from MONAI-style blocks.

Written here rather than taken whole from MONAI because none of MONAI's U-Nets offers
all of: residual or plain blocks, squeeze-and-excitation per level (seed 002), deep
supervision, and a state dict whose layout we control for bundled weights. The blocks
(conv-norm-act units, residual units, transposed-conv up blocks, the SE layer) follow
MONAI's layout and arithmetic in plain torch (:mod:`.blocks`), so predicting never imports MONAI.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.card import NetworkConfig
from .blocks import BasicBlock, OutBlock, ResidualBlock, SqueezeExcitation, UpBlock

_NORMS = ("instance", "batch")


class _EncoderLevel(nn.Module):
    def __init__(self, block: type[nn.Module], in_ch: int, out_ch: int, stride: int, norm, dropout: float, se: bool,
                 dims: int = 3):
        super().__init__()
        self.block = block(in_ch, out_ch, stride, norm, dropout, dims)
        self.se = SqueezeExcitation(out_ch, r=4, dims=dims) if se else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.block(x))


class UNet3D(nn.Module):
    """Encoder-decoder with skip connections; ``len(channels)`` levels, stride-2 downsampling.

    In training mode with ``deep_supervision`` the forward pass returns a list: the full
    resolution logits first, then auxiliary logits from coarser decoder levels, upsampled
    to full resolution. In eval mode it always returns the full-resolution logits alone.
    ``spatial_dims=2`` builds the same U-Net on 2D slices (the 2.5D and per-plane models use it).
    """

    def __init__(self, in_channels: int, num_classes: int, config: NetworkConfig | None = None, spatial_dims: int = 3):
        super().__init__()
        config = config or NetworkConfig()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if config.block not in ("basic", "residual"):
            raise ValueError(f"unknown block {config.block!r}: use 'basic' or 'residual'")
        if config.norm not in _NORMS:
            raise ValueError(f"unknown norm {config.norm!r}: use 'instance' or 'batch'")
        if len(config.channels) < 2:
            raise ValueError("a U-Net needs at least two levels")
        self.config, self.spatial_dims = config, spatial_dims
        self.in_channels, self.num_classes = in_channels, num_classes
        block = ResidualBlock if config.block == "residual" else BasicBlock
        norm = config.norm
        channels = list(config.channels)
        self.encoders = nn.ModuleList()
        previous = in_channels
        for level, width in enumerate(channels):
            stride = 1 if level == 0 else 2
            self.encoders.append(_EncoderLevel(block, previous, width, stride, norm, config.dropout, config.squeeze_excitation,
                                               spatial_dims))
            previous = width
        self.decoders = nn.ModuleList(
            UpBlock(channels[level + 1], channels[level], norm, config.dropout, spatial_dims)
            for level in reversed(range(len(channels) - 1))
        )
        self.head = OutBlock(channels[0], num_classes, spatial_dims)
        # Auxiliary heads on the decoder outputs below full resolution (coarsest first is dropped).
        self.aux_heads = nn.ModuleList(
            OutBlock(channels[level], num_classes, spatial_dims) for level in range(1, len(channels) - 1)
        ) if config.deep_supervision else nn.ModuleList()

    @property
    def size_divisor(self) -> int:
        """Spatial sizes must be multiples of this."""
        return 2 ** (len(self.config.channels) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
        x = skips.pop()
        decoder_outputs = []
        for decoder in self.decoders:
            x = decoder(x, skips.pop())
            decoder_outputs.append(x)
        logits = self.head(x)
        if not (self.training and self.aux_heads):
            return logits
        # decoder_outputs[-1] is full resolution; the ones before are coarser, finest first after reversal.
        coarser = list(reversed(decoder_outputs[:-1]))
        aux = [
            F.interpolate(head(features), size=logits.shape[2:], mode="trilinear" if self.spatial_dims == 3 else "bilinear",
                          align_corners=False)
            for head, features in zip(self.aux_heads, coarser, strict=False)
        ]
        return [logits, *aux]

