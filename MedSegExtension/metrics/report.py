"""A self-contained HTML evaluation report: tables, charts and slice images as base64 PNGs.

One page, no external files: the per-class table, a per-class Dice / HD95 bar chart, the
confusion matrix as a heat map (rows: reference, normalised per row), and for each axis
(axial, coronal, sagittal) several slices showing image, prediction and reference side by
side with label outlines. Slices are shown in the LPS frame the radiological way (patient
right on the left of axial and coronal views, anterior up in axial views, superior up in
coronal and sagittal ones), with square display pixels whatever the voxel spacing.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from ..io.atomic import atomic_output  # noqa: E402
from ..io.volumes import read_image, squeeze_to_3d  # noqa: E402
from .batch import BatchResult  # noqa: E402
from .evaluation import EvaluationResult  # noqa: E402
from .formats import format_number  # noqa: E402
from .pairs import LabelPair, read_label_pair  # noqa: E402

REPORT_FILE = "report.html"
AXES = (("axial", 0), ("coronal", 1), ("sagittal", 2))  # array axis in the LPS-oriented (z, y, x) array
_TABLE = (
    ("Dice", "dice", 4), ("IoU", "iou", 4), ("Precision", "precision", 4), ("Recall", "recall", 4),
    ("Pred mL", "volume_pred_ml", 2), ("Ref mL", "volume_ref_ml", 2), ("ΔVol mL", "volume_diff_ml", 2),
    ("ΔVol %", "volume_diff_percent", 1), ("Miscl. (FP+FN)/N", "misclassification_rate", 5),
    ("FP/FN", "fp_fn_ratio", 2), ("HD95 mm", "hd95_mm", 2), ("ASSD mm", "assd_mm", 2),
)
_STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#eee} td.name{text-align:left} tr.mean td{font-weight:bold;background:#f6f6f6}
.swatch{display:inline-block;width:0.9em;height:0.9em;border:1px solid #555;margin-right:4px;vertical-align:middle}
.warn{color:#8a4b00} img{max-width:100%;border:1px solid #ddd;margin:0.3em 0}
"""


# --------------------------------------------------------------------------- colours


def label_colors(values: Sequence[int], colors: Mapping[int, Sequence[int]] | None = None) -> dict[int, tuple[float, ...]]:
    """RGB (0..1) per label value: the given colours, else distinct colours in class order
    (matplotlib's tab10, then Set3 and Dark2: 30 before they repeat)."""
    palette = [c for name in ("tab10", "Set3", "Dark2") for c in plt.get_cmap(name).colors]
    result: dict[int, tuple[float, ...]] = {}
    foreground = [v for v in values if v != 0]
    for index, value in enumerate(foreground):
        if colors and value in colors:
            result[value] = tuple(c / 255.0 for c in colors[value][:3])
        else:
            result[value] = tuple(palette[index % len(palette)][:3])
    return result


def _hex(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{int(round(255 * c)):02x}" for c in rgb[:3])


# --------------------------------------------------------------------------- figures


def _png(figure: plt.Figure, dpi: int = 90) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _tick(value: int, name: str, width: int = 18) -> str:
    text = f"{value} {name}"
    return text if len(text) <= width else text[: width - 1] + "…"


def bar_chart(
    values: Sequence[int],
    names: Sequence[str],
    dice: Sequence[float],
    hd95: Sequence[float],
    dice_range: Sequence[tuple[float, float]] | None = None,
    hd95_range: Sequence[tuple[float, float]] | None = None,
    colors: Mapping[int, tuple[float, ...]] | None = None,
) -> bytes:
    """PNG of per-class Dice and HD95 bars; ``inf`` HD95 is a hatched bar labelled "inf".

    The optional ranges (e.g. quartiles over cases) are drawn as error bars.
    """
    count = len(values)
    x = np.arange(count)
    bar_colors = [(colors or {}).get(v, (0.5, 0.5, 0.5)) for v in values]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 0.45 * count + 2), 6.5), sharex=True)
    top.bar(x, [0 if math.isnan(d) else d for d in dice], color=bar_colors, edgecolor="black", linewidth=0.5)
    if dice_range:
        _error_bars(top, x, dice, dice_range)
    top.set_ylim(0, 1.05)
    top.set_ylabel("Dice")
    top.grid(axis="y", alpha=0.3)
    finite = [h for h in hd95 if math.isfinite(h)]
    ceiling = max(finite + [1.0]) * 1.15
    heights = [ceiling if math.isinf(h) else (0 if math.isnan(h) else h) for h in hd95]
    bars = bottom.bar(x, heights, color=bar_colors, edgecolor="black", linewidth=0.5)
    for bar, h in zip(bars, hd95, strict=True):
        if math.isinf(h):
            bar.set_hatch("//")
            bar.set_facecolor("white")
            bottom.text(bar.get_x() + bar.get_width() / 2, ceiling, "inf", ha="center", va="bottom", fontsize=8)
    if hd95_range:
        _error_bars(bottom, x, hd95, [(min(a, ceiling), min(b, ceiling)) for a, b in hd95_range])
    bottom.set_ylim(0, ceiling * 1.12)
    bottom.set_ylabel("HD95 (mm)")
    bottom.grid(axis="y", alpha=0.3)
    bottom.set_xticks(x, [_tick(v, n) for v, n in zip(values, names, strict=True)], rotation=60, ha="right", fontsize=8)
    figure.tight_layout()
    return _png(figure)


