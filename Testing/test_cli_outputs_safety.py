"""Outputs never replace data: checked before any work, one line each, exit 2; inputs stay byte for byte."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import test_predict_cli
from conftest import make_phantom
from test_sparse_finetune import INFO, labels_on, two_balls
from test_train_cli import write_config

from MedSegExtension.cli.main import main
from MedSegExtension.io.segmentation_files import write_labelmap
from MedSegExtension.models.registry import sha256_of

registry_env, volume = test_predict_cli.registry_env, test_predict_cli.volume  # the same fixtures


@pytest.fixture
def env(registry_env: Path, tmp_path: Path) -> Path:
    """The tiny model bundled, an empty MEDSEG_HOME; the test's folder."""
    return tmp_path


@pytest.fixture
def sparse(tmp_path: Path) -> tuple[Path, Path]:
    image, truth = two_balls()
    volume, annotation = tmp_path / "balls.nii.gz", tmp_path / "balls.seg.nrrd"
    sitk.WriteImage(image, str(volume))
    write_labelmap(labels_on(image, truth), annotation, INFO)
    return volume, annotation


def refused(capsys: pytest.CaptureFixture, *args: object) -> str:
    """Run ``medseg ARGS``; assert exit 2 with exactly one line; return that line."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    return err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_one_path_for_two_outputs_is_refused(env, volume, capsys) -> None:
    out = env / "x.nii.gz"
    assert "given to both -o and --uncertainty" in refused(capsys, "predict", volume, "-o", out, "--uncertainty", out)
    assert "given to both" in refused(capsys, "predict", volume, "-o", out, "--probabilities", env / "." / "x.nii.gz")
    assert not out.exists()


def test_overwrite_never_lets_an_output_be_an_input(env, volume, sparse, capsys) -> None:
    before = digest(volume)
    assert "never replaces an input" in refused(capsys, "predict", volume, "-o", volume, "--overwrite")
    link = env / "alias.nii.gz"
    os.link(volume, link)  # the same file under another name
    assert "never replaces an input" in refused(capsys, "predict", volume, "-o", link, "--overwrite")
    transform = env / "t.tfm"
    sitk.WriteTransform(sitk.Euler3DTransform(), str(transform))
    assert "--transform" in refused(capsys, "predict", volume, "--transform", transform, "-o", env / "o.nii.gz",
                                    "--uncertainty", transform, "--overwrite")
    assert digest(volume) == before

    image, annotation = sparse
    kept = digest(annotation), digest(image)
    common = ("finetune", image, "--labels", annotation, "--name", "b", "--overwrite")
    assert "--labels" in refused(capsys, *common, "--slices", "k:14,16", "-o", annotation)
    assert "INPUT" in refused(capsys, *common, "--slices", "k:14,16", "--uncertainty", image)
    mask = env / "mask.nii.gz"
    sitk.WriteImage(labels_on(sitk.ReadImage(str(image)), (two_balls()[1] > 0).astype(np.uint8)), str(mask))
    assert "--mask" in refused(capsys, *common, "--mask", mask, "-o", mask)
    assert (digest(annotation), digest(image)) == kept
    assert not (env / "home" / "models").exists()  # refused before any training


@pytest.mark.skipif(sys.platform != "linux", reason="a read-only folder: /proc for root, chmod otherwise")
def test_output_folder_that_cannot_be_written_is_refused_before_the_work(env, volume, capsys) -> None:
    if os.geteuid() == 0:
        read_only = Path("/proc/self")  # root ignores permission bits; /proc takes no new files
    else:
        read_only = env / "ro"
        read_only.mkdir()
        read_only.chmod(0o555)
    assert "cannot write in the output folder" in refused(capsys, "predict", volume, "-o", read_only / "o.nii.gz")
    assert "cannot write in the output folder" in refused(capsys, "predict", volume, "-o", read_only / "new" / "o.nii.gz")
    assert "is a file" in refused(capsys, "predict", volume, "-o", volume / "sub" / "o.nii.gz")
    assert not list(env.glob("**/.medseg-write-test-*"))


def test_evaluate_outputs_are_not_overwritten_without_asking(env, volume, capsys) -> None:
    labels = env / "labels.nii.gz"
    array = (sitk.GetArrayFromImage(make_phantom()) > 150).astype(np.uint8)
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(make_phantom())
    sitk.WriteImage(image, str(labels))
    for option, name in (("--json", "r.json"), ("--csv", "r.csv")):
        existing = env / name
        existing.write_text("my notes")
        assert "output exists" in refused(capsys, "evaluate", labels, labels, option, existing)
        assert existing.read_text() == "my notes"
        assert main(["evaluate", str(labels), str(labels), option, str(existing), "--overwrite"]) == 0
        assert existing.read_text() != "my notes"
    report = env / "report"
    report.mkdir()
    (report / "report.html").write_text("an earlier report")
    assert "output exists" in refused(capsys, "evaluate", labels, labels, "--report", report)
    assert (report / "report.html").read_text() == "an earlier report"
    assert "needs a folder" in refused(capsys, "evaluate", labels, labels, "--report", volume)
    assert "never replaces an input" in refused(capsys, "evaluate", labels, volume, "--json", labels, "--overwrite")
    capsys.readouterr()


def test_finetune_name_and_budget_are_checked_before_the_run(env, sparse, capsys) -> None:
    image, annotation = sparse
    common = ("finetune", image, "--labels", annotation, "--slices", "k:14,16,18")
    assert "taken by a bundled model" in refused(capsys, *common, "--name", "tiny-test")
    assert "use letters, digits" in refused(capsys, *common, "--name", "../escape")
    for budget in ("0", "-5", "nan"):
        assert "--time-budget" in refused(capsys, *common, "--name", "b", "--time-budget", budget)
    assert "--max-steps" in refused(capsys, *common, "--name", "b", "--max-steps", "0")
    assert not (env / "home" / "models").exists()


def test_train_never_replaces_an_existing_model(env, tiny_model_dir, monkeypatch, capsys) -> None:
    """A user model of the config's name (here a fine-tuned one) stays; train refuses before any work."""
    monkeypatch.setenv("MEDSEG_BUNDLED_MODELS", str(env / "bundled"))
    config = write_config(env)
    folder = env / "out" / "cli-toy"
    folder.mkdir(parents=True)
    for name in ("model.pt", "model.json"):
        (folder / name).write_bytes((tiny_model_dir / name).read_bytes())
    (folder / "model.json").write_text((folder / "model.json").read_text().replace('"tiny-test"', '"cli-toy"'))
    weights = sha256_of(folder / "model.pt")
    assert "never replaces it" in refused(capsys, "train", config)
    assert "never replaces it" in refused(capsys, "train", config, "--restart")  # no run of its own to restart
    assert sha256_of(folder / "model.pt") == weights and not (folder / "checkpoints").exists()
    assert "--max-seconds" in refused(capsys, "train", config, "--max-seconds", "0")
