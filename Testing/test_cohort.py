"""``medseg predict`` over a cohort: folders and lists, resumable, failing cases reported, sharded by torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO, make_phantom

from MedSegExtension.cli.main import main
from MedSegExtension.errors import InputError
from MedSegExtension.inference.cohort import Case, cases_from_list, run_cohort, shard, shard_from_env


@pytest.fixture
def registry_env(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEDSEG_BUNDLED_MODELS", str(tiny_model_dir.parent))
    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path / "home"))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_ARRAY_TASK_COUNT"):
        monkeypatch.delenv(name, raising=False)
    return tiny_model_dir


@pytest.fixture
def cohort(tmp_path: Path) -> Path:
    folder = tmp_path / "cases"
    folder.mkdir()
    for index, name in enumerate(["anna.nii.gz", "ben.nrrd", "carl.mha", "dora.nii.gz"]):
        sitk.WriteImage(make_phantom(size=(24, 20, 18), seed=index), str(folder / name))
    (folder / "notes.txt").write_text("not a volume\n")
    return folder


def _labels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted(folder.iterdir())}


def test_folder_cohort_names_outputs_after_inputs_and_resumes(registry_env, cohort, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["predict", str(cohort), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["anna.nii.gz", "ben.nii.gz", "carl.nii.gz", "dora.nii.gz"]
    assert "[2/4] ben: wrote" in printed and "cohort: 4 segmented, 0 skipped" in printed
    first = _labels(out)
    (out / "carl.nii.gz").unlink()  # as if the run had been interrupted there
    assert main(["predict", str(cohort), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "cohort: 1 segmented, 3 skipped" in printed and "anna.nii.gz exists, skipped" in printed
    for name, labels in _labels(out).items():
        np.testing.assert_array_equal(labels, first[name])


def test_list_cohort_reports_a_bad_case_and_finishes_the_others(registry_env, cohort, tmp_path, capsys) -> None:
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes((cohort / "anna.nii.gz").read_bytes()[:500])
    listing = tmp_path / "cases.txt"
    listing.write_text(f"# my cohort\ncases/anna.nii.gz\n\n{broken}\ncases/ben.nrrd\n")
    out = tmp_path / "out"
    assert main(["predict", "--list", str(listing), "-o", str(out), "--output-suffix", ".nrrd"]) == 2
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["anna.nrrd", "ben.nrrd"]  # nothing partial for "broken"
    assert "[2/3] broken: failed:" in captured.out and "1 case(s) failed: broken" in captured.err


def test_list_file_errors_name_the_line(tmp_path) -> None:
    listing = tmp_path / "cases.txt"
    listing.write_text("missing.nii.gz\n")
    with pytest.raises(InputError, match=r"cases.txt:1: .*missing.nii.gz does not exist"):
        cases_from_list(listing)


def test_shards_partition_the_cohort_and_come_from_the_environment() -> None:
    cases = [Case(str(n), (Path(f"{n}.nii.gz"),)) for n in range(7)]
    parts = [shard(cases, rank, 3) for rank in range(3)]
    assert sorted(c.name for part in parts for c in part) == sorted(c.name for c in cases)
    assert shard_from_env({"RANK": "1", "WORLD_SIZE": "2"}) == (1, 2)
    assert shard_from_env({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "3", "SLURM_ARRAY_TASK_COUNT": "4"}) == (2, 4)
    assert shard_from_env({}) == (0, 1)
    with pytest.raises(InputError, match="rank must lie"):
        shard_from_env({"RANK": "2", "WORLD_SIZE": "2"})


def test_cohort_stops_on_cancel_between_cases(tmp_path) -> None:
    from MedSegExtension.errors import CancelledError

    done = []
    cases = [Case(n, (Path(n),)) for n in "abc"]
    with pytest.raises(CancelledError):
        run_cohort(cases, tmp_path, ".nii.gz", lambda case, out: done.append(case.name), log=lambda line: None,
                   cancelled=lambda: len(done) == 2)
    assert done == ["a", "b"]


def test_torchrun_two_processes_write_the_same_files_as_one(registry_env, cohort, tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    single, double = tmp_path / "single", tmp_path / "double"
    command = ["predict", str(cohort), "-o"]
    subprocess.run([sys.executable, "-m", "MedSegExtension", *command, str(single)], env=env, check=True,
                   capture_output=True)
    torchrun = Path(sys.executable).with_name("torchrun")
    run = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", "0", "-m", "MedSegExtension",
                          *command, str(double)], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "rank 0/2" in run.stdout and "rank 1/2" in run.stdout
    assert sorted(p.name for p in double.iterdir()) == sorted(p.name for p in single.iterdir())
    for name, labels in _labels(single).items():
        other = sitk.ReadImage(str(double / name))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(other), labels)
        assert other.GetOrigin() == sitk.ReadImage(str(single / name)).GetOrigin()
