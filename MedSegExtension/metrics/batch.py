"""Evaluation of two folders matched by file name: per-case results and their summary."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io.atomic import compound_suffix
from ..io.volumes import VOLUME_SUFFIXES
from ..progress import CancelToken, ProgressCallback, ScaledProgress, no_progress
from .evaluation import EvaluationResult, evaluate_files
from .formats import CSV_COLUMNS, csv_text, format_number, jsonable, write_text
from .label_maps import Color
from .results import METRIC_FIELDS
from .statistics import SummaryStats, summarize


@dataclass
class BatchResult:
    """Per-case results of two folders matched by file name, and their summary."""

    cases: list[tuple[str, EvaluationResult]]
    warnings: list[str] = field(default_factory=list)
    sources: dict[str, tuple[str, str]] = field(default_factory=dict)  # case → (prediction, reference) paths

    def class_names(self) -> dict[int, str]:
        names: dict[int, str] = {}
        for _case, result in self.cases:
            for row in result.classes:
                names.setdefault(row.value, row.name)
        return dict(sorted(names.items()))

    def class_summary(self) -> dict[int, dict[str, SummaryStats]]:
        """For every class, each metric summarized over the cases where the class is present."""
        summary = {}
        for value in self.class_names():
            rows = [r.row(value) for _c, r in self.cases if value in r.values and r.row(value).status != "neither"]
            summary[value] = {m: summarize(getattr(row, m) for row in rows) for m in METRIC_FIELDS}
        return summary

    def average_summary(self) -> dict[str, dict[str, SummaryStats]]:
        """Each metric's per-case average (``all`` / ``foreground``) summarized over cases."""
        return {
            kind: {m: summarize(r.averages[kind][m] for _c, r in self.cases) for m in METRIC_FIELDS}
            for kind in ("all", "foreground")
        }

    def combined_confusion(self) -> tuple[list[int], np.ndarray]:
        """Classes and the confusion matrix summed over every case."""
        values = sorted({v for _c, r in self.cases for v in r.values})
        position = {v: i for i, v in enumerate(values)}
        total = np.zeros((len(values), len(values)), dtype=np.int64)
        for _case, result in self.cases:
            index = [position[v] for v in result.values]
            total[np.ix_(index, index)] += result.confusion
        return values, total

    def to_dict(self) -> dict[str, Any]:
        names = self.class_names()
        return jsonable(
            {
                "cases": [{"case": case, **result.to_dict()} for case, result in self.cases],
                "summary": {
                    "classes": [
                        {"value": v, "name": names[v], **{m: s.as_dict() for m, s in stats.items()}}
                        for v, stats in self.class_summary().items()
                    ],
                    "averages": {
                        kind: {m: s.as_dict() for m, s in stats.items()} for kind, stats in self.average_summary().items()
                    },
                },
                "warnings": list(self.warnings),
            }
        )

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        return write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n", path)

    def to_csv(self, path: str | os.PathLike[str] | None = None) -> str:
        """Long format: every case's rows (``row`` = class/mean_all/mean_foreground), then the summary
        (``row`` = summary_mean/median/q1/q3/iqr per class and for the per-case averages)."""
        rows = [{"case": case, **row} for case, result in self.cases for row in result.csv_rows()]
        names, classes, averages = self.class_names(), self.class_summary(), self.average_summary()
        for statistic in ("mean", "median", "q1", "q3", "iqr"):
            for value, stats in classes.items():
                rows.append(
                    {"case": "", "row": f"summary_{statistic}", "value": value, "name": names[value],
                     **{m: getattr(s, statistic) for m, s in stats.items()}}
                )
            for kind, stats in averages.items():
                rows.append(
                    {"case": "", "row": f"summary_{statistic}", "name": f"mean_{kind}",
                     **{m: getattr(s, statistic) for m, s in stats.items()}}
                )
        return write_text(csv_text(["case", "row", *CSV_COLUMNS], rows), path)

    def format_table(self) -> str:
        """Per-case foreground means, then per-class mean / median / IQR of Dice and HD95."""
        width = max([len(case) for case, _r in self.cases] + [4])
        lines = [f"{'Case':<{width}}  {'Dice':>6} {'IoU':>6} {'HD95mm':>8} {'ASSDmm':>8}  (foreground means)"]
        for case, result in self.cases:
            a = result.averages["foreground"]
            lines.append(
                f"{case:<{width}}  {format_number(a['dice']):>6} {format_number(a['iou']):>6} {format_number(a['hd95_mm'], 2):>8} {format_number(a['assd_mm'], 2):>8}"
            )
        lines.append("")
        lines.append(
            f"{'Value':>5} {'Name':<24} {'n':>3} {'Dice mean':>9} {'median':>7} {'IQR':>6}"
            f" {'HD95 mean':>9} {'median':>7} {'IQR':>6}"
        )
        names = self.class_names()
        summary = [(str(v), names[v], s) for v, s in self.class_summary().items()]
        summary += [("", f"mean ({kind})", s) for kind, s in self.average_summary().items()]
        for value, name, stats in summary:
            d, h = stats["dice"], stats["hd95_mm"]
            lines.append(
                f"{value:>5} {name[:24]:<24} {d.n:>3} {format_number(d.mean):>9} {format_number(d.median):>7} {format_number(d.iqr):>6}"
                f" {format_number(h.mean, 2):>9} {format_number(h.median, 2):>7} {format_number(h.iqr, 2):>6}"
            )
        return "\n".join(lines)


