"""``medseg evaluate PRED REF``: per-class metrics of a prediction against a reference.

PRED and REF are two label-map files (.nii, .nii.gz, .nrrd, .mha, .seg.nrrd) or two folders
whose files are matched by name (batch: per-case and summary tables). ``--labels`` names the
classes: a model (folder or name) or a text/JSON file mapping value → name.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from ..errors import InputError, ModelError
from ..progress import CancelToken

# Slicer colour tables and simple maps: "1 Liver", "1,Liver", "1: Liver", "1 Liver 230 80 80 255"
_LINE = re.compile(r"^\s*(-?\d+)\s*[\s,:=;]\s*(.+?)\s*$")
_COLOR_TAIL = re.compile(r"^(.*?)[\s,;]+(\d{1,3})[\s,;]+(\d{1,3})[\s,;]+(\d{1,3})(?:[\s,;]+\d{1,3})?$")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="compare a predicted label map with a reference (Dice, IoU, HD95, ...)",
        description=(
            "Per-class Dice, IoU, precision, recall, volume difference, misclassification rate, FP/FN ratio, "
            "HD95 and ASSD (mm), and the confusion matrix. The reference defines the grid; a prediction on "
            "another grid is resampled onto it (nearest neighbour). Two folders are matched by file name."
        ),
    )
    parser.add_argument("prediction", metavar="PRED", help="predicted label map, or a folder of them")
    parser.add_argument("reference", metavar="REF", help="reference label map, or a folder of them")
    parser.add_argument(
        "--labels", metavar="CARD_OR_MAP",
        help="class names: a model folder or name (model.json), or a text/JSON file mapping value to name",
    )
    parser.add_argument(
        "--image", metavar="IMAGE",
        help="intensity volume shown in the report (a folder of them for batch, matched by case name)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--csv", metavar="FILE", help="write the results as CSV")
    parser.add_argument("--report", metavar="DIR", help="write a self-contained HTML report DIR/report.html")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --json/--csv files and report")
    parser.add_argument("--slices", type=int, default=3, metavar="N", help="report slices per axis (default 3)")
    parser.add_argument("--no-surface", action="store_true", help="skip HD95/HD/ASSD (faster)")
    parser.add_argument("--progress", choices=("auto", "bar", "json", "none"), default="auto", help="progress display")
    parser.set_defaults(run=run)


def load_label_names(spec: str) -> tuple[dict[int, str], dict[int, tuple[int, int, int]]]:
    """Names and colours by label value from a model (folder or name) or a text/JSON map."""
    path = Path(spec)
    if path.is_file():
        text = _read_text(path)
        if path.suffix.lower() == ".json" or text.lstrip().startswith(("{", "[")):
            return _from_json(text, path)
        return _from_text(text, path)
    from ..models.card import CARD_FILE, ModelCard

    try:
        if (path / CARD_FILE).is_file():
            card = ModelCard.load(path)  # no need to import torch for a folder
        else:
            from ..models.registry import ModelRegistry

            card = ModelRegistry().find(spec)
    except ModelError as exc:
        raise InputError(f"{spec}: not a label map file, model folder or known model ({exc})") from None
    return {lab.value: lab.name for lab in card.labels}, {lab.value: tuple(lab.color) for lab in card.labels}  # type: ignore[misc]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read label names ({exc})") from None


def _from_json(text: str, path: Path) -> tuple[dict[int, str], dict[int, tuple[int, int, int]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON ({exc})") from None
    items = data.get("labels", data) if isinstance(data, dict) else data
    names, colors = {}, {}
    try:
        if isinstance(items, dict):  # {"1": "Liver", ...}
            names = {int(k): str(v) for k, v in items.items()}
        elif isinstance(items, list):  # [{"value": 1, "name": "Liver", "color": [r, g, b]}, ...]
            for item in items:
                names[int(item["value"])] = str(item["name"])
                if "color" in item:
                    colors[int(item["value"])] = tuple(int(c) for c in item["color"][:3])
        else:
            raise TypeError("expected an object or a list")
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: not a label map of value to name ({type(exc).__name__}: {exc})") from None
    if not names:
        raise InputError(f"{path}: no labels")
    return names, colors  # type: ignore[return-value]


def _from_text(text: str, path: Path) -> tuple[dict[int, str], dict[int, tuple[int, int, int]]]:
    names, colors = {}, {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LINE.match(line)
        if not match:
            raise InputError(f"{path}: line {number} is not 'value name': {line[:60]!r}")
        value, rest = int(match.group(1)), match.group(2)
        tail = _COLOR_TAIL.match(rest)
        if tail and tail.group(1).strip() and all(int(c) <= 255 for c in tail.groups()[1:4]):
            rest = tail.group(1).strip()
            colors[value] = tuple(int(c) for c in tail.groups()[1:4])
        names[value] = rest.strip(" \"'")
    if not names:
        raise InputError(f"{path}: no labels")
    return names, colors  # type: ignore[return-value]


def run(args: argparse.Namespace, cancel: CancelToken) -> int:
    from ..metrics import batch, evaluation
    from .progress_display import ProgressDisplay

    prediction, reference = Path(args.prediction), Path(args.reference)
    for path in (prediction, reference):
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
    if prediction.is_dir() != reference.is_dir():
        raise InputError(f"{prediction} and {reference}: give two label-map files or two folders, not one of each")
    if args.slices < 1:
        raise InputError(f"--slices {args.slices}: must be at least 1")
    if args.image and not Path(args.image).exists():
        raise InputError(f"{args.image}: no such file or folder")
    check_evaluate_outputs(args)
    names, colors = load_label_names(args.labels) if args.labels else (None, None)
    display = ProgressDisplay(args.progress)
    surface = not args.no_surface
    try:
        if prediction.is_dir():
            outputs: batch.BatchResult | evaluation.EvaluationResult = batch.evaluate_folders(
                prediction, reference, names, colors=colors, surface=surface, progress=display, cancel=cancel
            )
        else:
            pair = evaluation.read_label_pair(prediction, reference, names, colors=colors)
            outputs = evaluation.evaluate_label_pair(pair, surface=surface, progress=display, cancel=cancel)
    finally:
        display.close()
    for warning in outputs.warnings:
        display.log(f"medseg: warning: {warning}")
    print(outputs.format_table(), flush=True)
    if args.json:
        outputs.to_json(args.json)
    if args.csv:
        outputs.to_csv(args.csv)
    if args.report:
        from ..metrics import report

        if isinstance(outputs, batch.BatchResult):
            path = report.write_batch_report(
                args.report, outputs, label_names=names, images=_batch_images(args.image, outputs), per_axis=args.slices
            )
        else:
            from ..io.volumes import read_image

            image = read_image(args.image) if args.image else None
            path = report.write_report(args.report, outputs, pair, image, per_axis=args.slices)
        display.log(f"report: {path}")
    elif args.image:
        display.log("medseg: warning: --image is only used by --report; ignored")
    return 0


def check_evaluate_outputs(args: argparse.Namespace) -> None:
    """Before any work: --json/--csv/--report replace nothing without --overwrite and are no input."""
    from .common import check_outputs, check_writable_folder, same_file

    inputs = [("PRED", args.prediction), ("REF", args.reference), ("--image", args.image), ("--labels", args.labels)]
    check_outputs([("--json", args.json), ("--csv", args.csv)], inputs, args.overwrite)
    if not args.report:
        return
    folder = Path(args.report)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: --report needs a folder (it writes report.html and images there), not a file")
    page = folder / "report.html"
    for option, path in inputs:
        if path and same_file(page, path):
            raise InputError(f"{page}: --report would write over the input given to {option}; choose another folder")
    if page.exists() and not args.overwrite:
        raise InputError(f"{page}: output exists; choose another folder or pass --overwrite")
    check_writable_folder(folder if folder.is_dir() else folder.parent)


def _batch_images(spec: str | None, batch: object) -> dict[str, Path] | None:
    """Images of a batch, matched by case name (``case`` or nnU-Net's ``case_0000``)."""
    if not spec:
        return None
    from ..metrics.batch import volume_files

    folder = Path(spec)
    if not folder.is_dir():
        raise InputError(f"{folder}: with two folders, --image must be a folder of images")
    files = volume_files(folder)
    found = {case: files.get(case) or files.get(f"{case}_0000") for case, _result in batch.cases}  # type: ignore[attr-defined]
    return {case: path for case, path in found.items() if path is not None}
