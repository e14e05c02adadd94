"""Inference speed and memory, side by side in one run: MONAI's window loop as the peer, MedSeg in and out of process.

Rows (issue #13), all on the same network and the same machine in one run:

- ``monai_default_loop``: MONAI's ``sliding_window_inference`` with its defaults (overlap 0.25,
  constant blending) on the preprocessed Colin27 array — the window loop alone.
- ``monai_medseg_settings_loop``: the same loop with MedSeg's settings (overlap 0.5, Gaussian).
- ``medseg_segment``: ``Segmenter`` in this process (preprocessing, passes, restore to 1 mm, labels).
- ``medseg_segment_whole``: the same with one pass over the whole volume (``mode="whole"``).
- ``medseg_predict_process``: ``medseg predict`` from process start to written file.
- TTA: cost ratio of ``tta=True`` to the plain segmentation.
- Dice against AAL of each variant (what the field of view does to instance norm).
- CT: ``medseg predict`` on a 512×512×300 CT (the InVesalius head resampled to 0.48×0.48×0.54 mm),
  peak RSS of that process and its time; optionally a 512×512×1000 CT (the head three times).
- Cohort: N copies of Colin27 through one ``medseg predict DIR`` against one process per case.

The machine is shared: the load average before and after goes into the JSON with the commit.
Writes ``benchmarks/results/inference_speed_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from MedSegExtension.datasets.colin27 import colin27_t1_path, load_colin27_labels, load_colin27_t1
from MedSegExtension.inference.pipeline import InferenceOptions, Segmenter
from MedSegExtension.metrics import evaluate_images
from MedSegExtension.models.registry import ModelRegistry
from MedSegExtension.preprocessing import prepare_case

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def timed(function, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def run_process(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of one child process; fails loudly if the command fails."""
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    stderr = child.stderr.read().decode(errors="replace") if child.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{stderr[-2000:]}")
    return seconds, usage.ru_maxrss / 2**20  # Linux reports KiB


def medseg(*args: str) -> list[str]:
    return [sys.executable, "-m", "MedSegExtension", "predict", *args, "--progress", "none"]


