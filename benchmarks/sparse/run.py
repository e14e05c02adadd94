"""Sparse-annotation benchmark: every method x protocol x task, scored against the full reference labels.

Methods, all given the same complete slices of the reference:

- ``medseg-finetuned`` / ``medseg-scratch``: ``MedSegExtension.sparse.finetune.fine_tune`` from the
  bundled (default) model or from random weights, within ``--time-budget`` seconds;
- ``fill-between-slices``: Slicer's Fill between slices (morphological contour interpolation);
- ``grow-from-seeds``: Slicer's Grow from seeds (GrowCut), seeded with the slices' labels plus
  their background as one more seed label.

Scores: per-structure Dice and HD95 (mm) from ``MedSegExtension.metrics``, their means over the
task's structures, and the method's wall time. Writes ``<stem>.json`` and ``<stem>.md`` (default
``benchmarks/results/sparse.*``). Run from the repository root::

    .venv/bin/python -m benchmarks.sparse.run --quick
    .venv/bin/python -m benchmarks.sparse.run                       # everything (hours on 2 cores)
    .venv/bin/python -m benchmarks.sparse.run --tasks colin27 --protocols parallel-1,parallel-3 \\
        --methods fill-between-slices,grow-from-seeds
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and the engine importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import SimpleITK as sitk

from benchmarks.sparse.baselines import fill_between_slices, grow_from_seeds, seeds_from_slices
from benchmarks.sparse.protocols import PROTOCOLS, Protocol, choose_slices, slices_crossing, sparse_annotation
from benchmarks.sparse.tasks import TASKS, Task, load_task
from MedSegExtension.sparse.annotations import SliceRef

RESULTS = Path(__file__).resolve().parents[1] / "results"
MEDSEG_METHODS = ("medseg-finetuned", "medseg-scratch")
SLICER_METHODS = ("fill-between-slices", "grow-from-seeds")
# Not run on their own. NETWORK_ONLY: the network's prediction of the medseg-finetuned run, before
# interpolation is fused in. DEFAULT: what `medseg finetune` does by default on the task, which is
# medseg-finetuned where the base model knows a structure by name and medseg-scratch where it knows
# none (fine_tune then sets the base model aside: FineTuneSettings.use_unrelated_base).
NETWORK_ONLY = "medseg-finetuned-network-only"
DEFAULT = "medseg-default"
METHODS = (DEFAULT, MEDSEG_METHODS[0], NETWORK_ONLY, *MEDSEG_METHODS[1:], *SLICER_METHODS)
CHECKED_METHODS = (DEFAULT, *MEDSEG_METHODS)
QUICK = {"tasks": ["colin27"], "structures": ["Caudate_L"], "protocols": ["parallel-1", "parallel-3"]}
# Issue targets, on the mean Dice over structures at each protocol.
TARGET_AT_LEAST_SLICES = 5  # MedSeg >= the better Slicer tool with <= 5 slices per structure
TARGET_MARGIN_SLICES = 3  # ... and >= 0.05 Dice above it with <= 3
TARGET_MARGIN = 0.05


@dataclass
class Row:
    """One method on one protocol of one task."""

    task: str
    protocol: str
    method: str
    slices: list[str]
    slices_per_structure: float  # mean number of annotated slices crossing a structure
    dice: dict[str, float] = field(default_factory=dict)  # structure name -> Dice
    hd95_mm: dict[str, float] = field(default_factory=dict)
    seconds: float = math.nan
    note: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.dice)

    @property
    def mean_dice(self) -> float:
        return float(np.mean(list(self.dice.values()))) if self.dice else math.nan

    @property
    def mean_hd95(self) -> float:
        return float(np.mean(list(self.hd95_mm.values()))) if self.hd95_mm else math.nan


# --------------------------------------------------------------------------- methods


def warm_up() -> None:
    """Import the slicer-core wheel and vtk once, so no method's time includes it."""
    import slicer  # noqa: F401
    import vtk  # noqa: F401


def run_slicer_method(method: str, task: Task, slices: Sequence[SliceRef]) -> sitk.Image:
    """A Slicer tool's dense label map from the reference's labels on ``slices``."""
    if method == "fill-between-slices":
        return fill_between_slices(task.reference, slices)
    if method == "grow-from-seeds":
        seeds, background = seeds_from_slices(task.reference, slices)
        return grow_from_seeds(task.image, seeds, background)
    raise ValueError(f"not a Slicer method: {method}")


