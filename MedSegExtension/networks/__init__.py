"""Network architectures: the U-Net family (3D, 2.5D, per-plane 2D with a vote; optional recurrent refinement)."""

from .build import ARCHITECTURES, build_network, network_problems
from .unet import UNet3D

__all__ = ["ARCHITECTURES", "UNet3D", "build_network", "network_problems"]
