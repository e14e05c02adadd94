"""Sparse-annotation benchmark: every method x protocol x task of one split, scored against the full reference.

One command regenerates every sparse number (from the repository root)::

    .venv/bin/python -m benchmarks.sparse.run --split dev     # -> benchmarks/results/sparse_dev.{json,md}
    .venv/bin/python -m benchmarks.sparse.run --split test    # the lead, once, from a tagged commit
    .venv/bin/python -m benchmarks.sparse.run --split dev --with-load 1   # beside a CPU-bound process
    .venv/bin/python -m benchmarks.sparse.run --render benchmarks/results/sparse_dev.json   # Markdown again
    .venv/bin/python -m benchmarks.sparse.run --quick --output-dir /tmp/q   # smoke test, seconds

Methods (:mod:`benchmarks.sparse.report` says what each is): ``medseg`` = ``medseg finetune``'s
default path (:mod:`benchmarks.sparse.medseg_path`); Slicer's Fill between slices; Grow from seeds
on its default region and on the whole volume. ``--tasks``/``--protocols``/``--methods`` select a
part of the split (recorded in the JSON); they never change how a method runs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and the engine importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import SimpleITK as sitk

from benchmarks.sparse.baselines import (
    best_threshold_dice,
    fill_between_slices,
    grow_from_seeds,
    seeds_from_slices,
)
from benchmarks.sparse.medseg_path import QUICK_OPTIONS, run_medseg
from benchmarks.sparse.protocols import PROTOCOLS, choose_slices, slices_crossing
from benchmarks.sparse.report import (
    MEDSEG,
    METHODS,
    TARGET_MARGIN,
    Row,
    loaded_vs_quiet,
    render,
    write_outputs,
)
from benchmarks.sparse.tasks import SPLIT, SPLIT_REASON, Task, colin27_task, load_task
from MedSegExtension.sparse.annotations import SliceRef

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_PROTOCOLS = tuple(TARGET_MARGIN)  # parallel-3, ortho-1, parallel-1, parallel-5
THRESHOLD_CHECKED = ("cranium", "cranium-skull")  # CT tasks: is a threshold enough?
QUICK_STRUCTURES = ("Caudate_L",)  # --quick: Colin27's left caudate, parallel-3


def medseg_options(quick: bool) -> tuple[str, ...]:
    """Options added to ``medseg finetune``'s required ones: none, except the smoke test's step limit."""
    return QUICK_OPTIONS if quick else ()


def run_baseline(method: str, task: Task, slices: Sequence[SliceRef]) -> sitk.Image:
    """A Slicer tool's dense label map from the reference's labels on ``slices``."""
    if method == "fill-between-slices":
        return fill_between_slices(task.reference, slices)
    seeds, background = seeds_from_slices(task.reference, slices)
    if method == "grow-from-seeds":
        return grow_from_seeds(task.image, seeds, background)
    if method == "grow-from-seeds-whole":
        return grow_from_seeds(task.image, seeds, background, extent_growth=None)
    raise ValueError(f"not a baseline: {method}")


def score(prediction: sitk.Image, task: Task) -> tuple[dict[str, float], dict[str, float]]:
    """Per-structure Dice and HD95 (mm) of ``prediction`` against the task's reference."""
    from MedSegExtension.metrics import evaluate_images

    result = evaluate_images(prediction, task.reference, task.names)
    dice = {row.name: float(row.dice) for row in result.classes if row.value in task.names}
    hd95 = {row.name: float(row.hd95_mm) for row in result.classes if row.value in task.names}
    return dice, hd95


def git_state() -> dict[str, Any]:
    """The commit the numbers come from, and whether the tree differed from it."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {"commit": git("rev-parse", "HEAD") or "unknown", "dirty": bool(git("status", "--porcelain"))}


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[None]:
    """``count`` processes spinning on a CPU for the block's duration (a second user of the machine)."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def run_task(task: Task, protocols: Sequence[str], methods: Sequence[str], medseg_options: Sequence[str],
             work: Path) -> list[Row]:
    """Every method on every protocol of one task, printed as it goes."""
    rows = []
    labels = sitk.GetArrayViewFromImage(task.reference)
    for name in protocols:
        slices = choose_slices(task.image, task.reference, task.values, PROTOCOLS[name])
        crossing = float(np.mean([slices_crossing(labels == v, slices) for v in task.values]))
        for method in methods:
            row = Row(task.name, name, method, [str(s) for s in slices], crossing)
            start = time.perf_counter()
            try:
                if method == MEDSEG:
                    prediction, row.note, row.settings = run_medseg(task, slices, work / f"{task.name}-{name}",
                                                                    medseg_options)
                else:
                    prediction = run_baseline(method, task, slices)
                row.seconds = time.perf_counter() - start
                row.dice, row.hd95_mm = score(prediction, task)
            except Exception as exc:  # noqa: BLE001 - one failing method must not end the benchmark
                row.seconds = time.perf_counter() - start
                row.note = f"failed: {type(exc).__name__}: {exc}"
            rows.append(row)
            print(f"{task.name:15s} {name:11s} {len(slices):3d} slices {method:22s} Dice {row.mean_dice:.3f}  "
                  f"{row.seconds:7.1f} s {row.note}", flush=True)
    return rows