def load_fine_tune() -> tuple[Any, Callable[..., Any]] | str:
    """``(FineTuneSettings, fine_tune)`` from the engine, or why they cannot be used."""
    try:
        from MedSegExtension.sparse.finetune import FineTuneSettings, fine_tune
    except ImportError as exc:
        return f"MedSegExtension.sparse.finetune is not importable ({exc})"
    return FineTuneSettings, fine_tune


def default_base_model() -> str | None:
    """The bundled default model's name, or None when there is none."""
    try:
        from MedSegExtension.models.registry import ModelRegistry

        return ModelRegistry().default_name()
    except Exception:  # noqa: BLE001 - any failure means "no bundled model to start from"
        return None


def run_medseg_method(
    method: str, task: Task, slices: Sequence[SliceRef], engine: tuple[Any, Callable[..., Any]],
    base_model: str | None, time_budget: float, device: str, seed: int,
) -> tuple[sitk.Image, str, sitk.Image | None]:
    """MedSeg's fine-tuned dense prediction, a note (held-out Dice when the engine reports one) and the
    network-only prediction of the same run (None when the engine has none)."""
    settings_class, fine_tune = engine
    annotation = sparse_annotation(task.image, task.reference, slices)
    settings = settings_class(base_model=base_model if method == "medseg-finetuned" else None,
                              time_budget=time_budget, device=device, seed=seed)
    result = fine_tune(task.image, annotation, task.classes, settings)
    parts = [f"{getattr(result, 'steps', '?')} steps", f"stopped: {getattr(result, 'stopped_because', '?')}"]
    held_out = getattr(result, "held_out_dice", None)
    if isinstance(held_out, float) and math.isfinite(held_out):
        parts.append(f"held-out Dice {held_out:.3f}")
    return result.labels, "; ".join(parts), getattr(result, "network_labels", None)


# --------------------------------------------------------------------------- scoring


def load_evaluate() -> Callable[..., Any] | None:
    """The engine's ``evaluate_images`` (None while the metrics package is missing)."""
    try:
        from MedSegExtension.metrics import evaluate_images
    except ImportError:
        return None
    return evaluate_images


def score(evaluate: Callable[..., Any], prediction: sitk.Image, task: Task) -> tuple[dict[str, float], dict[str, float]]:
    """Per-structure Dice and HD95 (mm) of ``prediction`` against the task's reference."""
    result = evaluate(prediction, task.reference, task.names)
    dice, hd95 = {}, {}
    for row in result.classes:
        if row.value in task.names:
            dice[row.name] = float(row.dice)
            hd95[row.name] = float(row.hd95_mm)
    return dice, hd95


# --------------------------------------------------------------------------- summary and output


def base_knows(task_info: dict[str, Any], base_model: str | None) -> bool:
    """Whether the base model knows any of the task's structures by name (as fine_tune decides)."""
    if not base_model:
        return False
    from MedSegExtension.models.registry import ModelRegistry
    from MedSegExtension.sparse.class_names import matching_class

    labels = ModelRegistry().find(base_model).labels
    return any(matching_class(name, labels) is not None for name in task_info["classes"].values())


def with_default_rows(rows: Sequence[Row], report: dict[str, Any]) -> list[Row]:
    """``rows`` plus a DEFAULT row per task and protocol, copied from the run the default would be."""
    rows = [row for row in rows if row.method != DEFAULT]
    base_model = report.get("settings", {}).get("base_model")
    result = list(rows)
    for info in report.get("tasks", []):
        knows = base_knows(info, base_model)
        source = "medseg-finetuned" if knows else "medseg-scratch"
        why = "the base model knows these structures" if knows else "the base model knows none of these structures"
        for row in rows:
            if row.task == info["name"] and row.method == source:
                result.append(Row(row.task, row.protocol, DEFAULT, row.slices, row.slices_per_structure,
                                  dict(row.dice), dict(row.hd95_mm), row.seconds, f"= {source} ({why})"))
    return result


