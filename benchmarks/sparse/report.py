"""The sparse benchmark's results: rows as run, the per-task and mean summary with the issue's
targets, and the JSON and Markdown files. Everything here works from the rows alone, so
``--render`` rewrites the Markdown from a results JSON without running or loading anything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MEDSEG = "medseg"
BASELINES = ("fill-between-slices", "grow-from-seeds", "grow-from-seeds-whole")
METHODS = (MEDSEG, *BASELINES)
# Issue #10's targets, per task and on the mean: at 3 slices per structure (parallel-3, ortho-1)
# MedSeg >= the best baseline + 0.02; at 1 and 5 (parallel-1, parallel-5) >= the best baseline.
TARGET_MARGIN = {"parallel-3": 0.02, "ortho-1": 0.02, "parallel-1": 0.0, "parallel-5": 0.0}
MEAN = "mean"


@dataclass
class Row:
    """One method on one protocol of one task, as it ran."""

    task: str
    protocol: str
    method: str
    slices: list[str]
    slices_per_structure: float  # mean number of annotated slices crossing a structure
    dice: dict[str, float] = field(default_factory=dict)  # structure name -> Dice
    hd95_mm: dict[str, float] = field(default_factory=dict)
    seconds: float = math.nan
    note: str = ""
    settings: dict[str, Any] = field(default_factory=dict)  # MedSeg: the FineTuneSettings it ran with

    @property
    def mean_dice(self) -> float:
        return float(np.mean(list(self.dice.values()))) if self.dice else math.nan

    @property
    def mean_hd95(self) -> float:
        return float(np.mean(list(self.hd95_mm.values()))) if self.hd95_mm else math.nan


def _check(dice: dict[str, float], protocol: str) -> dict[str, Any]:
    """The target check of one task (or the mean) at one protocol, from each method's mean Dice."""
    entry: dict[str, Any] = {"methods": dice}
    baselines = {m: d for m, d in dice.items() if m in BASELINES and math.isfinite(d)}
    if baselines:
        best = max(baselines, key=lambda m: baselines[m])
        entry["best_baseline"] = {"method": best, "dice": baselines[best]}
    margin = TARGET_MARGIN.get(protocol)
    if margin is not None and MEDSEG in dice and len(baselines) == len(BASELINES):
        entry["target"] = f">= best baseline + {margin:.2f}"
        entry["met"] = bool(dice[MEDSEG] >= entry["best_baseline"]["dice"] + margin)
    return entry


def summarize(rows: Sequence[Row]) -> dict[str, dict[str, Any]]:
    """Per protocol: per task and the mean over tasks, each method's mean Dice, the best baseline, the target."""
    summary: dict[str, dict[str, Any]] = {}
    for protocol in dict.fromkeys(row.protocol for row in rows):
        chosen = [row for row in rows if row.protocol == protocol]
        tasks = list(dict.fromkeys(row.task for row in chosen))
        per_task = {task: {row.method: row.mean_dice for row in chosen if row.task == task} for task in tasks}
        summary[protocol] = {task: _check(dice, protocol) for task, dice in per_task.items()}
        methods = [m for m in METHODS if all(m in dice and math.isfinite(dice[m]) for dice in per_task.values())]
        mean = {m: float(np.mean([per_task[task][m] for task in tasks])) for m in methods}
        summary[protocol][MEAN] = _check(mean, protocol)
    return summary


