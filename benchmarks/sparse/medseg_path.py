"""The benchmark's MedSeg method: ``medseg finetune``'s default path, as a user runs it.

The task's image and a label file painted only on the protocol's slices are written to files;
the arguments are parsed by the CLI's own parser with only the required ones (input,
``--labels``, ``--slices``, ``--name``), and the settings come from the CLI's
:func:`~MedSegExtension.cli.finetune.settings_from_args`, so the benchmark runs exactly the
defaults a user gets. The score is taken on ``result.labels``, the dense map ``-o`` would write.
Not done here: saving the user model (it would fill the user's model folder), printing.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from benchmarks.sparse.baselines import slice_mask
from benchmarks.sparse.tasks import Task
from MedSegExtension.sparse.annotations import VOXEL_AXES, SliceRef

# --quick only (a smoke test in seconds): a few steps. The benchmark proper passes no options.
QUICK_OPTIONS = ("--max-steps", "2")


def slice_spec(slices: Sequence[SliceRef]) -> str:
    """The ``--slices`` text for ``slices``, e.g. ``k:40,60;j:100``."""
    by_axis: dict[str, list[int]] = {}
    for ref in slices:
        by_axis.setdefault(ref.axis, []).append(ref.index)
    return ";".join(f"{axis}:{','.join(map(str, sorted(by_axis[axis])))}" for axis in VOXEL_AXES if axis in by_axis)


def cli_args(image_path: Path, labels_path: Path, slices: Sequence[SliceRef], name: str,
             options: Sequence[str] = ()) -> argparse.Namespace:
    """``medseg finetune IMAGE --labels LABELS --slices SPEC --name NAME [options]``, parsed by the CLI."""
    from MedSegExtension.cli.main import build_parser

    return build_parser().parse_args(["finetune", str(image_path), "--labels", str(labels_path),
                                      "--slices", slice_spec(slices), "--name", name, *options])


def write_inputs(task: Task, slices: Sequence[SliceRef], folder: Path) -> tuple[Path, Path]:
    """The task's image and a ``.seg.nrrd`` holding the reference on ``slices`` only (zero elsewhere)."""
    from MedSegExtension.io.segmentation_files import write_labelmap

    folder.mkdir(parents=True, exist_ok=True)
    image_path, labels_path = folder / f"{task.name}.nii.gz", folder / f"{task.name}-slices.seg.nrrd"
    sitk.WriteImage(task.image, str(image_path))
    reference = sitk.GetArrayFromImage(task.reference)
    painted = np.where(slice_mask(reference.shape, slices), reference, 0).astype(np.uint8)
    labels = sitk.GetImageFromArray(painted)
    labels.CopyInformation(task.reference)
    write_labelmap(labels, labels_path, task.classes)
    return image_path, labels_path


def run_finetune(args: argparse.Namespace) -> tuple[Any, Any]:
    """What ``medseg finetune`` computes for ``args``: the fine-tuning result and its settings."""
    from MedSegExtension.cli.finetune import class_info_for, load_annotation, settings_from_args
    from MedSegExtension.io.volumes import read_volume
    from MedSegExtension.models.registry import ModelRegistry
    from MedSegExtension.sparse.finetune import fine_tune

    image = read_volume(args.input)
    annotation, info = load_annotation(args, image)
    settings = settings_from_args(args)
    base_card = ModelRegistry().find(settings.base_model) if settings.base_model else None
    classes = class_info_for(info, annotation.classes, base_card)
    return fine_tune(image, annotation, classes, settings, name=args.name), settings


def run_medseg(task: Task, slices: Sequence[SliceRef], folder: Path,
               options: Sequence[str] = ()) -> tuple[sitk.Image, str, dict[str, Any]]:
    """MedSeg's dense labels for the task's ``slices``, a note on the run, and the settings it ran with."""
    image_path, labels_path = write_inputs(task, slices, folder)
    result, settings = run_finetune(cli_args(image_path, labels_path, slices, f"bench-{task.name}", options))
    parts = [f"{result.steps} steps", f"stopped: {result.stopped_because}"]
    if isinstance(result.held_out_dice, float) and math.isfinite(result.held_out_dice):
        parts.append(f"held-out Dice {result.held_out_dice:.3f}")
    skipped = result.card.training.get("unrelated_base_model_skipped")
    if skipped:
        parts.append(f"base {skipped} set aside (knows none of the structures)")
    chosen = sorted(set(result.choices.values()))
    parts.append("kept: " + ", ".join(f"{how} x{list(result.choices.values()).count(how)}" for how in chosen))
    return result.labels, "; ".join(parts), asdict(settings)
