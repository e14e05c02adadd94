"""Development check (dev tasks only): the engine's cheap candidates against Slicer's tools, per structure.

    .venv/bin/python -m benchmarks.sparse.dev_candidates --task colin27 --structures Caudate_L,Putamen_L
    .venv/bin/python -m benchmarks.sparse.dev_candidates --task mni152 --full-resolution --slicer
    .venv/bin/python -m benchmarks.sparse.dev_candidates --task jhu-dev --protocol parallel-1 --finetune

Prints each candidate's mean and per-structure Dice (growing with 6 and 26 neighbours, the
intensity model and its fit on the annotated voxels, interpolation; the propagation network, the
whole ``fine_tune`` with its network alone and its first answer, Slicer's tools on request).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import SimpleITK as sitk

from benchmarks.sparse.protocols import PROTOCOLS, choose_slices, sparse_annotation
from benchmarks.sparse.tasks import load_task
from MedSegExtension.metrics.overlap import overlap_metrics
from MedSegExtension.sparse import growing
from MedSegExtension.sparse.growing import grow_labels, growing_region
from MedSegExtension.sparse.intensity import intensity_labels
from MedSegExtension.sparse.interpolation import interpolated_labels


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="colin27")
    parser.add_argument("--structures", default="")
    parser.add_argument("--protocol", default="parallel-3")
    parser.add_argument("--slicer", action="store_true", help="also run Slicer's tools (slicer-core)")
    parser.add_argument("--finetune", action="store_true", help="also run fine_tune with its defaults")
    parser.add_argument("--propagation", action="store_true", help="also run the propagation network")
    parser.add_argument("--propagation-model", default=None, help="its folder (default: the bundled one)")
    parser.add_argument("--propagation-mirror", action="store_true", help="propagation with mirroring TTA")
    parser.add_argument("--full-resolution", action="store_true", help="grow without coarsening large regions")
    parser.add_argument("--time-cap", type=float, default=None, help="fine_tune's time budget (a cap)")
    args = parser.parse_args()
    task = load_task(args.task, [s for s in args.structures.split(",") if s] or None)
    slices = choose_slices(task.image, task.reference, task.values, PROTOCOLS[args.protocol])
    annotation = sparse_annotation(task.image, task.reference, slices)
    image = sitk.GetArrayFromImage(task.image)
    truth = sitk.GetArrayFromImage(task.reference)
    spacing = task.image.GetSpacing()
    results = {}
    for connectivity in (6, 26):  # at full resolution when --full-resolution, else as the engine grows
        start = time.perf_counter()
        if args.full_resolution:
            growing.MAX_GRAPH_BYTES = 1 << 62
        results[f"grow-{connectivity}"] = grow_labels(image, annotation, spacing, connectivity)
        print(f"grow, {connectivity} neighbours: {time.perf_counter() - start:.1f} s on {image.shape}")
    results["intensity"], fit = intensity_labels(image, annotation, growing_region(annotation), task.values)
    print("intensity model's Dice on the annotated voxels: " + " ".join(f"{d:.2f}" for d in fit.values()))
    results["interpolation"] = interpolated_labels(annotation, task.values, spacing)
    if args.propagation:
        from MedSegExtension.sparse.propagation import propagate
        from MedSegExtension.sparse.propagation_model import load_propagation_model

        start = time.perf_counter()
        model = load_propagation_model(args.propagation_model)
        results["propagation"] = propagate(image, annotation, task.image.GetSpacing(), task.values, model=model,
                                             mirror=args.propagation_mirror)
        print(f"propagation: {time.perf_counter() - start:.1f} s (loading included)")
    if args.finetune:
        from MedSegExtension.models.registry import ModelRegistry
        from MedSegExtension.sparse.finetune import FineTuneSettings, fine_tune

        start = time.perf_counter()
        result = fine_tune(task.image, annotation, task.classes,
                           FineTuneSettings(base_model=ModelRegistry().default_name(), time_budget=args.time_cap))
        print(f"fine_tune: {time.perf_counter() - start:.0f} s, {result.steps} steps ({result.stopped_because}); "
              f"choices {result.choices}; training {result.card.training}")
        results["medseg"] = sitk.GetArrayFromImage(result.labels)
        results["medseg-network"] = sitk.GetArrayFromImage(result.network_labels)
        results["medseg-first"] = sitk.GetArrayFromImage(result.first_labels)
    if args.slicer:
        from benchmarks.sparse.run import run_baseline

        for method in ("fill-between-slices", "grow-from-seeds", "grow-from-seeds-whole"):
            results[method] = sitk.GetArrayFromImage(run_baseline(method, task, slices))
    for name, labels in results.items():
        dice = [overlap_metrics(labels == v, truth == v).dice for v in task.values]
        print(f"{args.task} {args.protocol} {name:20s} mean {np.mean(dice):.3f}  " + " ".join(f"{d:.3f}" for d in dice))


if __name__ == "__main__":
    main()