def _names(text: str | None, known: Sequence[str], what: str, default: Sequence[str]) -> list[str]:
    if text is None:
        return list(default)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise SystemExit(f"unknown {what} {unknown or text!r}; known: {', '.join(known)}")
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=tuple(SPLIT), help="the tasks to run: " +
                        "; ".join(f"{name} = {', '.join(tasks)}" for name, tasks in SPLIT.items()))
    parser.add_argument("--tasks", help="comma-separated part of the split (default: all of it)")
    parser.add_argument("--protocols", help="comma-separated (default: " + ", ".join(DEFAULT_PROTOCOLS) + ")")
    parser.add_argument("--methods", help="comma-separated (default: " + ", ".join(METHODS) + ")")
    parser.add_argument("--quick", action="store_true", help="smoke test in seconds: Colin27's left caudate, "
                        "parallel-3, MedSeg for " + " ".join(QUICK_OPTIONS) + " (not a benchmark number)")
    parser.add_argument("--with-load", type=int, default=0, metavar="N",
                        help="keep N CPU-bound processes busy during the run (the loaded-machine check); "
                             "the results get the suffix _loaded")
    parser.add_argument("--quiet-reference", type=Path, metavar="JSON",
                        help="with --with-load: the quiet run's results JSON to compare MedSeg's rows with")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument("--render", type=Path, metavar="JSON", help="run nothing: write the Markdown again from a results JSON")
    args = parser.parse_args(argv)
    if args.render is None and not args.quick and args.split is None:
        parser.error("--split (dev or test), --quick or --render is required")
    split = "dev" if args.quick else args.split
    args.split_name = split
    if split is not None:
        args.task_names = _names(args.tasks, SPLIT[split], f"{split} tasks", SPLIT[split])
        args.protocol_names = _names(args.protocols, list(PROTOCOLS), "protocols", DEFAULT_PROTOCOLS)
        args.method_names = _names(args.methods, METHODS, "methods", METHODS)
    if args.quick:
        args.task_names, args.protocol_names = ["colin27"], ["parallel-3"]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        print(f"wrote {render(args.render)}")
        return 0
    import slicer  # noqa: F401 - the slicer-core wheel's first import is slow: keep it out of the times

    report: dict[str, Any] = {
        "command": "python -m benchmarks.sparse.run " + " ".join(sys.argv[1:] if argv is None else argv),
        "split": args.split_name, "splits": {name: list(tasks) for name, tasks in SPLIT.items()},
        "split_reason": SPLIT_REASON, "git": git_state(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "load": {"before": load()},
        "selection": {"tasks": args.task_names, "protocols": args.protocol_names, "methods": args.method_names,
                      "quick": args.quick, "medseg_options": list(medseg_options(args.quick))},
        "tasks": [], "notes": [], "extra_load_processes": args.with_load,
    }
    if args.with_load:
        report["notes"].append(f"Loaded run: {args.with_load} CPU-bound process(es) spinning beside every method.")
    if args.quick:
        report["notes"].append(f"--quick smoke test: MedSeg ran with {' '.join(QUICK_OPTIONS)}; not a benchmark number.")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="medseg-sparse-bench-") as work, busy_processes(args.with_load):
        for name in args.task_names:
            try:
                task = colin27_task(QUICK_STRUCTURES, margin_mm=3.0) if args.quick else load_task(name)
            except Exception as exc:  # noqa: BLE001 - recorded, and the other tasks still run
                report["notes"].append(f"task {name} could not be loaded: {type(exc).__name__}: {exc}")
                print(f"== {name}: not loaded ({exc})", flush=True)
                continue
            info = task.info()
            if task.name in THRESHOLD_CHECKED:
                info["best_threshold_dice"], *_ = best_threshold_dice(
                    task.image, sitk.GetArrayViewFromImage(task.reference) > 0)
            report["tasks"].append(info)
            print(f"== {task.name}: {task.crop}", flush=True)
            rows += run_task(task, args.protocol_names, args.method_names, medseg_options(args.quick), Path(work))
    report["load"]["after"] = load()
    if args.quiet_reference is not None:
        quiet = json.loads(args.quiet_reference.read_text(encoding="utf-8"))
        report["loaded_vs_quiet"] = {"quiet_json": str(args.quiet_reference), "quiet_commit": quiet["git"]["commit"],
                                     "rows": loaded_vs_quiet(rows, quiet)}
    stem = ("sparse_quick" if args.quick else f"sparse_{args.split_name}") + ("_loaded" if args.with_load else "")
    json_path, md_path = write_outputs(report, rows, args.output_dir, stem)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
