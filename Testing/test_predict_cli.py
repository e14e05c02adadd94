"""``medseg predict`` end to end: outputs, exit codes, one-line errors, no partial output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO, make_phantom

from MedSegExtension.cli.main import main
from MedSegExtension.io.segmentation_files import read_labelmap
from MedSegExtension.io.volumes import same_geometry
from MedSegExtension.models.card import ModelCard
from MedSegExtension.networks.unet import UNet3D


@pytest.fixture
def registry_env(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEDSEG_BUNDLED_MODELS", str(tiny_model_dir.parent))
    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path / "home"))
    return tiny_model_dir


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    path = tmp_path / "head.nii.gz"
    sitk.WriteImage(make_phantom(), str(path))
    return path


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_writes_segmentation_on_the_input_grid(registry_env, volume, tmp_path, capsys) -> None:
    output = tmp_path / "out" / "head.seg.nrrd"
    code, out, err = run_cli(capsys, "predict", volume, "-o", output, "--uncertainty", tmp_path / "u.nii.gz")
    assert code == 0, err
    assert f"wrote {output}" in out
    labels, info = read_labelmap(output)
    assert same_geometry(labels, sitk.ReadImage(str(volume)))
    assert [(i.value, i.name) for i in info] == [(1, "Left blob"), (2, "Right blob"), (3, "Body")]
    assert (tmp_path / "u.nii.gz").is_file()
    assert sorted(p.name for p in output.parent.iterdir()) == ["head.seg.nrrd"]  # no temporary left behind


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = tmp_path / "good.nii.gz"
    sitk.WriteImage(make_phantom(), str(good))
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[:800])
    corrupt = tmp_path / "corrupt.nrrd"
    corrupt.write_text("this is not an image\n")
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.Image(16, 16, 1, sitk.sitkFloat32) + 1, str(flat))
    four_d = tmp_path / "four_d.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([make_phantom(), make_phantom(seed=2)]), str(four_d))
    nan = make_phantom()
    nan[1, 2, 3] = float("inf")
    nan_path = tmp_path / "nan.nrrd"
    sitk.WriteImage(nan, str(nan_path))
    constant = tmp_path / "constant.nii.gz"
    sitk.WriteImage(sitk.Image(12, 12, 12, sitk.sitkInt16), str(constant))
    anisotropic = tmp_path / "anisotropic.nii.gz"
    sitk.WriteImage(make_phantom(spacing=(0.3, 0.3, 9.0)), str(anisotropic))
    return {
        "missing": (tmp_path / "nope.nii.gz", "no such file"),
        "truncated": (truncated, "truncated"),
        "corrupt": (corrupt, "cannot read image"),
        "2d": (flat, "single slice"),
        "4d": (four_d, "expected a 3D volume, got 4D"),
        "nan": (nan_path, "NaN or infinite"),
        "constant": (constant, "every voxel has the value 0"),
        "anisotropic": (anisotropic, "extreme anisotropy"),
    }


def test_bad_inputs_exit_2_with_one_line_and_no_output(registry_env, tmp_path, capsys) -> None:
    output = tmp_path / "result.nii.gz"
    for name, (path, problem) in _bad_inputs(tmp_path).items():
        code, out, err = run_cli(capsys, "predict", path, "-o", output)
        lines = err.strip().splitlines()
        assert code == 2, (name, err)
        assert len(lines) == 1 and str(path) in lines[0] and problem in lines[0], (name, err)
        assert "Traceback" not in err
        assert not output.exists(), name


def test_unknown_model_and_corrupt_weights(registry_env, volume, tmp_path, capsys) -> None:
    output = tmp_path / "result.nii.gz"
    code, _, err = run_cli(capsys, "predict", volume, "-o", output, "--model", "no-such-model")
    assert code == 2 and "unknown model 'no-such-model'" in err and "tiny-test" in err

    weights = registry_env / "model.pt"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    code, _, err = run_cli(capsys, "predict", volume, "-o", output)
    assert code == 2 and "sha256 mismatch" in err and str(weights) in err
    assert not output.exists()


def test_wrong_number_of_channels(registry_env, volume, tmp_path, capsys) -> None:
    code, _, err = run_cli(capsys, "predict", volume, volume, "-o", tmp_path / "r.nii.gz")
    assert code == 2 and "takes 1 input volume(s)" in err and "got 2" in err


def test_existing_output_is_never_overwritten_without_asking(registry_env, volume, tmp_path, capsys) -> None:
    output = tmp_path / "mine.nii.gz"
    output.write_bytes(b"a user's hand-made segmentation")
    code, _, err = run_cli(capsys, "predict", volume, "-o", output)
    assert code == 2 and "output exists" in err
    assert output.read_bytes() == b"a user's hand-made segmentation"
    code, _, err = run_cli(capsys, "predict", volume, "-o", output, "--overwrite")
    assert code == 0, err
    assert sitk.ReadImage(str(output)).GetSize() == make_phantom().GetSize()


def test_failing_forward_pass_is_an_internal_error_without_output(registry_env, volume, tmp_path, capsys, monkeypatch) -> None:
    def broken_forward(self, x):
        raise RuntimeError("injected failure in the network")

    monkeypatch.setattr(UNet3D, "forward", broken_forward)
    output = tmp_path / "result.seg.nrrd"
    code, _, err = run_cli(capsys, "predict", volume, "-o", output)
    assert code == 1 and "injected failure" in err and "internal error" in err
    assert not output.exists() and list(tmp_path.glob(".result*")) == []


def test_interrupt_cancels_within_a_window_and_writes_nothing(registry_env, volume, tmp_path, capsys, monkeypatch) -> None:
    calls = []
    original = UNet3D.forward

    def interrupting_forward(self, x):
        calls.append(1)
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does; the CLI turns it into a cancel
        return original(self, x)

    monkeypatch.setattr(UNet3D, "forward", interrupting_forward)
    output = tmp_path / "result.nii.gz"
    code, _, err = run_cli(capsys, "predict", volume, "-o", output, "--overlap", "0.8")
    assert code == 130 and "cancelled" in err
    assert len(calls) == 1
    assert not output.exists()


def test_json_progress_for_background_callers(registry_env, volume, tmp_path) -> None:
    output = tmp_path / "r.seg.nrrd"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    completed = subprocess.run(
        [sys.executable, "-m", "MedSegExtension", "predict", str(volume), "-o", str(output), "--progress", "json"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    events = [json.loads(line) for line in completed.stderr.splitlines()]
    fractions = [e["progress"] for e in events if "progress" in e]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) >= 3
    assert any("model tiny-test" in e.get("log", "") for e in events)
    summary = events[-1]["result"]
    assert summary["device"] == "cpu" and summary["outputs"] == [str(output)] and summary["model"] == "tiny-test"


def test_models_lists_the_registry(registry_env, capsys) -> None:
    code, out, _ = run_cli(capsys, "models", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [m["name"] for m in listed] == ["tiny-test"]
    assert ModelCard.from_dict(listed[0]).num_classes == 4
    assert np.isclose(listed[0]["target_spacing"][0], 2.0)


def test_transform_option_segments_in_the_labelled_frame(registry_env, volume, tmp_path, capsys) -> None:
    from MedSegExtension.transforms import (
        frame_grid,
        read_transform,
        rotation_from_euler_zyx,
        write_transform,
    )

    rotation = sitk.AffineTransform(3)
    rotation.SetMatrix(tuple(rotation_from_euler_zyx(0.0, 0.0, 30.0).ravel()))
    rotation.SetCenter(make_phantom().TransformContinuousIndexToPhysicalPoint([s / 2 for s in make_phantom().GetSize()]))
    transform_file = write_transform(rotation, tmp_path / "itksnap.txt", itk_snap=True)
    assert "MatrixOffsetTransformBase_double_3_3" in transform_file.read_text(encoding="utf-8")
    output = tmp_path / "in_frame.nii.gz"
    code, _, err = run_cli(capsys, "predict", volume, "-o", output, "--transform", transform_file)
    assert code == 0, err
    expected = frame_grid(sitk.ReadImage(str(volume)), read_transform(transform_file))
    written = sitk.ReadImage(str(output))
    assert written.GetSize() == tuple(expected.size)
    np.testing.assert_allclose(written.GetOrigin(), expected.origin, atol=1e-4)

    broken = tmp_path / "broken.txt"
    broken.write_text("#Insight Transform File V1.0\n#Transform 0\nTransform: MatrixOffsetTransformBase_double_3_3\n"
                      "Parameters: 1 0 0 0 1 0 0 0 1 0 0\nFixedParameters: 0 0 0\n")
    code, _, err = run_cli(capsys, "predict", volume, "-o", tmp_path / "x.nii.gz", "--transform", broken)
    assert code == 2 and str(broken) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.nii.gz").exists()
