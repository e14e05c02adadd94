"""Memory estimates made before anything is allocated, and the limit they are checked against.

A header claiming 100000³ voxels, a transform that scales by 0.1 or a model card asking for
0.01 mm voxels would otherwise make numpy or ITK allocate terabytes and die with a
traceback (or the kernel's OOM killer). Every estimate here is computed from sizes alone.

The limit is ``MEDSEG_MAX_MEMORY_GB`` (environment) or :func:`set_memory_limit` (the
``--max-memory`` option); by default half of the physical memory.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from .errors import InputError

MEMORY_ENV = "MEDSEG_MAX_MEMORY_GB"
DEFAULT_RAM_FRACTION = 0.5
FALLBACK_LIMIT_BYTES = 8 * 1024**3  # when the physical memory cannot be read
GB = 1024**3
# Float32 copies of one working-grid voxel held at once by prediction: the resampled and the
# normalized input per channel, and the probabilities twice (network output, then on the input grid).
_FLOATS_PER_CHANNEL = 2
_FLOATS_PER_CLASS = 2

_override_bytes: int | None = None


def physical_memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _parse_gb(text: str, source: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{source}={text!r}: not a number of gigabytes") from None
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{source}={text!r}: must be a positive number of gigabytes")
    return int(value * GB)


def set_memory_limit(gigabytes: float | str | None) -> None:
    """Override the limit for this process (``None``: back to the environment or the default)."""
    global _override_bytes
    _override_bytes = None if gigabytes is None else _parse_gb(str(gigabytes), "--max-memory")


def memory_limit_bytes() -> int:
    if _override_bytes is not None:
        return _override_bytes
    text = os.environ.get(MEMORY_ENV, "").strip()
    if text:
        return _parse_gb(text, MEMORY_ENV)
    physical = physical_memory_bytes()
    return int(physical * DEFAULT_RAM_FRACTION) if physical else FALLBACK_LIMIT_BYTES


def check_memory(needed_bytes: float, what: str, source: str) -> None:
    """Raise :class:`InputError` when ``what`` would need more than the limit."""
    limit = memory_limit_bytes()
    if needed_bytes > limit:
        raise InputError(
            f"{source}: {what} would need {needed_bytes / GB:.3g} GB of memory, above the limit of "
            f"{limit / GB:.3g} GB (set {MEMORY_ENV} or --max-memory to change it)"
        )


def voxel_count(size: Sequence[int]) -> int:
    return math.prod(int(n) for n in size)


def describe_size(size: Sequence[int]) -> str:
    return "×".join(str(int(n)) for n in size)


def check_image_memory(size: Sequence[int], bytes_per_component: int, components: int, source: str) -> int:
    """The bytes a volume of this header needs (voxels × bytes per component × components), checked."""
    needed = voxel_count(size) * int(bytes_per_component) * int(components)
    check_memory(needed, f"a {describe_size(size)} volume", source)
    return needed


def resampled_size(
    size: Sequence[float], spacing: Sequence[float], target_spacing: Sequence[float]
) -> tuple[int, ...]:
    """The size of the grid covering the same extent at ``target_spacing`` (as resampling makes it)."""
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(size, spacing, target_spacing, strict=True))


def check_working_grid(
    size: Sequence[int],
    channels: int,
    classes: int,
    source: str,
    *,
    minimum: Sequence[int] | None = None,
    window: Sequence[int] | None = None,
    what: str = "the working grid",
) -> None:
    """Refuse a working grid too large for memory, or smaller than ``minimum`` voxels in an axis.

    The sliding window pads the grid up to ``window``, so a card's huge window counts too.
    """
    padded = size if window is None else tuple(max(int(n), int(w)) for n, w in zip(size, window, strict=True))
    floats = channels * _FLOATS_PER_CHANNEL + classes * _FLOATS_PER_CLASS
    check_memory(voxel_count(padded) * 4.0 * floats, f"{what} of {describe_size(padded)} voxels", source)
    if minimum is not None and any(n < m for n, m in zip(size, minimum, strict=True)):
        raise InputError(
            f"{source}: {what} is only {describe_size(size)} voxels, below the minimum "
            f"{describe_size(minimum)}; the geometry (spacing or transform) is degenerate"
        )
