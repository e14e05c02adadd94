"""``medseg predict``: segment a volume with a model and write the label map or Slicer segmentation."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from ..errors import InputError
from ..io.atomic import atomic_output, compound_suffix
from ..io.volumes import check_image_output, check_volume, read_image, squeeze_to_3d, write_image
from ..progress import CancelToken
from .common import (
    add_inference_arguments,
    apply_memory_limit,
    check_outputs,
    inference_options,
    make_display,
)

OUTPUT_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".mha")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="segment a volume", description=__doc__,
        epilog="OUTPUT ending in .seg.nrrd is a Slicer segmentation with named, coloured segments. "
               "A cohort: 'medseg predict DIR -o OUTDIR' or 'medseg predict --list cases.txt -o OUTDIR' loads the "
               "model once, names outputs after inputs, skips finished ones, and is sharded by RANK/WORLD_SIZE "
               "(torchrun) or a SLURM array.",
    )
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="volume file or DICOM folder; give one per input channel for multi-channel models; "
                             "or a folder of cases")
    parser.add_argument("-o", "--output", required=True,
                        help="output label map (.nii.gz, .nrrd, .seg.nrrd), or a folder for a cohort")
    parser.add_argument("--list", help="cohort: a text file with one case a line (channels separated by tabs)")
    parser.add_argument("--output-suffix", default=".nii.gz", choices=OUTPUT_SUFFIXES,
                        help="cohort: format of the outputs (default .nii.gz)")
    parser.add_argument("--sliding-window", action="store_true",
                        help="always use the card's windows, never one pass over the whole volume")
    parser.add_argument("--series", help="DICOM SeriesInstanceUID to read (default: the largest series; required with two of equal size)")
    parser.add_argument("--transform", help="ITK transform file: segment and write in the frame it defines "
                        "(e.g. the rotated frame a physician labelled in with ITK-SNAP)")
    parser.add_argument("--invert", action="store_true", help="use the inverse of --transform")
    parser.add_argument("--probabilities", help="also write per-class probabilities (multi-component image)")
    parser.add_argument("--uncertainty", help="also write the normalized-entropy uncertainty map")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_inference_arguments(parser)
    parser.set_defaults(run=run)


def read_inputs(paths: list[str], series: str | None):
    images = []
    for path in paths:
        image = squeeze_to_3d(read_image(path, series))
        check_volume(image, path)
        images.append(image)
    return images


def apply_frame(images, transform_path: str | None, invert: bool):
    """Resample the inputs into the frame of an ITK transform file, when one is given."""
    if transform_path is None:
        if invert:
            raise InputError("--invert needs --transform")
        return images
    from ..transforms import read_transform, resample_into_frame

    transform = read_transform(transform_path)
    if invert:
        transform = transform.GetInverse()
    first = resample_into_frame(images[0], transform, interpolator="linear")
    rest = [resample_into_frame(image, transform, interpolator="linear", reference=first) for image in images[1:]]
    return [first, *rest]


def write_result(result, card, output: str, probabilities: str | None, uncertainty: str | None,
                 cancel: CancelToken | None = None) -> list[Path]:
    """Write every output, all or none: each is staged beside its target and the renames come last,
    so a cancel (or an error) between two outputs leaves none of them."""
    from ..io.segmentation_files import write_labelmap

    outputs = [(Path(output), lambda path: write_labelmap(result.labels, path, card.labels))]
    if probabilities:
        outputs.append((Path(probabilities), lambda path: write_image(result.probabilities, path)))
    if uncertainty:
        outputs.append((Path(uncertainty), lambda path: write_image(result.uncertainty, path)))
    with contextlib.ExitStack() as staged:
        for target, write in outputs:
            write(staged.enter_context(atomic_output(target)))
            if cancel is not None:
                cancel.raise_if_cancelled()
    return [target for target, _ in outputs]


def run(args: argparse.Namespace, cancel: CancelToken) -> int:
    from ..inference.pipeline import Segmenter
    from ..models.registry import ModelRegistry
    from .predict_cohort import is_cohort, run_cohort_command

    apply_memory_limit(args)
    if is_cohort(args, OUTPUT_SUFFIXES):
        options = inference_options(args)
        options.mode = "windows" if args.sliding_window else options.mode
        return run_cohort_command(args, cancel, options, ModelRegistry().find(args.model), read_inputs, write_result)
    if not args.inputs:
        raise InputError("give an input volume (or a folder of cases, or --list)")
    if compound_suffix(Path(args.output)) not in OUTPUT_SUFFIXES:
        raise InputError(f"{args.output}: unsupported output format (use {', '.join(OUTPUT_SUFFIXES)})")
    check_outputs([("-o", args.output), ("--probabilities", args.probabilities), ("--uncertainty", args.uncertainty)],
                  [*(("INPUT", path) for path in args.inputs), ("--transform", args.transform)], args.overwrite)
    check_image_output(args.probabilities, "--probabilities")
    check_image_output(args.uncertainty, "--uncertainty")
    options = inference_options(args, probabilities=bool(args.probabilities), uncertainty=bool(args.uncertainty))
    options.mode = "windows" if args.sliding_window else options.mode
    card = ModelRegistry().find(args.model)
    images = apply_frame(read_inputs(args.inputs, args.series), args.transform, args.invert)
    display = make_display(args)
    try:
        segmenter = Segmenter(card, options.device, log=display.log)
        result = segmenter(images, options, progress=display, cancel=cancel)
        cancel.raise_if_cancelled()
        written = write_result(result, card, args.output, args.probabilities, args.uncertainty, cancel)
    finally:
        display.close()
    if display.mode == "json":
        display.result({"model": card.name, "version": card.version, "sha256": card.sha256, "device": result.device,
                        "seconds": round(result.seconds, 2), "outputs": [str(path) for path in written]})
    for path in written:
        print(f"wrote {path}")
    print(f"segmented with {card.name} {card.version} on {result.device} in {result.seconds:.1f} s")
    return 0
