"""``medseg suggest``: the slices where a model is least sure, to annotate next."""

from __future__ import annotations

import argparse

from ..progress import CancelToken
from .finetune import print_suggestions


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("suggest", help="slices to annotate next", description=__doc__)
    parser.add_argument("input", help="the volume")
    parser.add_argument("--model", required=True, help="model name or folder (e.g. one made by medseg finetune)")
    parser.add_argument("--count", type=int, default=3, help="slices per axis (default 3)")
    parser.add_argument("--annotated", help="slices already annotated (default: those recorded in the model card)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, cancel: CancelToken) -> int:
    import json

    import SimpleITK as sitk

    from ..inference.pipeline import InferenceOptions, Segmenter
    from ..io.volumes import read_volume
    from ..models.registry import ModelRegistry
    from ..sparse.annotations import parse_slice_spec
    from ..sparse.suggest import structure_region, suggest_slices

    image = read_volume(args.input)
    card = ModelRegistry().find(args.model)
    recorded = ";".join(card.training.get("annotated_slices") or [])
    spec = args.annotated or recorded
    annotated = parse_slice_spec(spec, image, "--annotated") if spec else []
    result = Segmenter(card, args.device)(image, InferenceOptions(device=args.device, uncertainty=True), cancel=cancel)
    labels = sitk.GetArrayFromImage(result.labels)
    picks = suggest_slices(sitk.GetArrayFromImage(result.uncertainty), annotated, args.count,
                           region=structure_region(labels))
    if args.json:
        print(json.dumps({axis: [{"index": i, "score": s} for i, s in p] for axis, p in picks.items()}))
    else:
        print_suggestions(picks)
    return 0