def _number(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def summary_table(summary: dict[str, dict[str, Any]]) -> str:
    """Markdown: one line per protocol and task (and mean), the methods' mean Dice, target and whether met."""
    lines = ["| protocol | task | " + " | ".join(METHODS) + " | best baseline | target | met |",
             "|---|---|" + "---:|" * len(METHODS) + "---|---|---|"]
    for protocol, tasks in summary.items():
        for task, entry in tasks.items():
            cells = [_number(entry["methods"].get(m)) for m in METHODS]
            best = entry.get("best_baseline")
            met = {True: "yes", False: "NO"}.get(entry.get("met"), "–")  # type: ignore[arg-type]
            name = f"**{task}**" if task == MEAN else task
            lines.append(f"| {protocol} | {name} | " + " | ".join(cells) + f" | {best['method'] if best else '–'} | "
                         f"{entry.get('target', '–')} | {met} |")
    return "\n".join(lines)


def results_table(rows: Sequence[Row]) -> str:
    """Markdown: one line per task x protocol x method."""
    lines = ["| task | protocol | slices | slices/structure | method | mean Dice | mean HD95 (mm) | seconds | note |",
             "|---|---|---:|---:|---|---:|---:|---:|---|"]
    for row in rows:
        lines.append(f"| {row.task} | {row.protocol} | {len(row.slices)} | {row.slices_per_structure:.1f} | {row.method} | "
                     f"{_number(row.mean_dice)} | {_number(row.mean_hd95, 2)} | {_number(row.seconds, 1)} | {row.note} |")
    return "\n".join(lines)


METHOD_TEXT = (
    "Methods: `medseg` = `medseg finetune IMAGE --labels SLICES.seg.nrrd --slices SPEC --name NAME` with nothing "
    "else: the CLI's parser and its `settings_from_args`, so every setting (base model, time budget, whether a base "
    "model that knows none of the structures is set aside) is the CLI default; scored on `result.labels`, the map "
    "`-o` writes. The label file holds the reference on the annotated slices only. "
    "`fill-between-slices` = Slicer's Fill between slices (vtkITKMorphologicalContourInterpolator, all labels, all "
    "axes; a label needs two annotated slices to be interpolated); `grow-from-seeds` = Slicer's Grow from seeds "
    "(vtkImageGrowCutSegment, seed locality 0), each structure's slice voxels plus the slices' background as seeds, "
    "on the effect's default region (the seeds' box grown max(3 voxels, 20 %) per axis); `grow-from-seeds-whole` = "
    "the same on the whole volume (the expert setting of a large extentGrowthRatio). Slicer tools from the "
    "slicer-core wheel, headless."
)
PROTOCOL_TEXT = (
    "Slices: per structure, `parallel-N` = N axial slices evenly spread over its extent; `ortho-1` = one slice on "
    "each voxel axis through its centre (1+1+1). The structures' slices are merged into one complete-slice "
    "annotation (a slice within 2 voxels of one already chosen and crossing the structure is reused). Dice and HD95 "
    "are means over the task's structures; the summary's mean is over tasks."
)


LOAD_TOLERANCE = 0.02  # issue #10: with a second CPU-bound process, within 0.02 of the quiet result


def loaded_vs_quiet(rows: Sequence[Row], quiet: dict[str, Any]) -> list[dict[str, Any]]:
    """MedSeg's rows of this (loaded) run beside the same task and protocol of a quiet run's JSON."""
    reference = {(r["task"], r["protocol"]): r["mean_dice"] for r in quiet["results"] if r["method"] == MEDSEG}
    pairs = []
    for row in rows:
        if row.method == MEDSEG and (row.task, row.protocol) in reference:
            before = reference[(row.task, row.protocol)]
            pairs.append({"task": row.task, "protocol": row.protocol, "quiet": before, "loaded": row.mean_dice,
                          "difference": row.mean_dice - before,
                          "within_tolerance": abs(row.mean_dice - before) <= LOAD_TOLERANCE})
    return pairs


def loaded_table(comparison: dict[str, Any]) -> str:
    lines = [f"Against the quiet run `{comparison['quiet_json']}` (commit `{comparison['quiet_commit']}`); "
             f"target: within {LOAD_TOLERANCE} Dice.", "",
             "| task | protocol | quiet | loaded | difference | within 0.02 |", "|---|---|---:|---:|---:|---|"]
    lines += [f"| {p['task']} | {p['protocol']} | {p['quiet']:.3f} | {p['loaded']:.3f} | {p['difference']:+.3f} | "
              f"{'yes' if p['within_tolerance'] else 'NO'} |" for p in comparison["rows"]]
    return "\n".join(lines)


def markdown(report: dict[str, Any], rows: Sequence[Row], summary: dict[str, dict[str, Any]]) -> str:
    """The whole Markdown page."""
    git, load = report["git"], report["load"]
    parts = [
        f"# Sparse-annotation benchmark: {report['split']} split",
        "",
        f"Command: `{report['command']}`. Commit `{git['commit']}`{' (tree dirty)' if git['dirty'] else ''}; "
        f"created {report['created']} on {report['machine']['platform']}, {report['machine']['cpus']} CPU cores; "
        f"load average (1, 5, 15 min) before {load['before']}, after {load['after']}. "
        "Times are wall seconds of the method alone.",
        "",
        f"Split ({report['split_reason']}): " + "; ".join(f"{name}: {', '.join(tasks)}"
                                                         for name, tasks in report["splits"].items()) + ".",
        "",
        METHOD_TEXT,
        "",
        PROTOCOL_TEXT,
        "",
        "## Tasks",
        "",
    ]
    for info in report["tasks"]:
        classes = ", ".join(info["classes"].values())
        threshold = info.get("best_threshold_dice")
        note = f"; the best single intensity interval scores Dice {threshold:.3f}" if threshold is not None else ""
        parts.append(f"- **{info['name']}**: {info['description']}; cropped to {info['crop']}; "
                     f"structures: {classes}{note}.")
    if report["notes"]:
        parts += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    if report.get("loaded_vs_quiet"):
        parts += ["", "## Loaded against quiet (MedSeg)", "", loaded_table(report["loaded_vs_quiet"])]
    parts += ["", "## Summary (mean Dice over structures; mean over tasks)", "", summary_table(summary),
              "", "## Results", "", results_table(rows), ""]
    return "\n".join(parts)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else (None if math.isnan(value) else value)
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def write_outputs(report: dict[str, Any], rows: Sequence[Row], out_dir: Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.json`` (the report and every row as run) and ``<stem>.md``; returns their paths."""
    summary = summarize(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = dict(report, summary=summary,
                results=[dict(asdict(row), mean_dice=row.mean_dice, mean_hd95_mm=row.mean_hd95) for row in rows])
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(_jsonable(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    md_path.write_text(markdown(report, rows, summary), encoding="utf-8")
    return json_path, md_path


def render(json_path: Path) -> Path:
    """Write the Markdown next to a results JSON again, from the JSON alone (after the page's text changed)."""
    data = json.loads(json_path.read_text(encoding="utf-8"))
    fields = set(Row.__dataclass_fields__)
    rows = []
    for result in data["results"]:
        row = Row(**{key: value for key, value in result.items() if key in fields})
        row.seconds = _float(row.seconds) if row.seconds != "inf" else math.inf
        row.dice = {name: _float(v) for name, v in row.dice.items()}
        row.hd95_mm = {name: math.inf if v == "inf" else _float(v) for name, v in row.hd95_mm.items()}
        rows.append(row)
    report = {key: value for key, value in data.items() if key not in ("summary", "results")}
    md_path = json_path.with_suffix(".md")
    md_path.write_text(markdown(report, rows, summarize(rows)), encoding="utf-8")
    return md_path
