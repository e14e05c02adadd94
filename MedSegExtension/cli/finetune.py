"""``medseg finetune``: learn from a few labelled slices of one volume, save a user model, predict it all.

The annotation is a label map on the volume's grid (``.seg.nrrd`` from Slicer keeps segment
names and colours; ``.nii.gz`` works too). Which of its voxels count is said by one of
``--slices`` (complete slices: every voxel of a listed slice counts, unpainted ones as
background), ``--mask`` (a volume of labelled voxels) or ``--scribbles`` (only painted voxels
count; a background segment marks negative strokes). The annotation file is only read.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from ..progress import CancelToken
from .common import add_memory_argument, apply_memory_limit, check_outputs, make_display

if TYPE_CHECKING:
    from ..sparse.finetune import FineTuneSettings

DEFAULT_COLORS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                  (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212))


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("finetune", help="fine-tune on sparse slices and predict the volume",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="the volume")
    parser.add_argument("--labels", required=True, help="annotation label map (.seg.nrrd, .nii.gz, .nrrd)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--slices", help="annotated slices, e.g. 'k:40,60;j:100' or 'axial:40;coronal:90'")
    which.add_argument("--mask", help="volume whose non-zero voxels are the labelled ones")
    which.add_argument("--scribbles", action="store_true", help="only painted voxels count")
    parser.add_argument("--background-value", type=int,
                        help="with --scribbles: the label value of background strokes "
                             "(default: the segment named 'background')")
    base = parser.add_mutually_exclusive_group()
    base.add_argument("--model", help="base model to start from (default: the bundled default model)")
    base.add_argument("--from-scratch", action="store_true", help="start from random weights")
    parser.add_argument("--name", required=True, help="name of the new user model (saved as NAME, NAME-v2, …)")
    parser.add_argument("--time-budget", type=float,
                        help="cap on the seconds of a round (default 120 on CPU, 30 on GPU); the steps, not the "
                             "clock, normally end training")
    parser.add_argument("--max-steps", type=int,
                        help="training steps (default: set by the number of structures, so a busy CPU "
                             "does not change the result)")
    parser.add_argument("--use-unrelated-base", action="store_true",
                        help="fine-tune the base model even when it knows none of the segments (by name); "
                             "by default training then starts from scratch")
    parser.add_argument("--working-spacing", default="auto", choices=("auto", "base", "native"),
                        help="grid to train and predict on: the base model's spacing (auto, when there is a "
                             "base model) or the image's own voxels (native; auto from scratch)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", help="also write the dense prediction (.seg.nrrd, .nii.gz)")
    parser.add_argument("--first-output",
                        help="also write the first answer (before training: region growing or interpolation per "
                             "structure) as soon as it is ready, in seconds (.seg.nrrd, .nii.gz)")
    parser.add_argument("--uncertainty", help="also write the uncertainty map")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--progress", default="auto", choices=("auto", "bar", "json", "none"))
    add_memory_argument(parser)
    parser.set_defaults(run=run)


def class_info_for(info, values, base_card):
    """Segment names/colours: from the file, else the base model's card by value, else generated."""
    from ..models.card import LabelInfo

    by_value = {label.value: label for label in info}
    card_by_value = {label.value: label for label in base_card.labels} if base_card else {}
    result = []
    for index, value in enumerate(values):
        label = by_value.get(value) or card_by_value.get(value)
        result.append(label or LabelInfo(value, f"Segment {value}", DEFAULT_COLORS[index % len(DEFAULT_COLORS)]))
    return result


def load_annotation(args: argparse.Namespace, image):
    """The sparse annotation and the segment info the file carries."""
    from ..io.segmentation_files import read_labelmap
    from ..io.volumes import read_image
    from ..sparse.annotations import from_mask, from_scribbles, from_slices, parse_slice_spec

    labels, info = read_labelmap(args.labels)
    if args.slices is not None:  # '' too: parse_slice_spec says "no slice given"
        return from_slices(image, labels, parse_slice_spec(args.slices, image), args.labels), info
    if args.mask:
        return from_mask(image, labels, read_image(args.mask), args.labels, args.mask), info
    background = args.background_value
    if background is None:
        named = [label.value for label in info if label.name.strip().lower() == "background"]
        if not named:
            raise InputError(f"{args.labels}: --scribbles needs --background-value or a segment named 'background'")
        background = named[0]
    info = [label for label in info if label.value != background]
    return from_scribbles(image, labels, background, args.labels), info


