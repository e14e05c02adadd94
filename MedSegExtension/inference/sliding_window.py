"""Sliding-window inference with Gaussian blending, mirroring TTA, progress, cancel and OOM fallback.

The window loop and Gaussian importance blending are MONAI's ``sliding_window_inference``;
what this module adds around it is what a GUI and a batch user need: a progress callback and a
cancel flag checked before every window batch, test-time mirroring that swaps left/right
classes when it flips left-right, autocast on GPUs, and the out-of-memory fallback (smaller
window batch, then the CPU).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from ..progress import CancelToken, ProgressCallback, no_progress

LR_AXIS = -1  # with the card's "LPS" orientation, the last array axis runs right → left


@dataclass
class WindowSettings:
    window: tuple[int, int, int]  # (k, j, i) voxels
    overlap: float = 0.5
    batch_size: int = 1
    sigma_scale: float = 0.125
    # Mirroring TTA: each entry is a tuple of array axes (0=k, 1=j, 2=i) to flip together.
    mirror_axes: Sequence[tuple[int, ...]] = field(default_factory=tuple)
    lr_channel_permutation: Sequence[int] | None = None  # channel order after a left-right flip


def count_windows(shape: Sequence[int], window: Sequence[int], overlap: float) -> int:
    """How many windows MONAI's scan visits (the image is padded up to the window first)."""
    total = 1
    for size, roi in zip(shape, window, strict=False):
        size = max(size, roi)
        interval = roi if roi == size else max(int(roi * (1 - overlap)), 1)
        total *= math.ceil((size - roi) / interval) + 1 if size > roi else 1
    return total


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def _mirrored_probabilities(
    network: torch.nn.Module, batch: torch.Tensor, settings: WindowSettings, device: torch.device, amp: bool
) -> torch.Tensor:
    """Softmax probabilities of ``batch``, averaged over the identity and each mirror."""
    variants: list[tuple[int, ...]] = [(), *settings.mirror_axes]
    total = None
    for axes in variants:
        dims = [2 + a for a in axes]
        x = torch.flip(batch, dims) if dims else batch
        with _autocast(device, amp):
            logits = network(x)
        probabilities = torch.softmax(logits.float(), dim=1)
        if dims:
            probabilities = torch.flip(probabilities, dims)
            if 2 in axes and settings.lr_channel_permutation is not None:
                probabilities = probabilities[:, list(settings.lr_channel_permutation)]
        total = probabilities if total is None else total + probabilities
    return total / len(variants)


def sliding_window_probabilities(
    network: torch.nn.Module,
    image: np.ndarray,
    settings: WindowSettings,
    device: torch.device,
    *,
    amp: bool = True,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> np.ndarray:
    """Class probabilities (classes, k, j, i) for a (C, k, j, i) image, on one device (no fallback)."""
    cancel = cancel or CancelToken()
    windows = count_windows(image.shape[1:], settings.window, settings.overlap)
    batches = max(1, math.ceil(windows / settings.batch_size))
    done = 0

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        nonlocal done
        cancel.raise_if_cancelled()
        output = _mirrored_probabilities(network, batch, settings, device, amp)
        done += 1
        progress(min(done / batches, 1.0), f"window batch {min(done, batches)}/{batches}")
        return output

    inputs = torch.from_numpy(np.ascontiguousarray(image))[None].to(device)
    network = network.to(device).eval()
    with torch.inference_mode():
        output = sliding_window_inference(
            inputs,
            roi_size=tuple(settings.window),
            sw_batch_size=settings.batch_size,
            predictor=predictor,
            overlap=settings.overlap,
            mode="gaussian",
            sigma_scale=settings.sigma_scale,
            padding_mode="constant",
            cval=float(image.min()),
            sw_device=device,
            device=device,
        )
    return output[0].float().cpu().numpy()


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def probabilities_with_fallback(
    network: torch.nn.Module,
    image: np.ndarray,
    settings: WindowSettings,
    device: torch.device,
    *,
    amp: bool = True,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    log: Callable[[str], None] = print,
) -> tuple[np.ndarray, torch.device]:
    """Like :func:`sliding_window_probabilities`; on out-of-memory halve the window batch, then use the CPU.

    Returns the probabilities and the device that produced them.
    """
    batch_size = settings.batch_size
    while True:
        attempt = WindowSettings(**{**settings.__dict__, "batch_size": batch_size})
        try:
            return sliding_window_probabilities(network, image, attempt, device, amp=amp, progress=progress, cancel=cancel), device
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if batch_size > 1:
                log(f"out of memory on {device} with window batch {batch_size}; retrying with {batch_size // 2}")
                batch_size //= 2
            elif device.type != "cpu":
                log(f"out of memory on {device} even with window batch 1; falling back to the CPU")
                device = torch.device("cpu")
                network = network.to(device)
            else:
                raise
