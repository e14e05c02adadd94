"""Network architectures: the configurable 3D U-Net family."""

from .unet import UNet3D, build_network

__all__ = ["UNet3D", "build_network"]