def _error_bars(axis: plt.Axes, x: np.ndarray, centre: Sequence[float], ranges: Sequence[tuple[float, float]]) -> None:
    ok = [i for i, (c, (a, b)) in enumerate(zip(centre, ranges, strict=True)) if all(map(math.isfinite, (c, a, b)))]
    if ok:
        low = [max(centre[i] - ranges[i][0], 0.0) for i in ok]
        high = [max(ranges[i][1] - centre[i], 0.0) for i in ok]
        axis.errorbar(x[ok], [centre[i] for i in ok], yerr=[low, high], fmt="none", ecolor="black", capsize=3)


def confusion_heatmap(values: Sequence[int], names: Sequence[str], matrix: np.ndarray) -> bytes:
    """PNG of the confusion matrix normalised per reference row (fractions of the reference class)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    fractions = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    count = len(values)
    size = max(4.5, 0.38 * count + 2.5)
    figure, axis = plt.subplots(figsize=(size + 1.2, size))
    shown = axis.imshow(fractions, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ticks = [_tick(v, n, 16) for v, n in zip(values, names, strict=True)]
    axis.set_xticks(range(count), ticks, rotation=60, ha="right", fontsize=7)
    axis.set_yticks(range(count), ticks, fontsize=7)
    axis.set_xlabel("prediction")
    axis.set_ylabel("reference")
    if count <= 12:
        for r in range(count):
            for c in range(count):
                if matrix[r, c]:
                    colour = "black" if fractions[r, c] > 0.6 else "white"
                    axis.text(c, r, f"{100 * fractions[r, c]:.0f}%", ha="center", va="center", fontsize=7, color=colour)
    figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04, label="fraction of reference voxels")
    figure.tight_layout()
    return _png(figure)


def _outline(labels: np.ndarray) -> np.ndarray:
    """Pixels of a 2D label slice whose label differs from one of their four neighbours."""
    padded = np.pad(labels, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    edge = (
        (centre != padded[:-2, 1:-1]) | (centre != padded[2:, 1:-1]) | (centre != padded[1:-1, :-2]) | (centre != padded[1:-1, 2:])
    )
    return edge & (labels != 0)


def _overlay(gray: np.ndarray, labels: np.ndarray, lut: Mapping[int, tuple[float, ...]]) -> np.ndarray:
    """RGB of a grey slice with labels filled (35 % opaque) and outlined (opaque)."""
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    edges = _outline(labels)
    for value in np.unique(labels):
        if value == 0:
            continue
        colour = np.asarray(lut.get(int(value), (1.0, 1.0, 0.0)))
        inside = labels == value
        rgb[inside & ~edges] = 0.65 * rgb[inside & ~edges] + 0.35 * colour
        rgb[inside & edges] = colour
    return rgb


def _slices(mask: np.ndarray, axis: int, count: int) -> list[int]:
    """``count`` slice indices spread over the labelled part of ``axis`` (the whole axis if none)."""
    others = tuple(a for a in range(3) if a != axis)
    hits = np.flatnonzero(mask.any(axis=others))
    low, high = (int(hits[0]), int(hits[-1])) if hits.size else (0, mask.shape[axis] - 1)
    picks = [int(round(low + (high - low) * (i + 1) / (count + 1))) for i in range(count)]
    return sorted(set(picks))


def _display(plane: np.ndarray, axis: int, spacing: Sequence[float], target: int) -> np.ndarray:
    """A slice of the LPS (z, y, x) array resized (nearest) to square display pixels, about
    ``target`` pixels on its long side, superior up in coronal and sagittal views."""
    sx, sy, sz = spacing
    row_mm, col_mm = {0: (sy, sx), 1: (sz, sx), 2: (sz, sy)}[axis]
    if axis != 0:
        plane = plane[::-1]
    height_mm, width_mm = plane.shape[0] * row_mm, plane.shape[1] * col_mm
    scale = target / max(height_mm, width_mm)
    rows = np.arange(max(1, round(height_mm * scale))) * plane.shape[0] // max(1, round(height_mm * scale))
    cols = np.arange(max(1, round(width_mm * scale))) * plane.shape[1] // max(1, round(width_mm * scale))
    return plane[rows][:, cols]


def slice_figures(
    pair: LabelPair,
    image: sitk.Image | None = None,
    per_axis: int = 3,
    colors: Mapping[int, tuple[float, ...]] | None = None,
    size: int = 220,
) -> list[tuple[str, bytes, str]]:
    """One PNG per axis (title, png, caption): a row per slice of image | prediction | reference.

    Label maps are upsampled before outlining, so outlines stay one display pixel thick.
    """
    geometry = pair.reference_image
    pred = _oriented(pair.prediction, geometry)
    ref = _oriented(pair.reference, geometry)
    spacing = sitk.DICOMOrient(geometry, "LPS").GetSpacing()  # (x, y, z) after orientation
    gray = None
    if image is not None:
        resampled = sitk.Resample(
            sitk.Cast(squeeze_to_3d(image), sitk.sitkFloat32), geometry, sitk.Transform(), sitk.sitkLinear, 0.0
        )
        values = _oriented(sitk.GetArrayFromImage(resampled), geometry)
        low, high = np.percentile(values, [1, 99])
        gray = np.clip((values - low) / max(high - low, 1e-6), 0, 1)
    lut = colors or label_colors(pair.classes, pair.colors)
    gap = 6
    figures = []
    for title, axis in AXES:
        picks = _slices((pred != 0) | (ref != 0), axis, per_axis)
        rows = []
        for index in picks:
            take: list[slice | int] = [slice(None)] * 3
            take[axis] = index
            p = _display(pred[tuple(take)], axis, spacing, size)
            r = _display(ref[tuple(take)], axis, spacing, size)
            g = _display(gray[tuple(take)], axis, spacing, size) if gray is not None else np.zeros(p.shape)
            panels = ([np.repeat(g[..., None], 3, axis=-1)] if gray is not None else []) + [
                _overlay(g, p, lut),
                _overlay(g, r, lut),
            ]
            spacer = np.ones((p.shape[0], gap, 3))
            rows.append(np.concatenate([x for panel in panels for x in (panel, spacer)][:-1], axis=1))
        width = rows[0].shape[1]
        mosaic = np.concatenate([x for row in rows for x in (row, np.ones((gap, width, 3)))][:-1], axis=0)
        buffer = io.BytesIO()
        plt.imsave(buffer, np.clip(mosaic, 0, 1), format="png")
        columns = "image | prediction | reference" if gray is not None else "prediction | reference"
        caption = f"Columns: {columns}. Rows: {title} slices {', '.join(map(str, picks))} (of {pred.shape[axis]})."
        figures.append((title, buffer.getvalue(), caption))
    return figures


def _oriented(array: np.ndarray, geometry: sitk.Image) -> np.ndarray:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(geometry)
    return sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS"))


# --------------------------------------------------------------------------- HTML


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _class_table(result: EvaluationResult, lut: Mapping[int, tuple[float, ...]]) -> str:
    head = "".join(f"<th>{html.escape(t)}</th>" for t, _m, _d in _TABLE)
    lines = [f"<table><tr><th>Value</th><th>Name</th><th>Status</th>{head}</tr>"]
    for row in result.classes:
        swatch = f'<span class="swatch" style="background:{_hex(lut[row.value])}"></span>' if row.value in lut else ""
        cells = "".join(f"<td>{format_number(getattr(row, m), d)}</td>" for _t, m, d in _TABLE)
        lines.append(
            f"<tr><td>{row.value}</td><td class='name'>{swatch}{html.escape(row.name)}</td>"
            f"<td class='name'>{row.status}</td>{cells}</tr>"
        )
    for kind, means in result.averages.items():
        cells = "".join(f"<td>{format_number(means[m], d)}</td>" for _t, m, d in _TABLE)
        lines.append(f"<tr class='mean'><td></td><td class='name'>mean ({kind})</td><td></td>{cells}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _counts_table(values: Sequence[int], matrix: np.ndarray) -> str:
    head = "".join(f"<th>{v}</th>" for v in values)
    rows = "".join(
        f"<tr><th>{v}</th>{''.join(f'<td>{int(c)}</td>' for c in row)}</tr>" for v, row in zip(values, matrix, strict=True)
    )
    return (
        "<details><summary>voxel counts (rows: reference, columns: prediction)</summary>"
        f"<table><tr><th></th>{head}</tr>{rows}</table></details>"
    )


def _warnings(warnings: Sequence[str]) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
    return f"<h2>Warnings</h2><ul class='warn'>{items}</ul>"


def _page(title: str, body: str) -> str:
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


CONVENTIONS = (
    "Dice, IoU, precision and recall are 1 when a class is empty in both maps and 0 when it is empty in one; "
    "HD95 is the larger of the two directed 95th-percentile surface distances (mm), ASSD the mean of both "
    "directed distance sets; a class missing from one map has HD95 = inf. Averages cover the classes present "
    "in at least one map."
)


def case_sections(result: EvaluationResult, pair: LabelPair, image: sitk.Image | None, per_axis: int = 3) -> str:
    """HTML body of one case: table, bar chart, confusion heat map and slice images."""
    lut = label_colors(result.values, result.colors)
    present = [row for row in result.classes if row.status != "neither"]
    chart = bar_chart(
        [r.value for r in present], [r.name for r in present], [r.dice for r in present], [r.hd95_mm for r in present], colors=lut
    )
    heatmap = confusion_heatmap(result.values, result.names, result.confusion)
    spacing = ", ".join(f"{s:g}" for s in result.spacing_mm)
    parts = [
        f"<p>Prediction: <code>{html.escape(result.prediction_source)}</code><br>"
        f"Reference: <code>{html.escape(result.reference_source)}</code><br>"
        f"Reference grid spacing: {spacing} mm; voxel volume {result.voxel_volume_ml * 1000:g} mm³</p>",
        _warnings(result.warnings),
        "<h2>Per-class metrics</h2>",
        _class_table(result, lut),
        f"<p><small>{html.escape(CONVENTIONS)}</small></p>",
        "<h2>Dice and HD95 per class</h2>",
        _img(chart, "Dice and HD95 per class"),
        "<h2>Confusion matrix</h2>",
        _img(heatmap, "confusion matrix"),
        _counts_table(result.values, result.confusion),
        "<h2>Slices</h2>",
    ]
    for title, png, caption in slice_figures(pair, image, per_axis, lut):
        parts.append(f"<h3>{title}</h3><p><small>{caption}</small></p>{_img(png, f'{title} slices')}")
    return "\n".join(parts)


def _write_html(folder: str | os.PathLike[str], text: str) -> Path:
    path = Path(folder) / REPORT_FILE
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_report(
    folder: str | os.PathLike[str],
    result: EvaluationResult,
    pair: LabelPair,
    image: sitk.Image | None = None,
    *,
    per_axis: int = 3,
    title: str = "MedSeg evaluation",
) -> Path:
    """Write ``folder/report.html`` for one case (atomically) and return its path.

    ``pair`` is what the result was computed from (:func:`prepare_label_maps`); ``image`` is
    an optional intensity volume shown beside the label maps (resampled onto the reference grid).
    """
    return _write_html(folder, _page(title, case_sections(result, pair, image, per_axis)))


def write_batch_report(
    folder: str | os.PathLike[str],
    batch: BatchResult,
    *,
    label_names: Mapping[int, str] | None = None,
    images: Mapping[str, str | os.PathLike[str]] | None = None,
    max_cases: int = 10,
    per_axis: int = 3,
    title: str = "MedSeg batch evaluation",
) -> Path:
    """Write ``folder/report.html`` for a batch: summary, per-case table, summed confusion
    matrix, and slice images of the first ``max_cases`` cases (re-read from their files)."""
    names = batch.class_names()
    summary = batch.class_summary()
    values = [v for v in names if summary[v]["dice"].n]
    colors: dict[int, tuple[int, int, int]] = {}
    for _case, result in batch.cases:
        colors.update(result.colors)
    lut = label_colors(list(names), colors)
    dice = [summary[v]["dice"] for v in values]
    hd95 = [summary[v]["hd95_mm"] for v in values]
    chart = bar_chart(
        values, [names[v] for v in values], [s.mean for s in dice], [s.median for s in hd95],
        dice_range=[(s.q1, s.q3) for s in dice], hd95_range=[(s.q1, s.q3) for s in hd95], colors=lut,
    )
    confusion_values, confusion = batch.combined_confusion()
    parts = [_warnings(batch.warnings), "<h2>Summary per class (over cases where the class is present)</h2>"]
    head = "<tr><th>Value</th><th>Name</th><th>n</th>" + "".join(
        f"<th>{m} {s}</th>" for m in ("Dice", "HD95 mm", "ASSD mm") for s in ("mean", "median", "IQR")
    ) + "</tr>"
    rows = [head]
    entries = [(str(v), names[v], summary[v]) for v in names] + [
        ("", f"mean ({kind})", stats) for kind, stats in batch.average_summary().items()
    ]
    for value, name, stats in entries:
        cells = "".join(
            f"<td>{format_number(getattr(stats[m], s), d)}</td>"
            for m, d in (("dice", 4), ("hd95_mm", 2), ("assd_mm", 2))
            for s in ("mean", "median", "iqr")
        )
        rows.append(f"<tr><td>{value}</td><td class='name'>{html.escape(name)}</td><td>{stats['dice'].n}</td>{cells}</tr>")
    parts.append("<table>" + "".join(rows) + "</table>")
    parts.append("<h2>Per case (foreground means)</h2><table><tr><th>Case</th><th>Dice</th><th>IoU</th><th>HD95 mm</th><th>ASSD mm</th></tr>")
    for case, result in batch.cases:
        a = result.averages["foreground"]
        parts.append(
            f"<tr><td class='name'>{html.escape(case)}</td><td>{format_number(a['dice'])}</td><td>{format_number(a['iou'])}</td>"
            f"<td>{format_number(a['hd95_mm'], 2)}</td><td>{format_number(a['assd_mm'], 2)}</td></tr>"
        )
    parts.append("</table>")
    parts += [
        "<h2>Dice (mean) and HD95 (median) per class, with quartiles</h2>",
        _img(chart, "Dice and HD95 per class"),
        "<h2>Confusion matrix, all cases summed</h2>",
        _img(confusion_heatmap(confusion_values, [names.get(v, f"Label {v}") for v in confusion_values], confusion), "confusion matrix"),
        _counts_table(confusion_values, confusion),
    ]
    shown = batch.cases[:max_cases]
    if len(batch.cases) > max_cases:
        parts.append(f"<p>Slice images of the first {max_cases} of {len(batch.cases)} cases.</p>")
    for case, _result in shown:
        prediction, reference = batch.sources[case]
        pair = read_label_pair(prediction, reference, label_names, colors=colors)
        image = read_image(images[case]) if images and case in images else None
        parts.append(f"<h2>Case {html.escape(case)}</h2>")
        for axis_title, png, caption in slice_figures(pair, image, per_axis, lut):
            parts.append(f"<h3>{axis_title}</h3><p><small>{caption}</small></p>{_img(png, f'{case} {axis_title} slices')}")
    return _write_html(folder, _page(title, "\n".join(parts)))