def summarize(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Per protocol: each method's mean Dice/HD95 over all structures of all tasks, and the target checks."""
    summary = []
    for name in dict.fromkeys(row.protocol for row in rows):
        protocol = PROTOCOLS[name]
        crossing = [(row.slices_per_structure, len(row.dice) or 1) for row in rows if row.protocol == name]
        entry: dict[str, Any] = {"protocol": name, "slices_per_structure": protocol.slices_per_structure,
                                 "crossing_per_structure": float(np.average([c for c, _ in crossing],
                                                                            weights=[w for _, w in crossing])),
                                 "methods": {}}
        for method in METHODS:
            chosen = [row for row in rows if row.protocol == name and row.method == method and row.ok]
            if not chosen:
                continue
            dice = [d for row in chosen for d in row.dice.values()]
            hd95 = [h for row in chosen for h in row.hd95_mm.values()]
            entry["methods"][method] = {"dice": float(np.mean(dice)), "hd95_mm": float(np.mean(hd95)),
                                        "seconds": float(sum(row.seconds for row in chosen)),
                                        "structures": len(dice)}
        slicer = {m: entry["methods"][m]["dice"] for m in SLICER_METHODS if m in entry["methods"]}
        need = None
        if protocol.slices_per_structure <= TARGET_MARGIN_SLICES:
            need = TARGET_MARGIN
        elif protocol.slices_per_structure <= TARGET_AT_LEAST_SLICES:
            need = 0.0
        entry["target"] = "none" if need is None else f">= best Slicer + {need:.2f}"
        if slicer:
            best = max(slicer, key=lambda m: slicer[m])
            entry["best_slicer"] = {"method": best, "dice": slicer[best]}
        entry["checks"] = {}
        if need is not None and len(slicer) == len(SLICER_METHODS):
            for method in CHECKED_METHODS:
                if method in entry["methods"]:
                    entry["checks"][method] = bool(entry["methods"][method]["dice"] >= entry["best_slicer"]["dice"] + need)
        summary.append(entry)
    return summary


def _number(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def results_table(rows: Sequence[Row]) -> str:
    """The Markdown table: one line per task x protocol x method."""
    lines = ["| task | protocol | slices | slices/structure | method | mean Dice | mean HD95 (mm) | seconds | note |",
             "|---|---|---:|---:|---|---:|---:|---:|---|"]
    for row in rows:
        lines.append(f"| {row.task} | {row.protocol} | {len(row.slices)} | {row.slices_per_structure:.1f} | {row.method} | "
                     f"{_number(row.mean_dice)} | {_number(row.mean_hd95, 2)} | {_number(row.seconds, 2)} | {row.note} |")
    return "\n".join(lines)


def summary_table(summary: Sequence[dict[str, Any]]) -> str:
    """The Markdown summary: per protocol, every method's mean Dice over structures and the target check."""
    lines = ["| protocol | slices/structure (crossing) | " + " | ".join(METHODS) + " | best Slicer | target | met |",
             "|---|---:|" + "---:|" * len(METHODS) + "---|---|---|"]
    for entry in summary:
        cells = [_number(entry["methods"][m]["dice"]) if m in entry["methods"] else "–" for m in METHODS]
        best = entry.get("best_slicer")
        checks = ", ".join(f"{m}: {'yes' if ok else 'NO'}" for m, ok in entry["checks"].items()) or "–"
        lines.append(f"| {entry['protocol']} | {entry['slices_per_structure']} ({entry['crossing_per_structure']:.1f}) | "
                     + " | ".join(cells) +
                     f" | {best['method'] + ' ' + _number(best['dice']) if best else '–'} | {entry['target']} | {checks} |")
    return "\n".join(lines)


def markdown(report: dict[str, Any], rows: Sequence[Row], summary: Sequence[dict[str, Any]]) -> str:
    """The whole Markdown page."""
    settings = report["settings"]
    parts = [
        "# Sparse-annotation benchmark",
        "",
        f"Created {report['created']} on {report['machine']['platform']}, {report['machine']['cpus']} CPU cores; "
        f"MedSeg time budget {settings['time_budget']:g} s per fine-tuning, device {settings['device']}, "
        f"base model {settings['base_model'] or '(none)'}. Times are wall seconds of the method alone.",
        "",
        "Slices: per structure, `parallel-N` = N axial slices evenly spread over its extent (interior fractions "
        "(m+1)/(N+1)); `ortho-N` = N slices on each voxel axis (centre, or quartiles). The structures' slices are "
        "merged into one complete-slice annotation per protocol (a slice within 2 voxels of one already chosen and "
        "crossing the structure is reused). `slices` = distinct annotated slices; `slices/structure` = mean number "
        "of them crossing a structure. Dice and HD95 are means over the task's structures.",
        "",
        "`medseg-default` = what `medseg finetune` does by default: the `medseg-finetuned` run where the bundled "
        "model knows a task's structures by name, the `medseg-scratch` run where it knows none (fine_tune then sets "
        "it aside); `medseg-finetuned-network-only` = the network's own prediction in the `medseg-finetuned` run, "
        "before shape interpolation between the annotated slices is averaged in. "
        "Methods: `medseg-*` = `MedSegExtension.sparse.finetune.fine_tune` with its defaults, from the bundled "
        "default model (at the model's 2 mm spacing; class names that mean one of its classes, such as AAL's "
        "Caudate_L, keep that class's output channel) or from scratch (on the image's own voxels); the annotated "
        "voxels keep their labels in the result; `fill-between-slices` = Slicer's Fill between slices (vtkITKMorphologicalContourInterpolator, all "
        "labels, all axes; as in Slicer a label needs two annotated slices to be interpolated); `grow-from-seeds` = "
        "Slicer's Grow from seeds (vtkImageGrowCutSegment, seed locality 0) seeded with each structure's slice voxels "
        "and the slices' background as one more label, run like the effect on the seeds' bounding box grown by "
        "max(3 voxels, 20 %) per axis. Both Slicer tools come from the slicer-core wheel, headless.",
        "",
        "## Tasks",
        "",
    ]
    for info in report["tasks"]:
        classes = ", ".join(info["classes"].values())
        parts.append(f"- **{info['name']}**: {info['description']}; cropped to {info['crop']}; structures: {classes}.")
    if report["notes"]:
        parts += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    parts += ["", "## Summary (mean Dice over all structures)", "", summary_table(summary),
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


def write_outputs(report: dict[str, Any], rows: Sequence[Row], out_dir: Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md``; returns their paths."""
    rows = with_default_rows(rows, report)
    tasks = list(dict.fromkeys(row.task for row in rows))
    protocols = list(dict.fromkeys(row.protocol for row in rows))
    rows = sorted(rows, key=lambda row: (tasks.index(row.task), protocols.index(row.protocol),
                                         METHODS.index(row.method)))
    summary = summarize(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = dict(report, summary=summary,
                results=[dict(asdict(row), mean_dice=row.mean_dice, mean_hd95_mm=row.mean_hd95) for row in rows])
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(_jsonable(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    md_path.write_text(markdown(report, rows, summary), encoding="utf-8")
    return json_path, md_path


# --------------------------------------------------------------------------- driver


def render(json_path: Path, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` again from a results JSON (e.g. after the page's text changed)."""
    data = json.loads(json_path.read_text(encoding="utf-8"))
    fields = {name for name in Row.__dataclass_fields__}
    rows = [Row(**{key: value for key, value in result.items() if key in fields}) for result in data["results"]]
    for row in rows:  # undo _jsonable: "inf" and None (NaN) back to floats
        row.seconds = math.nan if row.seconds is None else float(row.seconds)
        row.dice = {name: math.nan if v is None else float(v) for name, v in row.dice.items()}
        row.hd95_mm = {name: math.nan if v is None else float(v) for name, v in row.hd95_mm.items()}
    report = {key: value for key, value in data.items() if key not in ("summary", "results")}
    return write_outputs(report, rows, out_dir, stem)


def _names(text: str, known: Sequence[str], what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown {what} {unknown}; known: {', '.join(known)}")
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated: " + ", ".join(TASKS))
    parser.add_argument("--structures", default="", help="colin27 only: comma-separated AAL names (e.g. Caudate_L)")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated: " + ", ".join(PROTOCOLS))
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated: " + ", ".join(METHODS))
    parser.add_argument("--time-budget", type=float, default=180.0, help="seconds per MedSeg fine-tuning (default 180)")
    parser.add_argument("--base-model", default=None, help="model to fine-tune (default: the bundled default model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--quick", action="store_true",
                        help="one structure (colin27 Caudate_L), protocols parallel-1 and parallel-3")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument("--output-stem", default=None, help="file name stem (default: sparse, or sparse-quick)")
    parser.add_argument("--save-predictions", type=Path, default=None, help="folder for every prediction (.nii.gz)")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="run nothing: write the tables again from this results JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.structures, args.protocols = (",".join(QUICK[key]) for key in ("tasks", "structures", "protocols"))
    args.task_names = _names(args.tasks, list(TASKS), "tasks")
    args.protocol_names = _names(args.protocols, list(PROTOCOLS), "protocols")
    args.method_names = _names(args.methods, METHODS, "methods")
    args.structure_names = [s.strip() for s in args.structures.split(",") if s.strip()]
    args.output_stem = args.output_stem or ("sparse-quick" if args.quick else "sparse")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        json_path, md_path = render(args.render, args.output_dir, args.render.name.removesuffix(".json"))
        print(f"wrote {json_path} and {md_path}")
        return 0
    notes: list[str] = []
    methods = list(args.method_names)

    engine: tuple[Any, Callable[..., Any]] | None = None
    if any(m in MEDSEG_METHODS for m in methods):
        loaded = load_fine_tune()
        if isinstance(loaded, str):
            notes.append(f"MedSeg methods skipped: {loaded}.")
            methods = [m for m in methods if m not in MEDSEG_METHODS]
        else:
            engine = loaded
            import torch

            torch.set_num_threads(args.threads)
    base_model = args.base_model or default_base_model()
    if "medseg-finetuned" in methods and base_model is None:
        notes.append("medseg-finetuned skipped: no bundled default model to fine-tune (Resources/Models is empty).")
        methods.remove("medseg-finetuned")
    evaluate = load_evaluate()
    if evaluate is None:
        notes.append("MedSegExtension.metrics is not importable: no Dice/HD95, times only.")
    for note in notes:
        print(f"note: {note}", flush=True)
    warm_up()

    rows: list[Row] = []
    tasks: list[Task] = []
    for task_name in args.task_names:
        task = load_task(task_name, args.structure_names if task_name == "colin27" else None)
        tasks.append(task)
        labels = sitk.GetArrayViewFromImage(task.reference)
        print(f"== {task.name}: {task.crop}", flush=True)
        for protocol_name in args.protocol_names:
            protocol: Protocol = PROTOCOLS[protocol_name]
            slices = choose_slices(task.image, task.reference, task.values, protocol)
            crossing = float(np.mean([slices_crossing(labels == v, slices) for v in task.values]))
            for method in methods:
                if method in (NETWORK_ONLY, DEFAULT):
                    continue  # derived from the other rows
                row = Row(task.name, protocol.name, method, [str(s) for s in slices], crossing)
                derived: list[tuple[Row, sitk.Image]] = []
                start = time.perf_counter()
                try:
                    if method in MEDSEG_METHODS:
                        assert engine is not None
                        prediction, row.note, network_only = run_medseg_method(
                            method, task, slices, engine, base_model, args.time_budget, args.device, args.seed)
                        if method == "medseg-finetuned" and NETWORK_ONLY in methods and network_only is not None:
                            derived.append((Row(task.name, protocol.name, NETWORK_ONLY, row.slices, crossing,
                                                note="same run, before interpolation is fused in"), network_only))
                    else:
                        prediction = run_slicer_method(method, task, slices)
                    row.seconds = time.perf_counter() - start
                    for extra, image in [(row, prediction), *derived]:
                        extra.seconds = row.seconds
                        if evaluate is not None:
                            extra.dice, extra.hd95_mm = score(evaluate, image, task)
                        if args.save_predictions is not None:
                            args.save_predictions.mkdir(parents=True, exist_ok=True)
                            sitk.WriteImage(image, str(args.save_predictions
                                                       / f"{task.name}_{protocol.name}_{extra.method}.nii.gz"))
                except Exception as exc:  # noqa: BLE001 - one failing method must not end the benchmark
                    row.seconds = time.perf_counter() - start
                    row.note = f"failed: {type(exc).__name__}: {exc}"
                    derived = []
                for done in [row, *(extra for extra, _ in derived)]:
                    rows.append(done)
                    print(f"{task.name:8s} {protocol.name:11s} {len(slices):3d} slices {done.method:20s} "
                          f"Dice {_number(done.mean_dice)}  HD95 {_number(done.mean_hd95, 2)} mm  "
                          f"{done.seconds:7.2f} s {done.note}", flush=True)

    report = {
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": {"tasks": args.task_names, "structures": args.structure_names, "protocols": args.protocol_names,
                     "methods": methods, "time_budget": args.time_budget, "base_model": base_model,
                     "device": args.device, "seed": args.seed, "threads": args.threads, "quick": args.quick},
        "protocols": {name: asdict(PROTOCOLS[name]) for name in args.protocol_names},
        "tasks": [task.info() for task in tasks],
        "notes": notes,
    }
    json_path, md_path = write_outputs(report, rows, args.output_dir, args.output_stem)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
