"""The network a model card describes: the model type (``network.architecture``) and its options."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..models.card import NetworkConfig
from .planes import PerPlaneUNet
from .recurrent import RecurrentRefinement
from .slices import SliceStackUNet
from .unet import UNet3D

ARCHITECTURES = ("unet3d", "unet2.5d", "unet2d_planes")


def network_problems(config: NetworkConfig) -> list[str]:
    """What is wrong with a network config, one phrase each (empty when it can be built)."""
    problems = []
    if config.architecture not in ARCHITECTURES:
        problems.append(f"network.architecture must be one of {', '.join(ARCHITECTURES)}, got {config.architecture!r}")
    if isinstance(config.slices, bool) or not isinstance(config.slices, int) or config.slices < 1 or config.slices % 2 == 0:
        problems.append(f"network.slices must be an odd integer >= 1, got {config.slices!r}")
    passes = config.recurrent_passes
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        problems.append(f"network.recurrent_passes must be an integer >= 1 (1 = off), got {passes!r}")
    if config.architecture == "unet2d_planes" and config.deep_supervision:
        problems.append("network.deep_supervision is not available for unet2d_planes (the vote has one output)")
    return problems


def build_network(in_channels: int, num_classes: int, config: NetworkConfig | None = None,
                  lr_permutation: Sequence[int] | None = None) -> nn.Module:
    """The network of ``config``; ``lr_permutation`` (the card's ``channel_swap_for_lr_flip()``) feeds the plane vote.

    Every model type takes (B, C, k, j, i) images and returns (B, classes, k, j, i) logits.
    """
    config = config or NetworkConfig()
    problems = network_problems(config)
    if problems:
        raise ValueError("; ".join(problems))
    core_channels = in_channels + (num_classes if config.recurrent_passes > 1 else 0)
    if config.architecture == "unet3d":
        core: nn.Module = UNet3D(core_channels, num_classes, config)
    elif config.architecture == "unet2.5d":
        core = SliceStackUNet(core_channels, num_classes, config, axis=2)
    else:
        core = PerPlaneUNet(core_channels, num_classes, config, lr_permutation)
    return RecurrentRefinement(core, num_classes, config.recurrent_passes) if config.recurrent_passes > 1 else core