def check_run_arguments(args: argparse.Namespace) -> None:
    """Everything that can be refused before the run: the new model's name, budgets, output paths."""
    from ..models.registry import check_user_model_name

    check_user_model_name(args.name)
    if args.time_budget is not None and not args.time_budget > 0:
        raise InputError(f"--time-budget {args.time_budget:g}: must be a positive number of seconds")
    if args.max_steps is not None and args.max_steps < 1:
        raise InputError(f"--max-steps {args.max_steps}: must be at least 1")
    check_outputs([("-o", args.output), ("--first-output", args.first_output), ("--uncertainty", args.uncertainty)],
                  [("INPUT", args.input), ("--labels", args.labels), ("--mask", args.mask)], args.overwrite)


def settings_from_args(args: argparse.Namespace) -> FineTuneSettings:
    """The fine-tuning settings ``medseg finetune`` runs with; the sparse benchmark calls this too.

    The base model: ``--model``, none with ``--from-scratch``, else the bundled default model.
    """
    from ..models.registry import ModelRegistry
    from ..sparse.finetune import FineTuneSettings

    base_name = None if args.from_scratch else (args.model or ModelRegistry().default_name())
    return FineTuneSettings(base_model=base_name, time_budget=args.time_budget, max_steps=args.max_steps,
                            device=args.device, seed=args.seed, working_spacing=args.working_spacing,
                            use_unrelated_base=args.use_unrelated_base)


def run(args: argparse.Namespace, cancel: CancelToken) -> int:
    from ..io.segmentation_files import write_labelmap
    from ..io.volumes import check_image_output, read_volume, write_image
    from ..models.registry import ModelRegistry
    from ..sparse.finetune import fine_tune, save_finetuned

    check_run_arguments(args)
    check_image_output(args.uncertainty, "--uncertainty")
    apply_memory_limit(args)
    image = read_volume(args.input)
    annotation, info = load_annotation(args, image)
    settings = settings_from_args(args)
    base_name = settings.base_model
    base_card = ModelRegistry().find(base_name) if base_name else None
    classes = class_info_for(info, annotation.classes, base_card)
    display = make_display(args)

    def write_first_answer(labels) -> None:
        write_labelmap(labels, args.first_output, classes)
        display.event("first_answer", {"path": str(args.first_output)}, f"wrote the first answer to {args.first_output}")

    try:
        result = fine_tune(image, annotation, classes, settings, progress=display, cancel=cancel, name=args.name,
                           on_first_answer=write_first_answer if args.first_output else None)
        cancel.raise_if_cancelled()
        card = save_finetuned(result, args.name)
        if args.output:
            write_labelmap(result.labels, args.output, card.labels)
        if args.uncertainty:
            write_image(result.uncertainty, args.uncertainty)
    finally:
        display.close()
    if display.mode == "json":  # a machine-readable summary for background callers (the Slicer panel)
        display.result({
            "model": card.name, "version": card.version, "folder": str(card.folder), "steps": result.steps,
            "seconds": round(result.seconds, 1), "stopped_because": result.stopped_because,
            "held_out_slice": str(result.held_out) if result.held_out else None,
            "held_out_dice": result.held_out_dice, "reused_classes": result.reused_classes,
            "structure_choices": result.choices, "first_answer_choices": result.first_choices,
            "suggestions": {axis: [{"index": i, "score": s} for i, s in picks] for axis, picks in result.suggestions.items()},
        })
    skipped = result.card.training.get("unrelated_base_model_skipped")
    if skipped:
        print(f"base model {skipped} knows none of the segments by name: trained from scratch "
              "(--use-unrelated-base to fine-tune it anyway)")
        base_card = None
    start = f"from {base_card.name} {base_card.version}" if base_card else "from scratch"
    print(f"trained {start} for {result.steps} steps in {result.seconds:.0f} s ({result.stopped_because})")
    if result.reused_classes:
        print(f"classes that kept the base model's output channel: {', '.join(result.reused_classes)}")
    if result.choices:
        print("per structure: " + ", ".join(f"{name}: {how}" for name, how in result.choices.items()))
    if result.held_out is not None:
        print(f"held-out slice {result.held_out}: mean Dice {result.held_out_dice:.3f}")
    else:
        print("no held-out check (needs 3 or more parallel slices, each class present in the others)")
    print(f"saved model {card.name} version {card.version} in {card.folder}")
    for path in (args.output, args.uncertainty):
        if path:
            print(f"wrote {Path(path)}")
    print_suggestions(result.suggestions)
    return 0


def print_suggestions(suggestions) -> None:
    print("slices to annotate next (least certain first):")
    for axis, picks in suggestions.items():
        listed = ", ".join(f"{index} ({score:.2f})" for index, score in picks) or "none"
        print(f"  {axis}: {listed}")
