"""``medseg demo``: segment the demo head MRI with the bundled default model; the README's main job.

Writes ``<output>/<name>.seg.nrrd`` (open it in Slicer), ``<name>.nii.gz`` (a plain label map)
and ``<name>.png`` (three orthogonal slices with the segments and a legend), and says where
they went and how long it took.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import InputError
from ..progress import CancelToken
from .common import add_inference_arguments, inference_options, make_display

# Colin27 (ch2), a real 1 mm T1 MRI, installed by scripts/install_data.sh from Debian's mricron-data.
DEMO_VOLUMES = (Path("/usr/share/mricron/templates/ch2.nii.gz"),)


def demo_volume() -> Path:
    for candidate in DEMO_VOLUMES:
        if candidate.is_file():
            return candidate
    raise InputError(
        f"{DEMO_VOLUMES[0]}: demo volume not installed; run `bash scripts/install_data.sh` (or `make demo`), "
        "or pass --input with your own volume"
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="segment the demo volume with the bundled model", description=__doc__)
    parser.add_argument("--input", help="volume to segment instead of the demo head MRI")
    parser.add_argument("--output-dir", default="output/demo", help="where to write results (default output/demo)")
    add_inference_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, cancel: CancelToken) -> int:
    from ..inference.pipeline import Segmenter
    from ..io.segmentation_files import write_labelmap
    from ..io.volumes import read_volume
    from ..models.registry import ModelRegistry
    from ..visualization import render_overlay

    start = time.perf_counter()
    source = Path(args.input) if args.input else demo_volume()
    options = inference_options(args)
    card = ModelRegistry().find(args.model)
    image = read_volume(source)
    display = make_display(args)
    try:
        result = Segmenter(card, options.device, log=display.log)(image, options, progress=display, cancel=cancel)
    finally:
        display.close()
    stem = source.name.split(".")[0] + f"_{card.name}"
    folder = Path(args.output_dir)
    written = [
        write_labelmap(result.labels, folder / f"{stem}.seg.nrrd", card.labels),
        write_labelmap(result.labels, folder / f"{stem}.nii.gz"),
        render_overlay(image, result.labels, card.labels, folder / f"{stem}.png",
                       title=f"{source.name} — {card.name} {card.version} ({result.device})"),
    ]
    print(f"input:  {source}")
    print(f"model:  {card.name} {card.version} ({len(card.labels)} classes) on {result.device}")
    for path in written:
        print(f"wrote   {path}")
    print(f"segmentation took {result.seconds:.1f} s; total {time.perf_counter() - start:.1f} s")
    return 0