def volume_files(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Volume files directly in ``folder`` by case name (file name without its volume suffix)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        suffix = compound_suffix(path)
        if path.name.startswith(".") or not path.is_file() or suffix not in VOLUME_SUFFIXES:
            continue
        case = path.name[: -len(suffix)]
        if case in found:
            raise InputError(f"{folder}: two files for case {case!r} ({found[case].name}, {path.name})")
        found[case] = path
    return found


def match_cases(
    prediction_folder: str | os.PathLike[str], reference_folder: str | os.PathLike[str]
) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """(case, prediction, reference) for every file name found in both folders, and warnings."""
    predictions, references = volume_files(prediction_folder), volume_files(reference_folder)
    common = sorted(set(predictions) & set(references))
    if not common:
        raise InputError(
            f"{prediction_folder}: no file name matches one in {reference_folder} "
            f"({len(predictions)} and {len(references)} volume files)"
        )
    warnings = []
    for folder, names, other in (
        (prediction_folder, predictions, references),
        (reference_folder, references, predictions),
    ):
        unmatched = sorted(set(names) - set(other))
        if unmatched:
            listed = ", ".join(unmatched[:10]) + (" …" if len(unmatched) > 10 else "")
            warnings.append(f"{folder}: {len(unmatched)} files without a match, skipped: {listed}")
    return [(case, predictions[case], references[case]) for case in common], warnings


def evaluate_folders(
    prediction_folder: str | os.PathLike[str],
    reference_folder: str | os.PathLike[str],
    label_names: Mapping[int, str] | None = None,
    *,
    colors: Mapping[int, Color] | None = None,
    surface: bool = True,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    on_case: Callable[[str, EvaluationResult], None] | None = None,
) -> BatchResult:
    """:func:`evaluate_files` for every pair of files with the same name in the two folders."""
    pairs, warnings = match_cases(prediction_folder, reference_folder)
    cases = []
    for index, (case, pred_path, ref_path) in enumerate(pairs):
        if cancel is not None:
            cancel.raise_if_cancelled()
        sub = ScaledProgress(progress, index / len(pairs), (index + 1) / len(pairs))
        result = evaluate_files(
            pred_path, ref_path, label_names, colors=colors, surface=surface,
            progress=lambda f, m, case=case, sub=sub: sub(f, f"{case}: {m}"), cancel=cancel,
        )
        warnings += [f"{case}: {w}" for w in result.warnings]
        cases.append((case, result))
        if on_case is not None:
            on_case(case, result)
    return BatchResult(cases, warnings, {case: (str(p), str(r)) for case, p, r in pairs})
