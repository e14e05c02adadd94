"""One sparse fine-tuning round on a whole 1 mm head, timed end to end as a user runs it.

The issue's targets: one round <= 120 s on 2 CPU cores for a 1 mm head volume, and a first
dense answer (before any training: ``--first-output``) in <= 15 s. This runs
``medseg finetune`` (a fresh process: start-up, reading, fine-tuning, whole-volume prediction,
saving the model and the dense segmentation) on the uncropped Colin27 T1 (181 x 217 x 181 at
1 mm), annotated on the ``parallel-3`` slices of the eight AAL structures, once from the bundled
model and once from scratch, with the default time budget. Writes
``benchmarks/results/sparse_round_time.{json,md}``::

    .venv/bin/python -m benchmarks.sparse.round_time
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

RESULTS = Path(__file__).resolve().parents[1] / "results"
TARGET_SECONDS = 120.0
FIRST_ANSWER_TARGET_SECONDS = 15.0


def annotated_head(folder: Path) -> tuple[Path, Path, str, sitk.Image]:
    """The whole Colin27 head, a label file painted on the parallel-3 slices, their spec and the full reference."""
    from benchmarks.sparse.protocols import PROTOCOLS, choose_slices
    from benchmarks.sparse.tasks import COLIN27_STRUCTURES, colin27_task, label_infos
    from MedSegExtension.datasets.colin27 import load_colin27_t1
    from MedSegExtension.io.segmentation_files import write_labelmap

    task = colin27_task()
    head = load_colin27_t1()
    full = sitk.Resample(task.reference, head, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    slices = choose_slices(task.image, task.reference, task.values, PROTOCOLS["parallel-3"])
    offset = task.crop_start[2]  # parallel slices are axial (k); the crop shifts k by its start
    indices = sorted({ref.index + offset for ref in slices})
    labels = sitk.GetArrayFromImage(full)
    painted = np.zeros_like(labels)
    painted[indices] = labels[indices]
    annotation = sitk.GetImageFromArray(painted)
    annotation.CopyInformation(head)
    volume, labels_path = folder / "colin27.nii.gz", folder / "annotation.seg.nrrd"
    sitk.WriteImage(head, str(volume))
    write_labelmap(annotation, labels_path, label_infos(COLIN27_STRUCTURES))
    return volume, labels_path, "k:" + ",".join(map(str, indices)), full


def run_round(volume: Path, labels: Path, spec: str, folder: Path, scratch: bool) -> dict[str, object]:
    name = "round-scratch" if scratch else "round-finetuned"
    output = folder / f"{name}.seg.nrrd"
    first = folder / f"{name}-first.seg.nrrd"
    command = [sys.executable, "-m", "MedSegExtension.cli.main", "finetune", str(volume), "--labels", str(labels),
               "--slices", spec, "--name", name, "-o", str(output), "--first-output", str(first),
               "--progress", "json"]
    if scratch:
        command.append("--from-scratch")
    start = time.perf_counter()
    first_seconds = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                          env=dict(os.environ, MEDSEG_HOME=str(folder / "home"))) as process:
        errors = []
        for line in process.stderr:  # the JSON progress protocol: the first answer is announced when written
            errors.append(line)
            if first_seconds is None and line.startswith('{"first_answer"'):
                first_seconds = time.perf_counter() - start
        stdout = process.stdout.read()
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"medseg finetune failed ({process.returncode}): {''.join(errors)[-500:]}")
    return {"method": "medseg-scratch" if scratch else "medseg-finetuned", "seconds": round(seconds, 1),
            "first_answer_seconds": None if first_seconds is None else round(first_seconds, 1),
            "engine_output": stdout.strip().splitlines(), "output": output, "first_output": first}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from MedSegExtension.io.segmentation_files import read_labelmap
    from MedSegExtension.metrics import evaluate_images

    rows = []
    before = [round(v, 2) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        volume, labels, spec, reference = annotated_head(folder)
        for scratch in (False, True):
            row = run_round(volume, labels, spec, folder, scratch)
            names = {value: f"class {value}" for value in range(1, 9)}
            for key in ("output", "first_output"):
                prediction, _ = read_labelmap(row.pop(key))
                scores = evaluate_images(prediction, reference, names)
                dice = round(float(np.mean([c.dice for c in scores.classes if c.value in names])), 3)
                row["mean_dice" if key == "output" else "first_answer_mean_dice"] = dice
            rows.append(row)
            first = row["first_answer_seconds"]
            print(f"{row['method']:18s} {row['seconds']:7.1f} s  mean Dice {row['mean_dice']:.3f}  "
                  f"(target <= {TARGET_SECONDS:.0f} s: {'met' if row['seconds'] <= TARGET_SECONDS else 'NOT met'}); "
                  f"first answer at {first} s, Dice {row['first_answer_mean_dice']:.3f} "
                  f"(target <= {FIRST_ANSWER_TARGET_SECONDS:.0f} s: "
                  f"{'met' if first is not None and first <= FIRST_ANSWER_TARGET_SECONDS else 'NOT met'})", flush=True)
    from benchmarks.sparse.run import git_state

    report = {
        "command": "python -m benchmarks.sparse.round_time", "git": git_state(),
        "load": {"before": before, "after": [round(v, 2) for v in os.getloadavg()]},
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "volume": "Colin27 ch2 T1, whole head, 181x217x181 at 1 mm",
        "slices": spec, "target_seconds": TARGET_SECONDS, "first_answer_target_seconds": FIRST_ANSWER_TARGET_SECONDS,
        "rows": rows,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "sparse_round_time.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = ["# One sparse round on a whole 1 mm head", "",
             f"Command: `{report['command']}`. Commit `{report['git']['commit']}`; created {report['created']}, "
             f"{report['machine']['cpus']} CPU cores; load average before {before}, after {report['load']['after']}. "
             "`medseg finetune` end to end "
             f"(process start to saved model and segmentation), default time budget, on {report['volume']}; "
             f"slices `{spec}` (parallel-3 of the eight AAL structures). Dice: mean over the eight structures "
             "against AAL on the whole head. First answer: when the engine announced `--first-output` written.", "",
             "| method | round seconds (target <= 120) | mean Dice | first answer seconds (target <= 15) | "
             "first answer mean Dice |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['seconds']:.1f} | {r['mean_dice']:.3f} | {r['first_answer_seconds']} | "
              f"{r['first_answer_mean_dice']:.3f} |" for r in rows]
    (args.output_dir / "sparse_round_time.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.output_dir / 'sparse_round_time.json'} and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
