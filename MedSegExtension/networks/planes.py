"""Per-plane 2D U-Nets (axial, coronal, sagittal) and their vote (seed 003), left/right aware.

Seed 003 trained one 2D U-Net per plane and took a majority vote; its sagittal network swapped
left and right classes, because a sagittal slice of a nearly symmetric head looks the same on
either side of the midline: from one sagittal slice, left and right cannot be told apart.
Here the vote never asks it to. Of each left/right pair (the card's ``left_right_pairs``) the
sagittal network's vote counts only for the pair as a whole, p_L + p_R, and that share is
split between left and right in the proportion the axial and coronal networks (which see both
sides of the midline) give them. Other classes are voted by all three planes alike. The vote
averages probabilities (a soft majority vote) and returns log-probabilities, which are valid
logits (their softmax is the vote), so every loss and the inference code take them as logits.
The three networks train jointly through the vote; the sagittal one is thereby taught only
the pair sums, never the side.

Axes: arrays are (B, C, k, j, i) in the card's orientation (LPS by default): k runs
inferior-superior (axial slices are normal to it), j anterior-posterior (coronal), i
right-left (sagittal), the axis a left-right flip mirrors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..models.card import NetworkConfig
from .slices import SliceStackUNet

PLANE_AXES = {"axial": 2, "coronal": 3, "sagittal": 4}
EPSILON = 1e-6


def plane_vote(axial: torch.Tensor, coronal: torch.Tensor, sagittal: torch.Tensor,
               lr_permutation: Sequence[int] | None = None) -> torch.Tensor:
    """Vote of three planes' probabilities (B, K, ...): the mean, with the sagittal pairs' sides set by the other two.

    ``lr_permutation[c]`` is the channel a left-right flip turns channel ``c`` into (itself if unpaired).
    """
    if lr_permutation is None:
        return (axial + coronal + sagittal) / 3
    partner = torch.as_tensor(list(lr_permutation), device=axial.device)
    paired = (partner != torch.arange(len(partner), device=axial.device)).view(1, -1, *[1] * (axial.ndim - 2))
    both_sides = axial + coronal
    side_share = (both_sides + EPSILON) / (both_sides + both_sides[:, partner] + 2 * EPSILON)
    pair_total = sagittal + sagittal[:, partner]
    sagittal_resolved = torch.where(paired, pair_total * side_share, sagittal)
    return (axial + coronal + sagittal_resolved) / 3


class PerPlaneUNet(nn.Module):
    """Three :class:`SliceStackUNet` (axial, coronal, sagittal) and :func:`plane_vote`; 3D in, vote log-probabilities out."""

    def __init__(self, in_channels: int, num_classes: int, config: NetworkConfig,
                 lr_permutation: Sequence[int] | None = None) -> None:
        super().__init__()
        if config.deep_supervision:
            raise ValueError("unet2d_planes does not support deep_supervision (the vote has one output)")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.lr_permutation = list(lr_permutation) if lr_permutation is not None else None
        self.planes = nn.ModuleDict({name: SliceStackUNet(in_channels, num_classes, config, axis)
                                     for name, axis in PLANE_AXES.items()})

    @property
    def size_divisor(self) -> int:
        return self.planes["axial"].size_divisor

    def plane_probabilities(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: network(x).float().softmax(1) for name, network in self.planes.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.plane_probabilities(x)
        vote = plane_vote(p["axial"], p["coronal"], p["sagittal"], self.lr_permutation)
        return vote.clamp_min(EPSILON).log()
