"""Network passes over a volume: one whole-volume pass or Gaussian-blended windows, mirroring TTA, OOM fallback.

Conventions a caller must know:

- Arrays are (C, k, j, i); with the card's "LPS" orientation the last axis runs right → left,
  so a mirror over axis 2 is a left-right flip, and its probabilities get the left/right class
  permutation (``lr_channel_permutation``) before averaging.
- TTA mirrors are one batch: the identity and every mirror go through the network together,
  which costs less than one pass each on every device.
- Windowed mode follows MONAI's ``sliding_window_inference`` scan (the image is padded
  symmetrically up to the window with its minimum, windows step ``window × (1 − overlap)``,
  the last one is flush with the end) and its Gaussian importance blending (σ = 0.125 ×
  window); it is written here so that predicting never imports MONAI (≈ 2 s per process).
- Out of memory: a whole-volume pass falls back to windows, a window batch is halved, and
  finally a GPU run moves to the CPU.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

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
    whole_volume: bool = False  # one pass over the whole image, padded to a multiple of size_divisor
    size_divisor: int = 1


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start of each window along one axis: step ``window × (1 − overlap)``, the last flush with the end."""
    if size <= window:
        return [0]
    step = max(int(window * (1 - overlap)), 1)
    count = math.ceil((size - window) / step) + 1
    return [min(n * step, size - window) for n in range(count)]


def count_windows(shape: Sequence[int], window: Sequence[int], overlap: float) -> int:
    """How many windows the scan visits (the image is padded up to the window first)."""
    return math.prod(len(window_starts(max(s, w), w, overlap)) for s, w in zip(shape, window, strict=False))


def gaussian_importance(window: Sequence[int], sigma_scale: float) -> torch.Tensor:
    """Separable Gaussian weights (1 at the exact centre), floored at their minimum or 1e-3, as MONAI's."""
    weights = None
    for size in window:
        centre, sigma = (size - 1) / 2, max(size * sigma_scale, 1e-3)
        axis = torch.exp(-0.5 * ((torch.arange(size, dtype=torch.float32) - centre) / sigma) ** 2)
        weights = axis if weights is None else weights[..., None] * axis
    return weights.clamp_min(max(float(weights.min()), 1e-3))


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def _mirrored_probabilities(
    network: torch.nn.Module, batch: torch.Tensor, settings: WindowSettings, device: torch.device, amp: bool
) -> torch.Tensor:
    """Softmax probabilities of ``batch``, averaged over the identity and each mirror, in one network call."""
    variants: list[tuple[int, ...]] = [(), *settings.mirror_axes]
    inputs = torch.cat([torch.flip(batch, [2 + a for a in axes]) if axes else batch for axes in variants])
    with _autocast(device, amp):
        logits = network(inputs)
    probabilities = torch.softmax(logits.float(), dim=1)
    del logits
    n = batch.shape[0]
    total = probabilities[:n].clone()
    for index, axes in enumerate(variants[1:], start=1):
        part = torch.flip(probabilities[index * n:(index + 1) * n], [2 + a for a in axes])
        if 2 in axes and settings.lr_channel_permutation is not None:
            part = part[:, list(settings.lr_channel_permutation)]
        total += part
    return total / len(variants)


def _pad(image: torch.Tensor, target: Sequence[int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Pad (1, C, k, j, i) symmetrically with its minimum up to ``target``; the slices that undo it."""
    pads, keep = [], []
    for size, wanted in zip(image.shape[2:], target, strict=True):
        extra = max(wanted - size, 0)
        before = extra // 2
        pads.append((before, extra - before))
        keep.append(slice(before, before + size))
    if not any(sum(p) for p in pads):
        return image, tuple(keep)
    flat = [value for pair in reversed(pads) for value in pair]
    return torch.nn.functional.pad(image, flat, value=float(image.min())), tuple(keep)


def _whole_volume(network, inputs, settings, device, amp, progress, cancel) -> torch.Tensor:
    divisor = max(settings.size_divisor, 1)
    padded, keep = _pad(inputs, [math.ceil(s / divisor) * divisor for s in inputs.shape[2:]])
    cancel.raise_if_cancelled()
    probabilities = _mirrored_probabilities(network, padded, settings, device, amp)[0]
    progress(1.0, "whole volume in one pass")
    return probabilities[(slice(None), *keep)]


def _windows(network, inputs, settings, device, amp, progress, cancel) -> torch.Tensor:
    window = tuple(settings.window)
    padded, keep = _pad(inputs, [max(s, w) for s, w in zip(inputs.shape[2:], window, strict=True)])
    shape = padded.shape[2:]
    corners = list(itertools.product(*(window_starts(s, w, settings.overlap) for s, w in zip(shape, window, strict=True))))
    weights = gaussian_importance(window, settings.sigma_scale).to(device)
    total = weight_sum = None
    batches = math.ceil(len(corners) / settings.batch_size)
    for number in range(batches):
        cancel.raise_if_cancelled()
        chunk = corners[number * settings.batch_size:(number + 1) * settings.batch_size]
        boxes = [tuple(slice(c, c + w) for c, w in zip(corner, window, strict=True)) for corner in chunk]
        batch = torch.cat([padded[(slice(None), slice(None), *box)] for box in boxes])
        output = _mirrored_probabilities(network, batch, settings, device, amp)
        if total is None:
            total = torch.zeros((output.shape[1], *shape), dtype=torch.float32, device=device)
            weight_sum = torch.zeros(shape, dtype=torch.float32, device=device)
        for box, probabilities in zip(boxes, output, strict=True):
            total[(slice(None), *box)] += probabilities * weights
            weight_sum[box] += weights
        progress((number + 1) / batches, f"window batch {number + 1}/{batches}")
    total /= weight_sum
    return total[(slice(None), *keep)]


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
    inputs = torch.from_numpy(np.ascontiguousarray(image))[None].to(device)
    network = network.to(device).eval()
    run = _whole_volume if settings.whole_volume else _windows
    with torch.inference_mode():
        output = run(network, inputs, settings, device, amp, progress, cancel)
    return output.float().cpu().numpy()


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower()
    )


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
    """Like :func:`sliding_window_probabilities`; on out-of-memory use windows, halve their batch, then the CPU.

    Returns the probabilities and the device that produced them.
    """
    attempt = settings
    while True:
        try:
            return sliding_window_probabilities(network, image, attempt, device, amp=amp, progress=progress,
                                                cancel=cancel), device
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if attempt.whole_volume:
                log(f"out of memory on {device} for the whole volume in one pass; using windows of "
                    f"{'×'.join(map(str, attempt.window))} voxels")
                attempt = replace(attempt, whole_volume=False)
            elif attempt.batch_size > 1:
                log(f"out of memory on {device} with window batch {attempt.batch_size}; "
                    f"retrying with {attempt.batch_size // 2}")
                attempt = replace(attempt, batch_size=attempt.batch_size // 2)
            elif device.type != "cpu":
                log(f"out of memory on {device} even with window batch 1; falling back to the CPU")
                device = torch.device("cpu")
                network = network.to(device)
            else:
                raise
