"""Network probabilities back onto the input grid, slab by slab, so memory grows with voxels, not voxels × classes.

Restoring all C class probabilities to a 512×512×300 CT in float32 takes C × 300 MB (3.5 GB for
11 classes) before any label is known. Here the output grid is cut into slabs along its last
array axis (k); each slab gets the probabilities resampled onto it (linear, in physical space:
this undoes reorientation and respacing in one step, as
``preprocessing.restore_probabilities`` does for the whole grid), and its labels,
uncertainty and (when asked) probabilities are written into the outputs before the next
slab. Only the labels (1–2 bytes a voxel), the uncertainty (4 bytes) and the asked-for
probabilities (4·C bytes) are ever full size.

When the input grid's axes are the model grid's axes (permuted or flipped: every scanner's
ordinary output, not an oblique resample), trilinear interpolation is separable: each slab is
interpolated along k, then j, then i with torch gathers, which is what ITK's linear resampler
computes (neighbours clamped inside the half-voxel border, nothing beyond it) at a fraction of
its cost. Oblique grids go through ``sitk.Resample`` slab by slab.

Same result as the whole-grid restore: the source is the crop plus a one-voxel rim of
background inside the model grid, which is all that linear interpolation reads near the crop;
farther out the old restore saw pure background, and here "no source" is called background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from ..io.volumes import same_geometry
from ..preprocessing import PreparedCase

SLAB_BYTES = 64 * 2**20  # float32 probabilities of one slab


@dataclass
class RestoredArrays:
    labels: np.ndarray  # (k, j, i) label values on the input grid
    uncertainty: np.ndarray | None  # (k, j, i) float32 normalized entropy
    probabilities: np.ndarray | None  # (k, j, i, C) float32


def entropy_map(probabilities: np.ndarray, axis: int = 0) -> np.ndarray:
    """Per-voxel entropy of the class distribution, divided by log(C) so it lies in [0, 1]."""
    p = np.clip(probabilities, 1e-8, 1.0)
    return (-(p * np.log(p)).sum(axis=axis) / np.log(p.shape[axis])).astype(np.float32)


def _source(probabilities: np.ndarray, case: PreparedCase) -> tuple[sitk.Image, np.ndarray]:
    """The cropped probabilities with a one-voxel background rim (inside the model grid): an image and (C, k, j, i)."""
    full_shape = sitk.GetArrayViewFromImage(case.model_grid).shape
    grown = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(case.crop, full_shape, strict=True))
    shape = tuple(g.stop - g.start for g in grown)
    source = np.zeros((*shape, probabilities.shape[0]), dtype=np.float32)
    source[..., 0] = 1.0
    inner = tuple(slice(s.start - g.start, s.stop - g.start) for s, g in zip(case.crop, grown, strict=True))
    source[inner] = np.moveaxis(probabilities, 0, -1)
    image = sitk.GetImageFromArray(source, isVector=True)
    image.SetSpacing(case.model_grid.GetSpacing())
    image.SetDirection(case.model_grid.GetDirection())
    image.SetOrigin(case.model_grid.TransformIndexToPhysicalPoint([g.start for g in reversed(grown)]))
    return image, np.ascontiguousarray(np.moveaxis(source, -1, 0))


def _slab_reference(original: sitk.Image, start: int, stop: int) -> sitk.Image:
    size = list(original.GetSize())
    reference = sitk.Image([size[0], size[1], stop - start], sitk.sitkUInt8)
    reference.SetSpacing(original.GetSpacing())
    reference.SetDirection(original.GetDirection())
    reference.SetOrigin(original.TransformIndexToPhysicalPoint([0, 0, start]))
    return reference


def _axis_aligned_plan(source: sitk.Image, original: sitk.Image) -> list[tuple[int, float, float]] | None:
    """For each array axis of ``original`` (k, j, i): (source array axis, index at 0, index step), or None if oblique."""
    plan = []
    origin = original.GetOrigin()
    start = source.TransformPhysicalPointToContinuousIndex(origin)
    for axis in range(3):  # image axis order (i, j, k)
        index = [0, 0, 0]
        index[axis] = 1
        step = np.array(source.TransformPhysicalPointToContinuousIndex(original.TransformIndexToPhysicalPoint(index))) \
            - np.array(start)
        moving = np.flatnonzero(np.abs(step) > 1e-9)
        if len(moving) != 1:
            return None
        plan.append((2 - int(moving[0]), float(start[moving[0]]), float(step[moving[0]])))
    if sorted(p[0] for p in plan) != [0, 1, 2]:
        return None
    return plan[::-1]  # array order (k, j, i)


def _lerp_axis(values: torch.Tensor, dim: int, size: int, first: float, step: float, offset: int = 0):
    """Linear interpolation along ``dim`` at source indices ``first + step × n`` (n = offset … offset+size−1).

    Returns the interpolated tensor and a mask of positions inside the source buffer (ITK's rule:
    within half a voxel of the first and last centres).
    """
    count = values.shape[dim]
    t = first + step * torch.arange(offset, offset + size, dtype=torch.float64)
    inside = (t >= -0.5) & (t <= count - 0.5)
    t = t.clamp(0, count - 1)
    low = t.floor().long().clamp_max(count - 1)
    high = (low + 1).clamp_max(count - 1)
    weight = (t - low).float().view([-1 if d == dim else 1 for d in range(values.dim())])
    return torch.lerp(values.index_select(dim, low), values.index_select(dim, high), weight), inside


def _separable_slabs(source_array: np.ndarray, plan, shape, slab: int):
    """(start, stop, probabilities (C, slab, j, i) with background where outside) for each slab."""
    order = [p[0] for p in plan]  # the source array axis behind each output axis, (C, k, j, i) without C
    values = torch.from_numpy(source_array).permute(0, *(1 + a for a in order))  # (C, ...) in output axis order
    along_j, inside_j = _lerp_axis(values, 2, shape[1], plan[1][1], plan[1][2])
    for start in range(0, shape[0], slab):
        stop = min(start + slab, shape[0])
        block, inside_k = _lerp_axis(along_j, 1, stop - start, plan[0][1], plan[0][2], offset=start)
        block, inside_i = _lerp_axis(block, 3, shape[2], plan[2][1], plan[2][2])
        outside = ~(inside_k.view(-1, 1, 1) & inside_j.view(1, -1, 1) & inside_i.view(1, 1, -1))
        if outside.any():
            block[:, outside] = 0.0
            block[0][outside] = 1.0
        yield start, stop, block


def _axis_samples(count: int, size: int, first: float, step: float):
    """Per output index along one axis: low and high source neighbours, weight of high, inside the buffer."""
    t = first + step * torch.arange(size, dtype=torch.float64)
    inside = (t >= -0.5) & (t <= count - 0.5)
    t = t.clamp(0, count - 1)
    low = t.floor().long().clamp_max(count - 1)
    return low, (low + 1).clamp_max(count - 1), (t - low).float(), inside


def _labels_by_cells(source_array: np.ndarray, plan, shape, slab: int, label_values: np.ndarray) -> np.ndarray:
    """Labels alone, exactly as argmax of the trilinear interpolation, interpolating only where it can matter.

    Where all eight source voxels around an output voxel have the same argmax, every convex
    combination of them has it too, so that voxel's label is known without interpolating. Only
    voxels in cells that straddle a class boundary are interpolated (all classes, eight corners).
    """
    order = [p[0] for p in plan]
    values = torch.from_numpy(source_array).permute(0, *(1 + a for a in order)).contiguous()  # output axis order
    coarse = torch.argmax(values, dim=0)
    padded = torch.nn.functional.pad(coarse[None, None].float(), (0, 1, 0, 1, 0, 1), mode="replicate")[0, 0].long()
    a, b, d = coarse.shape
    corners = [padded[i:i + a, j:j + b, k:k + d] for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    uniform = torch.stack(corners).eq(coarse).all(dim=0)
    cells = torch.where(uniform, coarse, torch.full_like(coarse, -1)).to(torch.int16)
    axes = [_axis_samples(values.shape[1 + n], shape[n], plan[n][1], plan[n][2]) for n in range(3)]
    (low_k, high_k, w_k, in_k), (low_j, high_j, w_j, in_j), (low_i, high_i, w_i, in_i) = axes
    labels = np.zeros(shape, dtype=label_values.dtype)
    lookup = torch.from_numpy(label_values.astype(np.int64))
    for start in range(0, shape[0], slab):
        stop = min(start + slab, shape[0])
        channel = cells.index_select(0, low_k[start:stop]).index_select(1, low_j).index_select(2, low_i).long()
        mixed = torch.nonzero(channel < 0, as_tuple=True)
        if mixed[0].numel():
            kk = mixed[0] + start
            picks = [(low_k[kk], high_k[kk], w_k[kk]), (low_j[mixed[1]], high_j[mixed[1]], w_j[mixed[1]]),
                     (low_i[mixed[2]], high_i[mixed[2]], w_i[mixed[2]])]
            total = None
            for corner in range(8):
                index, weight = [], None
                for n, (low, high, w) in enumerate(picks):
                    use_high = (corner >> (2 - n)) & 1
                    index.append(high if use_high else low)
                    factor = w if use_high else 1 - w
                    weight = factor if weight is None else weight * factor
                    # (products of per-axis weights: trilinear interpolation)
                term = values[:, index[0], index[1], index[2]] * weight
                total = term if total is None else total + term
            channel[mixed] = torch.argmax(total, dim=0)
        outside = ~(in_k[start:stop].view(-1, 1, 1) & in_j.view(1, -1, 1) & in_i.view(1, 1, -1))
        channel[outside] = 0
        labels[start:stop] = lookup[channel].numpy()
    return labels


def _itk_slabs(source: sitk.Image, original: sitk.Image, shape, slab: int):
    for start in range(0, shape[0], slab):
        stop = min(start + slab, shape[0])
        resampled = sitk.Resample(source, _slab_reference(original, start, stop), sitk.Transform(),
                                  sitk.sitkLinear, 0.0, source.GetPixelID())
        block = np.moveaxis(sitk.GetArrayFromImage(resampled), -1, 0)  # (C, slab, j, i)
        del resampled
        block[0][block.sum(axis=0) <= 1e-6] = 1.0  # beyond the source: background
        yield start, stop, torch.from_numpy(block)


def restore_streaming(
    probabilities: np.ndarray,
    case: PreparedCase,
    label_values: np.ndarray,
    *,
    uncertainty: bool = False,
    keep_probabilities: bool = False,
    slab_bytes: int = SLAB_BYTES,
    separable: bool = True,
) -> RestoredArrays:
    """Labels (and uncertainty, probabilities) on ``case.original``'s grid from cropped model-grid probabilities.

    ``label_values[c]`` is the label written where channel ``c`` has the highest probability.
    ``separable=False`` forces ITK's resampler even for axis-aligned grids (for comparison).
    """
    classes = probabilities.shape[0]
    shape = sitk.GetArrayViewFromImage(case.original).shape  # (k, j, i)
    labels = np.zeros(shape, dtype=label_values.dtype)
    entropy = np.zeros(shape, np.float32) if uncertainty else None
    kept = np.zeros((*shape, classes), np.float32) if keep_probabilities else None
    if same_geometry(case.model_grid, case.original, tolerance=1e-6):
        block = probabilities
        labels[case.crop] = label_values[np.argmax(block, axis=0)]
        if entropy is not None:
            entropy[case.crop] = entropy_map(block)
        if kept is not None:
            kept[..., 0] = 1.0
            kept[case.crop] = np.moveaxis(block, 0, -1)
        return RestoredArrays(labels, entropy, kept)
    source, source_array = _source(probabilities, case)
    slab = max(1, int(slab_bytes // max(1, shape[1] * shape[2] * classes * 4)))
    plan = _axis_aligned_plan(source, case.original) if separable else None
    if plan is not None and entropy is None and kept is None:
        return RestoredArrays(_labels_by_cells(source_array, plan, shape, slab, label_values), None, None)
    slabs = _itk_slabs(source, case.original, shape, slab) if plan is None else \
        _separable_slabs(source_array, plan, shape, slab)
    for start, stop, block in slabs:
        labels[start:stop] = label_values[torch.argmax(block, dim=0).numpy()]
        if entropy is not None:
            entropy[start:stop] = entropy_map(block.numpy())
        if kept is not None:
            kept[start:stop] = np.moveaxis(block.numpy(), 0, -1)
    return RestoredArrays(labels, entropy, kept)
