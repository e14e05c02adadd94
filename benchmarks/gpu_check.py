"""The GPU proof of issue #13, run by ``benchmarks/gpu_check.sh`` on a machine with an NVIDIA GPU.

Checks, each failing loudly (a non-zero exit with the reason) rather than recording a failure:

1. Colin27 on CUDA in fp32 (``amp=False``) and bf16 autocast: seconds (warm), Dice against AAL,
   agreement of the two label maps; bf16 must agree with fp32 on ≥ 99 % of the voxels and lose
   ≤ 0.01 Dice. The same for one whole-volume pass, and bf16 with TTA.
2. A real out-of-memory error: the process's CUDA memory is capped (``set_per_process_memory_fraction``)
   below what a whole-volume pass needs; the segmentation must log the fallback and still agree
   with the fp32 windowed result on ≥ 99.9 % of the voxels.
3. One sparse fine-tuning round (``medseg finetune --device cuda``, a fresh process) on the
   whole Colin27 head annotated on three slices per structure: seconds and Dice.

Writes ``benchmarks/results/gpu_check_cuda.json`` with the commit, the GPU and every number.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def fail(message: str) -> None:
    raise SystemExit(f"gpu_check FAILED: {message}")


def main() -> int:
    if not torch.cuda.is_available():
        fail(f"torch {torch.__version__} sees no CUDA GPU (torch.version.cuda={torch.version.cuda})")
    from MedSegExtension.datasets.colin27 import load_colin27_labels, load_colin27_t1
    from MedSegExtension.inference.pipeline import InferenceOptions, Segmenter
    from MedSegExtension.metrics import evaluate_images
    from MedSegExtension.models.registry import ModelRegistry

    card = ModelRegistry().find(None)
    segmenter = Segmenter(card, "cuda")
    image, reference = load_colin27_t1(), load_colin27_labels()
    names = {label.value: label.name for label in card.labels}

    def run(**options):
        segmenter.device = torch.device("cuda")
        segmenter.network.to("cuda")
        torch.cuda.synchronize()
        start = time.perf_counter()
        result = segmenter(image, InferenceOptions(device="cuda", **options))
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        dice = evaluate_images(result.labels, reference, names, prediction_source="MedSeg",
                               reference_source="AAL").averages["foreground"]["dice"]
        return result, {"seconds": round(seconds, 3), "dice_vs_aal": round(float(dice), 4), "device": result.device,
                        "plan": result.log[0], "log": result.log[1:]}

    def agreement(a, b) -> float:
        return float((sitk.GetArrayViewFromImage(a.labels) == sitk.GetArrayViewFromImage(b.labels)).mean())

    record: dict[str, object] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                                 "cuda": torch.version.cuda, "bf16_supported": torch.cuda.is_bf16_supported()}
    run(amp=False)  # warm-up: CUDA context, cuDNN autotuning
    fp32, record["fp32"] = run(amp=False)
    bf16, record["bf16"] = run(amp=True)
    record["bf16_agreement_with_fp32"] = round(agreement(bf16, fp32), 5)
    _, record["fp32_whole"] = run(amp=False, mode="whole")
    _, record["bf16_whole"] = run(amp=True, mode="whole")
    _, record["bf16_tta"] = run(amp=True, tta=True)
    record["tta_cost_ratio"] = round(record["bf16_tta"]["seconds"] / record["bf16"]["seconds"], 2)
    if record["bf16_agreement_with_fp32"] < 0.99:
        fail(f"bf16 agrees with fp32 on only {record['bf16_agreement_with_fp32']:.4f} of the voxels")
    if record["bf16"]["dice_vs_aal"] < record["fp32"]["dice_vs_aal"] - 0.01:
        fail(f"bf16 Dice {record['bf16']['dice_vs_aal']} vs fp32 {record['fp32']['dice_vs_aal']}")

    # 2. A real CUDA out-of-memory error, not a simulated one.
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    cap = 48 * 2**20  # below one whole-volume pass of the 2 mm head (~0.5 GiB in fp32)
    torch.cuda.set_per_process_memory_fraction(cap / total, 0)
    try:
        capped, record["forced_oom"] = run(amp=False, mode="whole")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
        torch.cuda.empty_cache()
    messages = record["forced_oom"]["log"]
    if not any("out of memory" in m for m in messages):
        fail(f"capping CUDA memory at {cap >> 20} MiB raised no out-of-memory fallback: {messages}")
    record["forced_oom"]["agreement_with_fp32_windows"] = round(agreement(capped, fp32), 5)
    if record["forced_oom"]["agreement_with_fp32_windows"] < 0.999:
        fail(f"after the OOM fallback the labels agree with fp32 windows on only "
             f"{record['forced_oom']['agreement_with_fp32_windows']:.4f}")

    # 3. One sparse round on the GPU, as a user runs it.
    from benchmarks.sparse.round_time import annotated_head
    from MedSegExtension.io.segmentation_files import read_labelmap

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        volume, labels, spec, full = annotated_head(folder)
        output = folder / "gpu-round.seg.nrrd"
        command = [sys.executable, "-m", "MedSegExtension", "finetune", str(volume), "--labels", str(labels),
                   "--slices", spec, "--name", "gpu-round", "--device", "cuda", "-o", str(output), "--progress", "none"]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, MEDSEG_HOME=str(folder / "h")))
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            fail(f"medseg finetune --device cuda exited {done.returncode}: {done.stderr.strip()[-800:]}")
        prediction, _ = read_labelmap(output)
        structures = {value: f"class {value}" for value in range(1, 9)}
        scores = evaluate_images(prediction, full, structures)
        record["sparse_round"] = {"seconds": round(seconds, 1), "slices": spec,
                                  "mean_dice": round(float(np.mean([c.dice for c in scores.classes
                                                                    if c.value in structures])), 3),
                                  "engine_output": done.stdout.strip().splitlines()[-5:]}

    record["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                      text=True).stdout.strip()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "gpu_check_cuda.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
