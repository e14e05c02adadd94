"""Inference speed of ``Segmenter`` on a real 1 mm head MRI, against plain MONAI as the peer.

The peer is MONAI's ``sliding_window_inference`` called directly on the same preprocessed
array with the same network, window, overlap and Gaussian blending: the ratio shows what
MedSeg's progress/cancel/fallback wrapper and pre/post-processing cost on top of the window
loop. Also reports the cost of mirroring TTA. Prints a table; writes JSON to
``benchmarks/results/inference_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from monai.inferers import sliding_window_inference

from MedSegExtension.inference.pipeline import InferenceOptions, Segmenter
from MedSegExtension.io.volumes import read_volume
from MedSegExtension.models.registry import ModelRegistry
from MedSegExtension.preprocessing import prepare_case

RESULTS = Path(__file__).resolve().parent / "results"


def timed(function, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", default="/usr/share/mricron/templates/ch2.nii.gz")
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    image = read_volume(args.input)
    card = ModelRegistry().find(args.model)
    segmenter = Segmenter(card, args.device)
    device = segmenter.device
    case = prepare_case(image, card)
    window = tuple(card.window_size[::-1])
    tensor = torch.from_numpy(case.image)[None].to(device)

    def peer() -> None:
        with torch.inference_mode():
            sliding_window_inference(tensor, window, 1 if device.type == "cpu" else 4,
                                     lambda x: torch.softmax(segmenter.network(x), 1),
                                     overlap=0.5, mode="gaussian", sigma_scale=0.125)

    rows = {
        "monai_sliding_window_only": timed(peer, args.repeats),
        "medseg_segment": timed(lambda: segmenter(image, InferenceOptions(device=args.device)), args.repeats),
        "medseg_segment_tta": timed(lambda: segmenter(image, InferenceOptions(device=args.device, tta=True)), 1),
    }
    peer_seconds = rows["monai_sliding_window_only"]
    print(f"{'run':32s} {'seconds':>8s} {'ratio to peer':>14s}")
    for name, seconds in rows.items():
        print(f"{name:32s} {seconds:8.1f} {seconds / peer_seconds:14.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "input": args.input, "input_size": image.GetSize(), "model": f"{card.name} {card.version}",
        "model_grid": list(case.image.shape[1:][::-1]), "device": str(device),
        "torch_threads": torch.get_num_threads(), "machine": platform.machine(), "processor": platform.processor(),
        "seconds": rows, "ratio_to_peer": {k: v / peer_seconds for k, v in rows.items()},
    }
    out = RESULTS / f"inference_speed_{device.type}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
