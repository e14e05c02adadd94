"""The U-Net's building blocks in plain torch, laid out like MONAI's so weights load unchanged.

The 3D U-Net was first built from MONAI's ``UnetBasicBlock``/``UnetResBlock``/``UnetUpBlock``/
``UnetOutBlock`` and ``ChannelSELayer``; bundled and user weights carry their state-dict keys
(``block.conv1.conv.weight``, ``fc.0.weight``, ...). These classes keep exactly those module
names and the same arithmetic, but import only torch: importing MONAI's blocks costs about
2 s, more than a whole-volume prediction of a 2 mm head, on every ``medseg predict``.
``Testing/test_network_blocks.py`` checks outputs against MONAI's blocks with shared weights.
"""

from __future__ import annotations

import torch
from torch import nn

NEGATIVE_SLOPE = 0.01
# ``dims``: 3 for the 3D U-Net, 2 for the slice networks (2.5D, per plane) built from the same blocks.
_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_TRANSPOSE = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_INSTANCE_NORM = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_BATCH_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_AVG_POOL = {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}


class ConvUnit(nn.Sequential):
    """A convolution named ``conv`` (and a dropout named ``adn.D``, as MONAI's ``Convolution``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, dropout: float = 0.0,
                 bias: bool = False, transposed: bool = False, dims: int = 3) -> None:
        super().__init__()
        if transposed:  # kernel == stride: no padding, no output padding
            self.add_module("conv", _CONV_TRANSPOSE[dims](in_ch, out_ch, kernel, stride=stride, bias=bias))
        else:
            self.add_module("conv", _CONV[dims](in_ch, out_ch, kernel, stride=stride, padding=(kernel - stride + 1) // 2,
                                                bias=bias))
        if dropout is not None:
            adn = nn.Sequential()
            adn.add_module("D", nn.Dropout(float(dropout)))
            self.add_module("adn", adn)


def norm_layer(kind: str, channels: int, dims: int = 3) -> nn.Module:
    if kind == "instance":
        return _INSTANCE_NORM[dims](channels, affine=True)
    if kind == "batch":
        return _BATCH_NORM[dims](channels)
    raise ValueError(f"unknown norm {kind!r}: use 'instance' or 'batch'")


class BasicBlock(nn.Module):
    """conv-norm-leaky ReLU, twice (MONAI ``UnetBasicBlock``)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str, dropout: float = 0.0, dims: int = 3) -> None:
        super().__init__()
        self.conv1 = ConvUnit(in_ch, out_ch, 3, stride, dropout, dims=dims)
        self.conv2 = ConvUnit(out_ch, out_ch, 3, 1, dropout, dims=dims)
        self.lrelu = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)
        self.norm1 = norm_layer(norm, out_ch, dims)
        self.norm2 = norm_layer(norm, out_ch, dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lrelu(self.norm1(self.conv1(x)))
        return self.lrelu(self.norm2(self.conv2(x)))


class ResidualBlock(BasicBlock):
    """:class:`BasicBlock` with a (1×1×1 conv + norm when the shape changes) shortcut (MONAI ``UnetResBlock``)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str, dropout: float = 0.0, dims: int = 3) -> None:
        super().__init__(in_ch, out_ch, stride, norm, dropout, dims)
        if in_ch != out_ch or stride != 1:
            self.conv3 = ConvUnit(in_ch, out_ch, 1, stride, dropout, dims=dims)
            self.norm3 = norm_layer(norm, out_ch, dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(self.lrelu(self.norm1(self.conv1(x)))))
        residual = self.norm3(self.conv3(x)) if hasattr(self, "conv3") else x
        return self.lrelu(out + residual)


class UpBlock(nn.Module):
    """Transposed conv ×2, concatenate the skip, basic block (MONAI ``UnetUpBlock``)."""

    def __init__(self, in_ch: int, out_ch: int, norm: str, dropout: float = 0.0, dims: int = 3) -> None:
        super().__init__()
        self.transp_conv = ConvUnit(in_ch, out_ch, 2, 2, dropout, transposed=True, dims=dims)
        self.conv_block = BasicBlock(2 * out_ch, out_ch, 1, norm, dropout, dims)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv_block(torch.cat((self.transp_conv(x), skip), dim=1))


class OutBlock(nn.Module):
    """1×1×1 convolution to class logits (MONAI ``UnetOutBlock``)."""

    def __init__(self, in_ch: int, classes: int, dims: int = 3) -> None:
        super().__init__()
        self.conv = ConvUnit(in_ch, classes, 1, 1, dropout=None, bias=True, dims=dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SqueezeExcitation(nn.Module):
    """Channel squeeze-and-excitation, reduction ``r`` (MONAI ``ChannelSELayer``; Hu et al. 2018)."""

    def __init__(self, channels: int, r: int = 4, dims: int = 3) -> None:
        super().__init__()
        hidden = channels // r
        if hidden <= 0:
            raise ValueError(f"squeeze-excitation needs at least {r} channels, got {channels}")
        self.avg_pool = _AVG_POOL[dims](1)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels),
                                nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        return x * self.fc(self.avg_pool(x).view(b, c)).view(b, c, *[1] * (x.ndim - 2))
