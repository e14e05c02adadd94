"""Choosing the compute device, and saying in words what was found and why."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from . import DEVICE_CHOICES


@dataclass(frozen=True)
class DeviceReport:
    cuda_available: bool
    cuda_name: str | None
    mps_available: bool
    reason: str  # one line for the panel: the GPU's name, or "no GPU found" and why

    @property
    def best(self) -> str:
        if self.cuda_available:
            return "cuda"
        if self.mps_available:
            return "mps"
        return "cpu"


def describe_devices() -> DeviceReport:
    """What accelerators this torch build can use, with a human-readable reason."""
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        memory = torch.cuda.get_device_properties(0).total_memory / 2**30
        return DeviceReport(True, name, mps, f"GPU: {name} ({memory:.0f} GiB)")
    if mps:
        return DeviceReport(False, None, True, "GPU: Apple Metal (MPS)")
    if torch.version.cuda is None:
        why = f"this PyTorch ({torch.__version__}) is a CPU-only build"
    else:
        why = f"PyTorch {torch.__version__} was built for CUDA {torch.version.cuda} but no usable NVIDIA GPU/driver was found"
    return DeviceReport(False, None, False, f"no GPU found: {why}; running on the CPU")


def resolve_device(choice: str = "auto") -> torch.device:
    """``auto`` → CUDA, then MPS, then CPU; an explicit choice that is unavailable is an error."""
    choice = (choice or "auto").lower()
    if choice not in DEVICE_CHOICES and not choice.startswith("cuda:"):
        raise InputError(f"unknown device {choice!r} (use one of {', '.join(DEVICE_CHOICES)})")
    report = describe_devices()
    if choice == "auto":
        return torch.device(report.best)
    if choice.startswith("cuda") and not report.cuda_available:
        raise InputError(f"device {choice!r} requested but {report.reason}")
    if choice == "mps" and not report.mps_available:
        raise InputError("device 'mps' requested but Apple Metal is not available")
    return torch.device(choice)
