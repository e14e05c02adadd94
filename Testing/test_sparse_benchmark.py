"""The sparse benchmark runs ``medseg finetune``'s defaults, cannot see the reference off the annotated
slices, keeps its development/test split, and writes results that re-render from the JSON alone."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # ``benchmarks`` is not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks.sparse import report, run  # noqa: E402
from benchmarks.sparse.baselines import best_threshold_dice, slice_mask  # noqa: E402
from benchmarks.sparse.medseg_path import (  # noqa: E402
    QUICK_OPTIONS,
    cli_args,
    run_finetune,
    slice_spec,
    write_inputs,
)
from benchmarks.sparse.tasks import SPLIT, TASKS, Task, label_infos, skull_component  # noqa: E402
from MedSegExtension.cli.finetune import settings_from_args  # noqa: E402
from MedSegExtension.io.segmentation_files import read_labelmap  # noqa: E402
from MedSegExtension.models.registry import ModelRegistry  # noqa: E402
from MedSegExtension.sparse.annotations import SliceRef, parse_slice_spec  # noqa: E402
from MedSegExtension.sparse.finetune import FineTuneSettings  # noqa: E402

HAVE_MRICRON = Path("/usr/share/mricron/templates/aal.nii.gz").is_file()
SLICES = [SliceRef("k", 5), SliceRef("k", 9), SliceRef("k", 13)]


@pytest.fixture
def blob_task() -> Task:
    """A tiny noisy image (i, j, k = 28, 24, 18) with one bright ellipsoid named 'Blob' (no bundled class)."""
    k, j, i = np.mgrid[:18, :24, :28]
    mask = ((i - 14) / 8.0) ** 2 + ((j - 12) / 7.0) ** 2 + ((k - 9) / 6.0) ** 2 <= 1
    rng = np.random.default_rng(3)
    image = sitk.GetImageFromArray((50 + 120 * mask + rng.normal(0, 10, mask.shape)).astype(np.float32))
    image.SetSpacing((1.2, 1.0, 1.5))
    reference = sitk.GetImageFromArray(mask.astype(np.uint8))
    reference.CopyInformation(image)
    return Task("blob", "phantom", image, reference, label_infos(["Blob"]))


def test_benchmark_medseg_path_equals_medseg_finetune_defaults(tmp_path: Path, blob_task: Task) -> None:
    image_path, labels_path = write_inputs(blob_task, SLICES, tmp_path)
    benchmark = settings_from_args(cli_args(image_path, labels_path, SLICES, "bench", run.medseg_options(quick=False)))
    # What a user's plain `medseg finetune IMAGE --labels L --slices S --name N` runs with.
    defaults = FineTuneSettings(base_model=ModelRegistry().default_name())
    assert asdict(benchmark) == asdict(defaults)
    assert benchmark.time_budget is None and benchmark.use_unrelated_base is False  # nothing overridden
    # The quick smoke test's options would be caught: they change the settings.
    quick = settings_from_args(cli_args(image_path, labels_path, SLICES, "bench", run.medseg_options(quick=True)))
    assert asdict(quick) != asdict(defaults)


def test_labels_file_holds_the_reference_on_the_slices_only(tmp_path: Path, blob_task: Task) -> None:
    image_path, labels_path = write_inputs(blob_task, SLICES, tmp_path)
    labels, info = read_labelmap(labels_path)
    array, reference = sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(blob_task.reference)
    on_slices = slice_mask(array.shape, SLICES)
    assert np.array_equal(array[on_slices], reference[on_slices]) and not array[~on_slices].any()
    assert reference[~on_slices].any()  # so the check above means something
    assert [(label.value, label.name) for label in info] == [(1, "Blob")]
    spec = slice_spec(SLICES + [SliceRef("j", 3)])
    assert set(parse_slice_spec(spec, blob_task.image)) == {*SLICES, SliceRef("j", 3)}
    assert sitk.ReadImage(str(image_path)).GetSize() == blob_task.image.GetSize()


def test_dense_output_is_bit_identical_when_unannotated_reference_voxels_are_scrambled(
    tmp_path: Path, blob_task: Task
) -> None:
    """The MedSeg path, given the whole reference in its label file, never reads it off the slices."""
    from MedSegExtension.io.segmentation_files import write_labelmap

    image_path, _ = write_inputs(blob_task, SLICES, tmp_path)
    reference = sitk.GetArrayFromImage(blob_task.reference)
    off_slices = ~slice_mask(reference.shape, SLICES)
    scrambled = reference.copy()
    scrambled[off_slices] = np.random.default_rng(7).integers(0, 2, int(off_slices.sum()))
    outputs = []
    for name, array in (("whole", reference), ("scrambled", scrambled)):
        labels = sitk.GetImageFromArray(array.astype(np.uint8))
        labels.CopyInformation(blob_task.reference)
        path = write_labelmap(labels, tmp_path / f"{name}.seg.nrrd", blob_task.classes)
        result, _settings = run_finetune(cli_args(image_path, path, SLICES, f"leak-{name}", ("--max-steps", "3")))
        outputs.append(sitk.GetArrayFromImage(result.labels))
    assert not np.array_equal(reference, scrambled)
    assert outputs[0].shape == reference.shape and outputs[0].any()
    assert np.array_equal(outputs[0], outputs[1])


def test_split_is_fixed_disjoint_and_covers_every_task() -> None:
    dev, test = set(SPLIT["dev"]), set(SPLIT["test"])
    assert not dev & test and dev | test == set(TASKS)
    assert "cranium" in dev  # the threshold task is development only
    assert {"colin27", "mni152", "cranium"} <= dev  # every task looked at before the split
    with pytest.raises(SystemExit):
        run.parse_args(["--split", "dev", "--tasks", "jhu"])  # a test task cannot run as development


def test_threshold_oracle_tells_a_threshold_task_from_a_connected_piece() -> None:
    k, j, i = np.mgrid[:16, :20, :30]
    big = ((i - 9) ** 2 + (j - 10) ** 2 + (k - 8) ** 2) <= 36
    small = ((i - 24) ** 2 + (j - 10) ** 2 + (k - 8) ** 2) <= 9
    image = sitk.GetImageFromArray(np.where(big | small, 300.0, 20.0).astype(np.float32))
    assert best_threshold_dice(image, big | small)[0] == pytest.approx(1.0)
    piece = skull_component(big | small)
    assert np.array_equal(piece, big)
    assert best_threshold_dice(image, piece)[0] < 0.95


def _row(task: str, protocol: str, method: str, value: float) -> report.Row:
    return report.Row(task, protocol, method, ["k:1"], 1.0, {"a": value, "b": value}, {"a": 2.0, "b": 4.0}, 1.5)


def test_summary_checks_the_targets_per_task_and_on_the_mean() -> None:
    scores = {("t1", "medseg"): 0.80, ("t1", "fill-between-slices"): 0.60, ("t1", "grow-from-seeds"): 0.77,
              ("t1", "grow-from-seeds-whole"): 0.70, ("t2", "medseg"): 0.70, ("t2", "fill-between-slices"): 0.69,
              ("t2", "grow-from-seeds"): 0.50, ("t2", "grow-from-seeds-whole"): 0.40}
    rows = [_row(t, p, m, v) for p in ("parallel-3", "parallel-5") for (t, m), v in scores.items()]
    summary = report.summarize(rows)
    # parallel-3: >= best baseline + 0.02. t1: 0.80 vs 0.77 + 0.02 met; t2: 0.70 vs 0.69 + 0.02 not.
    assert summary["parallel-3"]["t1"]["met"] is True and summary["parallel-3"]["t2"]["met"] is False
    assert summary["parallel-3"]["t2"]["best_baseline"] == {"method": "fill-between-slices", "dice": 0.69}
    # The mean over tasks: medseg 0.75; best baseline on the mean is fill (0.645) -> met.
    mean = summary["parallel-3"][report.MEAN]
    assert mean["methods"]["medseg"] == pytest.approx(0.75) and mean["met"] is True
    assert summary["parallel-5"]["t2"]["met"] is True  # >= best baseline, no margin
    table = report.summary_table(summary)
    assert "| parallel-3 | t2 | 0.700 | 0.690 | 0.500 | 0.400 | fill-between-slices | >= best baseline + 0.02 | NO |" in table
    assert report.results_table(rows).count("| t1 | parallel-3 |") == 4


def test_a_loaded_run_is_compared_with_the_quiet_one_task_by_task() -> None:
    quiet = {"git": {"commit": "abc"}, "results": [
        {"task": "t1", "protocol": "parallel-3", "method": "medseg", "mean_dice": 0.80},
        {"task": "t2", "protocol": "parallel-3", "method": "medseg", "mean_dice": 0.70},
        {"task": "t2", "protocol": "parallel-3", "method": "fill-between-slices", "mean_dice": 0.10}]}
    loaded = [_row("t1", "parallel-3", "medseg", 0.79), _row("t2", "parallel-3", "medseg", 0.65),
              _row("t2", "parallel-3", "fill-between-slices", 0.9), _row("t3", "parallel-3", "medseg", 0.5)]
    pairs = report.loaded_vs_quiet(loaded, quiet)
    assert [(p["task"], p["within_tolerance"]) for p in pairs] == [("t1", True), ("t2", False)]  # t3: no quiet row
    assert pairs[1]["difference"] == pytest.approx(-0.05)
    table = report.loaded_table({"quiet_json": "q.json", "quiet_commit": "abc", "rows": pairs})
    assert "| t2 | parallel-3 | 0.700 | 0.650 | -0.050 | NO |" in table


@pytest.mark.skipif(not HAVE_MRICRON, reason="needs the Debian package mricron-data (scripts/install_data.sh)")
def test_quick_run_records_commit_load_and_settings_and_renders_again(tmp_path: Path) -> None:
    pytest.importorskip("slicer", reason="needs the slicer-core wheel")
    assert run.main(["--quick", "--output-dir", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "sparse_quick.json").read_text(encoding="utf-8"))
    assert len(data["git"]["commit"]) == 40 and isinstance(data["git"]["dirty"], bool)
    assert len(data["load"]["before"]) == 3 and len(data["load"]["after"]) == 3 and data["split"] == "dev"
    rows = {row["method"]: row for row in data["results"]}
    assert set(rows) == set(report.METHODS) and all(set(row["dice"]) == {"Caudate_L"} for row in rows.values())
    # The MedSeg row ran the CLI defaults except the quick step limit, and nothing else.
    expected = replace(FineTuneSettings(base_model=ModelRegistry().default_name()), max_steps=int(QUICK_OPTIONS[1]))
    assert rows["medseg"]["settings"] == json.loads(json.dumps(asdict(expected)))
    assert rows["grow-from-seeds"]["mean_dice"] > 0.5 and rows["fill-between-slices"]["mean_dice"] > 0.5
    markdown = (tmp_path / "sparse_quick.md").read_text(encoding="utf-8")
    (tmp_path / "sparse_quick.md").unlink()
    run.main(["--render", str(tmp_path / "sparse_quick.json")])
    assert (tmp_path / "sparse_quick.md").read_text(encoding="utf-8") == markdown
