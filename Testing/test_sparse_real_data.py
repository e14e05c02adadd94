"""The sparse loop on real data: Colin27's T1 with AAL's left caudate as the user's structure.

Three axial slices of the caudate are "painted" from AAL; the bundled model is fine-tuned on them
for a few steps (a step limit, not a time budget, so the result does not depend on the machine's
speed) through the command line and through the Slicer panel's logic, and the densified
caudate is scored against the whole AAL caudate.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedSegExtension.cli.main import main
from MedSegExtension.io.segmentation_files import read_labelmap, write_labelmap
from MedSegExtension.metrics.overlap import overlap_metrics
from MedSegExtension.models.card import LabelInfo
from MedSegExtension.models.registry import ModelRegistry
from MedSegExtension.sparse.annotations import SliceRef

pytestmark = pytest.mark.skipif(not Path("/usr/share/mricron/templates/aal.nii.gz").is_file(),
                                reason="needs the Debian package mricron-data (scripts/install_data.sh)")

# The user's segment is named like the bundled model's class, so its output channel is reused.
CAUDATE = LabelInfo(1, "Left caudate nucleus", (122, 186, 220))
STEPS = "40"


@pytest.fixture(scope="module")
def caudate():
    """Colin27 cropped around the left caudate, AAL's caudate on it, and three axial slices through it."""
    from benchmarks.sparse.protocols import PROTOCOLS, choose_slices
    from benchmarks.sparse.tasks import colin27_task

    task = colin27_task(["Caudate_L"])
    slices = choose_slices(task.image, task.reference, task.values, PROTOCOLS["parallel-3"])
    assert [ref.axis for ref in slices] == ["k"] * 3
    return task.image, task.reference, slices


def painted_slices(reference: sitk.Image, slices: list[SliceRef]) -> sitk.Image:
    """What a user painting only ``slices`` leaves in their annotation."""
    full = sitk.GetArrayFromImage(reference)
    painted = np.zeros_like(full)
    for ref in slices:
        painted[ref.index] = full[ref.index]
    image = sitk.GetImageFromArray(painted)
    image.CopyInformation(reference)
    return image


def dice(prediction: sitk.Image, reference: sitk.Image) -> float:
    return overlap_metrics(sitk.GetArrayFromImage(prediction) == 1, sitk.GetArrayFromImage(reference) == 1).dice


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MEDSEG_BUNDLED_MODELS", raising=False)  # the real bundled model
    return tmp_path / "home"


def test_cli_densifies_three_real_slices(caudate, home, tmp_path, capsys) -> None:
    image, reference, slices = caudate
    volume, annotation = tmp_path / "colin27.nii.gz", tmp_path / "caudate.seg.nrrd"
    sitk.WriteImage(image, str(volume))
    write_labelmap(painted_slices(reference, slices), annotation, [CAUDATE])
    spec = "k:" + ",".join(str(ref.index) for ref in slices)
    dense = tmp_path / "dense.seg.nrrd"
    assert main(["finetune", str(volume), "--labels", str(annotation), "--slices", spec, "--name", "caudate",
                 "--max-steps", STEPS, "--time-budget", "900", "--progress", "none", "-o", str(dense)]) == 0
    out = capsys.readouterr().out
    assert "from brain-deep-structures" in out and "kept the base model's output channel: Left caudate nucleus" in out
    assert f"held-out slice k:{slices[1].index}" in out
    labels, info = read_labelmap(dense)
    assert [label.name for label in info] == ["Left caudate nucleus"]
    densified = dice(labels, reference)
    # Three slices cover 3 of the caudate's ~40 axial planes; the bundled model alone scores about
    # 0.7 on this structure and Grow from seeds 0.71 from the same slices.
    assert densified > 0.75, densified
    card = ModelRegistry().find("caudate")
    assert card.training["annotated_slices"] == [str(ref) for ref in slices]
    assert tuple(card.target_spacing) == (2.0, 2.0, 2.0)

    # The saved user model predicts like any other model; suggestions avoid the annotated slices.
    plain = tmp_path / "plain.nii.gz"
    assert main(["predict", str(volume), "--model", "caudate", "-o", str(plain), "--progress", "none"]) == 0
    assert dice(sitk.ReadImage(str(plain)), reference) > 0.6
    capsys.readouterr()
    assert main(["suggest", str(volume), "--model", "caudate", "--count", "2", "--json"]) == 0
    suggested = json.loads(capsys.readouterr().out)
    assert suggested["k"] and not {entry["index"] for entry in suggested["k"]} & {ref.index for ref in slices}


def test_slicer_logic_densifies_three_real_slices(caudate, home, env, tmp_path) -> None:
    from MedSegModuleLib.segmentation_nodes import (
        labels_to_segmentation_node,
        segmentation_to_labels,
        segments,
    )
    from MedSegModuleLib.sparse_annotation import SparseRun, SparseSettings
    from MedSegModuleLib.sparse_slices import set_marked_slices

    image, reference, slices = caudate
    sitk.WriteImage(image, str(tmp_path / "colin27.nrrd"))
    volume = env.load_volume(str(tmp_path / "colin27.nrrd"), "Colin27")
    annotation = labels_to_segmentation_node(env.scene, painted_slices(reference, slices), [CAUDATE], "Annotation",
                                             volume)
    set_marked_slices(annotation, slices)
    before = sitk.GetArrayFromImage(segmentation_to_labels(annotation, volume)[0])
    run = SparseRun(env.scene, volume, annotation,
                    SparseSettings("caudate-sparse", max_steps=int(STEPS), time_budget=900, device="cpu"))
    outcome = run.run(timeout=600)
    assert [node.GetName() for _, node in segments(outcome.prediction_node)] == ["Left caudate nucleus"]
    prediction = segmentation_to_labels(outcome.prediction_node, volume)[0]
    assert dice(prediction, reference) > 0.75
    assert outcome.report.held_out_dice is not None and outcome.report.held_out_dice > 0.5
    # The user's annotation is read, never written.
    assert np.array_equal(sitk.GetArrayFromImage(segmentation_to_labels(annotation, volume)[0]), before)