def synthetic_ct(path: Path, slices: int) -> Path:
    """The InVesalius head CT on a 512×512×``slices`` grid of 0.48×0.48×0.54 mm (tiled along z past 300 slices)."""
    from MedSegExtension.datasets.invesalius import load_cranium_ct

    ct = load_cranium_ct()
    grid = sitk.Image([512, 512, 300], sitk.sitkInt16)
    grid.SetSpacing((0.48, 0.48, 0.54))
    grid.SetDirection(ct.GetDirection())
    grid.SetOrigin(ct.GetOrigin())
    head = sitk.Resample(ct, grid, sitk.Transform(), sitk.sitkLinear, -1000.0, sitk.sitkInt16)
    if slices != 300:
        array = sitk.GetArrayFromImage(head)
        tiled = np.concatenate([array] * (slices // 300 + 1))[:slices]
        tall = sitk.GetImageFromArray(tiled)
        tall.SetSpacing(grid.GetSpacing())
        tall.SetDirection(grid.GetDirection())
        tall.SetOrigin(grid.GetOrigin())
        head = tall
    sitk.WriteImage(head, str(path), False)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--cohort", type=int, default=6, help="heads in the cohort run (issue: 20)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["ct", "ct1000", "cohort", "tta"],
                        help="sections to leave out")
    parser.add_argument("--ct1000", action="store_true", help="also run the 512×512×1000 CT")
    args = parser.parse_args()
    from monai.inferers import sliding_window_inference  # the peer: imported here, never by medseg predict

    load_before = os.getloadavg()
    card = ModelRegistry().find(args.model)
    segmenter = Segmenter(card, args.device)
    device = segmenter.device
    image, reference = load_colin27_t1(), load_colin27_labels()
    case = prepare_case(image, card)
    window = tuple(card.window_size[::-1])
    tensor = torch.from_numpy(case.image)[None].to(device)
    names = {label.value: label.name for label in card.labels}

    def dice(result) -> float:
        evaluation = evaluate_images(result.labels, reference, names, prediction_source="MedSeg", reference_source="AAL")
        return round(float(evaluation.averages["foreground"]["dice"]), 4)

    def peer(overlap: float, mode: str) -> None:
        with torch.inference_mode():
            sliding_window_inference(tensor, window, 1, lambda x: torch.softmax(segmenter.network(x), 1),
                                     overlap=overlap, mode=mode, sigma_scale=0.125)
        if device.type == "cuda":
            torch.cuda.synchronize()

    peer(0.25, "constant")  # warm up both
    seconds, dices, logs = {}, {}, {}
    seconds["monai_default_loop"] = timed(lambda: peer(0.25, "constant"), args.repeats)
    seconds["monai_medseg_settings_loop"] = timed(lambda: peer(0.5, "gaussian"), args.repeats)
    variants = {"medseg_segment": InferenceOptions(device=args.device),
                "medseg_segment_whole": InferenceOptions(device=args.device, mode="whole")}
    if "tta" not in args.skip:
        variants["medseg_segment_tta"] = InferenceOptions(device=args.device, tta=True)
    for name, options in variants.items():
        results = []
        seconds[name] = timed(lambda options=options, results=results: results.append(segmenter(image, options)),
                              args.repeats)
        dices[name], logs[name] = dice(results[-1]), results[-1].log[0]
    work = Path(tempfile.mkdtemp(prefix="medseg-speed-"))
    try:
        seconds["medseg_predict_process"], _ = run_process(medseg(str(colin27_t1_path()), "-o", str(work / "c.nii.gz"),
                                                                  "--device", args.device))
        ct: dict[str, object] = {}
        if "ct" not in args.skip:
            for slices in ([300, 1000] if args.ct1000 else [300]):
                path = synthetic_ct(work / f"ct{slices}.nii", slices)
                took, peak = run_process(medseg(str(path), "-o", str(work / f"ct{slices}_labels.nii.gz"),
                                                "--device", args.device))
                ct[f"512x512x{slices}"] = {"seconds": round(took, 1), "peak_rss_gib": round(peak, 2)}
                path.unlink()
        cohort: dict[str, object] = {}
        if "cohort" not in args.skip and args.cohort > 0:
            heads = work / "heads"
            heads.mkdir()
            for n in range(args.cohort):
                shutil.copy(colin27_t1_path(), heads / f"head{n:02d}.nii.gz")
            together, _ = run_process(medseg(str(heads), "-o", str(work / "together"), "--device", args.device))
            apart = sum(run_process(medseg(str(p), "-o", str(work / f"apart_{p.name}"), "--device", args.device))[0]
                        for p in sorted(heads.iterdir()))
            cohort = {"cases": args.cohort, "one_process_seconds": round(together, 1),
                      "process_per_case_seconds": round(apart, 1), "throughput_ratio": round(apart / together, 2)}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    peer_seconds = seconds["monai_default_loop"]
    print(f"{'run':30s} {'seconds':>8s} {'× MONAI default loop':>21s} {'Dice vs AAL':>12s}")
    for name, value in seconds.items():
        print(f"{name:30s} {value:8.2f} {value / peer_seconds:21.2f} {dices.get(name, float('nan')):12.4f}")
    if "medseg_segment_tta" in seconds:
        print(f"TTA cost: ×{seconds['medseg_segment_tta'] / seconds['medseg_segment']:.2f}")
    for name, row in ct.items():
        print(f"CT {name}: {row['seconds']} s, peak RSS {row['peak_rss_gib']} GiB")
    if cohort:
        print(f"cohort of {cohort['cases']}: one process {cohort['one_process_seconds']} s, one per case "
              f"{cohort['process_per_case_seconds']} s: throughput ×{cohort['throughput_ratio']}")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                capture_output=True, text=True).stdout.strip())
    record = {
        "commit": commit, "dirty": dirty, "input": str(colin27_t1_path()), "model": f"{card.name} {card.version}",
        "model_grid": list(case.image.shape[1:][::-1]), "device": str(device), "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "ratio_to_monai_default_loop": {k: round(v / peer_seconds, 2) for k, v in seconds.items()},
        "dice_vs_aal": dices, "plans": logs,
        "tta_cost_ratio": round(seconds["medseg_segment_tta"] / seconds["medseg_segment"], 2)
        if "medseg_segment_tta" in seconds else None,
        "ct": ct, "cohort": cohort,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"inference_speed_{device.type}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
