"""How to cover a volume with the least work: one pass if it fits the device's memory, else the largest windows.

The activation estimate comes from the network config, not from trial and error: in a forward
pass without autograd, each U-Net level holds its skip tensor while a few working tensors of
the same size (convolution output, normalization, concatenation in the decoder) are alive, so
the peak is about ``Σ_levels channels × voxels / 8^level × bytes × LIVE_TENSORS`` (``4^level``
for the 2D slice networks of ``unet2.5d`` and ``unet2d_planes``) plus the logits and probabilities. ``SAFETY`` covers allocator slack and convolution workspaces; a
prediction that still runs out of memory falls back to windows (see ``sliding_window``).

Field of view and normalization (measured, not assumed: ``benchmarks/inference_speed.py``): in
eval mode batch norm uses fixed statistics, so a batch-normalized network computes the same
thing on any field of view and ``auto`` uses one pass (or the largest windows that fit).
Instance norm normalizes each feature map by its own mean and variance, which change with the
field of view: on Colin27 the bundled instance-norm model loses 0.10 mean Dice against AAL in
one whole-head pass (brain voxels agree on 57 %), and even windows at overlap 0.25 instead of 0.5
lose 0.05. So for instance-normalized networks ``auto`` keeps the card's window and overlap
(a crop smaller than the window is padded up to it, as in training) and ``whole`` is an explicit choice.

Available memory: on the CPU, ``MemAvailable`` from ``/proc/meminfo`` (else the physical
memory), on CUDA the free memory ``torch.cuda.mem_get_info`` reports.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import replace

import torch

from ..models.card import ModelCard
from .sliding_window import WindowSettings

LIVE_TENSORS = 4  # feature maps alive at once per level (skip, conv out, norm out, concat)
SAFETY = 2.0
MEMORY_SHARE = 0.5  # of what is available: other programs (and the restore) need the rest


def available_memory(device: torch.device) -> int:
    """Bytes this process may use for activations on ``device`` (before :data:`MEMORY_SHARE`)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def activation_bytes(card: ModelCard, shape: Sequence[int], batch: int = 1, bytes_per_value: int = 4) -> int:
    """Estimated peak memory of one forward pass over ``batch`` arrays of spatial ``shape``."""
    voxels = math.prod(shape)
    network = card.network
    # 2D slice networks (unet2.5d, unet2d_planes) downsample in-plane only: 4× fewer voxels per level, not 8×.
    shrink = 8 if network.architecture == "unet3d" else 4
    features = sum(width / shrink**level for level, width in enumerate(network.channels)) * LIVE_TENSORS
    outputs = 3 * card.num_classes * 4 / bytes_per_value  # logits, probabilities (float32), their sum
    if network.architecture == "unet2d_planes":  # each plane's probabilities wait for the vote
        outputs += 3 * card.num_classes * 4 / bytes_per_value
    inputs = card.input_channels * (network.slices if network.architecture != "unet3d" else 1)  # slice stacks
    inputs += card.num_classes if network.recurrent_passes > 1 else 0  # the fed-back prediction
    return int(SAFETY * batch * voxels * bytes_per_value * (features + outputs + inputs))


def size_divisor(card: ModelCard) -> int:
    return 2 ** (len(card.network.channels) - 1)


def plan_passes(
    card: ModelCard,
    shape: Sequence[int],
    device: torch.device,
    base: WindowSettings,
    *,
    mode: str = "auto",
    amp: bool = True,
    memory: int | None = None,
) -> tuple[WindowSettings, str]:
    """Window settings for an image of spatial ``shape`` (k, j, i), and one line saying what was chosen.

    ``mode``: ``auto`` (batch norm: one pass if it fits, else the largest windows that fit;
    instance norm: the card's windows), ``whole`` (one pass, windows only after an
    out-of-memory error), ``windows`` (the card's window and the caller's overlap and batch).
    """
    if mode not in ("auto", "whole", "windows"):
        raise ValueError(f"unknown inference mode {mode!r}")
    divisor = size_divisor(card)
    variants = 1 + len(base.mirror_axes)
    bytes_per_value = 2 if device.type == "cuda" and amp else 4  # bf16/fp16 autocast halves activations
    budget = MEMORY_SHARE * (available_memory(device) if memory is None else memory)
    padded = [math.ceil(s / divisor) * divisor for s in shape]
    whole_cost = activation_bytes(card, padded, variants, bytes_per_value)
    # An instance-norm network keeps its training field of view even for a crop smaller than one
    # window: padded up to the window (one window pass), not to the size divisor.
    if mode == "windows" or (mode == "auto" and card.network.norm == "instance"):
        why = " (instance norm: statistics depend on the field of view)" if mode == "auto" else ""
        return base, f"windows of {_fmt(base.window)} voxels, overlap {base.overlap:g}{why}"
    if mode == "whole" or whole_cost <= budget:
        settings = replace(base, whole_volume=True, size_divisor=divisor, batch_size=1)
        return settings, f"whole volume in one pass ({_fmt(padded)} voxels, ~{whole_cost / 2**30:.1f} GiB estimated)"
    window = list(base.window)
    while True:  # grow the window (cube-ish, multiples of the divisor) while one batch of it fits
        grown = [min(max(w + divisor * 4, w), p) for w, p in zip(window, padded, strict=True)]
        if grown == window or activation_bytes(card, grown, variants, bytes_per_value) > budget:
            break
        window = grown
    # Keep the overlapping border as wide in voxels as the card's window with the caller's overlap.
    border = min(base.window) * base.overlap
    overlap = min(max(border / min(window), 0.125), base.overlap)
    settings = replace(base, window=tuple(window), overlap=overlap, batch_size=1 if window != list(base.window)
                       else base.batch_size)
    return settings, (f"windows of {_fmt(window)} voxels, overlap {overlap:.2f} (the whole volume needs "
                      f"~{whole_cost / 2**30:.1f} GiB, {budget / 2**30:.1f} GiB available)")


def _fmt(shape: Sequence[int]) -> str:
    return "×".join(str(int(s)) for s in shape)
