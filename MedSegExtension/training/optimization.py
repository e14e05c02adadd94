"""Optimizer, learning-rate schedule and mixed precision of the training loop."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable

import torch

from ..errors import InputError

OPTIMIZERS = ("adamw", "sgd")


def lr_factor(schedule: str, step: int, steps: int, warmup: int = 0) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based): linear warm-up, then poly or cosine decay."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(max(step - warmup, 0) / max(steps - warmup, 1), 1.0)
    if schedule == "poly":
        return (1.0 - progress) ** 0.9
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def build_optimizer(name: str, parameters: Iterable[torch.nn.Parameter], lr: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, or SGD with Nesterov momentum 0.99 (nnU-Net's choice)."""
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=0.99, nesterov=True, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    raise InputError(f"unknown optimizer {name!r} (use {' or '.join(OPTIMIZERS)})")


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: str, steps: int,
                    warmup: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler following :func:`lr_factor` (its state dict holds no function)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(schedule, s, steps, warmup))


def use_amp(choice: bool | str, device: torch.device) -> bool:
    """bf16 autocast: on CUDA only (``auto``), never on the CPU or MPS."""
    if device.type != "cuda":
        return False
    if choice == "auto":
        return bool(torch.cuda.is_bf16_supported())
    return bool(choice)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cuda", dtype=torch.bfloat16) if enabled and device.type == "cuda" else contextlib.nullcontext()
