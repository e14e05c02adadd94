"""``medseg demo`` writes a segmentation, a label map and a picture with the segments in their colours."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import make_phantom

from MedSegExtension.cli.main import main
from MedSegExtension.io.segmentation_files import read_labelmap
from MedSegExtension.io.volumes import same_geometry


def test_demo_on_a_given_volume(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("MEDSEG_BUNDLED_MODELS", str(tiny_model_dir.parent))
    volume = tmp_path / "head.nii.gz"
    sitk.WriteImage(make_phantom(size=(48, 44, 40)), str(volume))
    code = main(["demo", "--input", str(volume), "--output-dir", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0, out
    stem = tmp_path / "out" / "head_tiny-test"
    labels, info = read_labelmap(stem.with_suffix(".seg.nrrd"))
    assert same_geometry(labels, sitk.ReadImage(str(volume)))
    assert [i.name for i in info] == ["Left blob", "Right blob", "Body"]
    plain = sitk.ReadImage(str(stem.with_suffix(".nii.gz")))
    assert np.array_equal(sitk.GetArrayFromImage(plain), sitk.GetArrayFromImage(labels))
    picture = matplotlib.image.imread(str(stem.with_suffix(".png")))
    assert picture.shape[1] > picture.shape[0] > 200 and picture[..., :3].std() > 0.05  # three panels, not blank
    assert f"wrote   {stem.with_suffix('.png')}" in out and "segmentation took" in out


def test_demo_without_the_demo_volume_says_how_to_get_it(tiny_model_dir, monkeypatch, capsys) -> None:
    import MedSegExtension.cli.demo as demo

    monkeypatch.setenv("MEDSEG_BUNDLED_MODELS", str(tiny_model_dir.parent))
    monkeypatch.setattr(demo, "DEMO_VOLUMES", (Path("/nonexistent/ch2.nii.gz"),))
    assert main(["demo"]) == 2
    assert "install_data.sh" in capsys.readouterr().err
