"""``medseg evaluate``: tables, JSON/CSV, the HTML report, batches and bad input."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import make_phantom, make_tiny_card

from MedSegExtension.cli.evaluate import load_label_names
from MedSegExtension.cli.main import main
from MedSegExtension.errors import InputError


def write(array: np.ndarray, path: Path, like: sitk.Image) -> Path:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(like)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def case(tmp_path: Path) -> dict[str, Path]:
    """Phantom image; reference with body (3) and two blobs (1, 2); a prediction that shifts
    everything one voxel along x and loses the right blob (2) to a new value 4."""
    phantom = make_phantom()
    values = sitk.GetArrayFromImage(phantom)
    ref = np.zeros(values.shape, np.uint8)
    ref[values > 50] = 3
    ref[values > 180] = 1
    ref[values > 280] = 2
    pred = np.roll(ref, 1, axis=2)
    pred[pred == 2] = 4
    sitk.WriteImage(phantom, str(tmp_path / "image.nii.gz"))
    labels = tmp_path / "labels.txt"
    labels.write_text("# value name [r g b]\n1 Left blob 230 80 80\n2 Right blob 80 80 230\n3: Body\n")
    return {
        "image": tmp_path / "image.nii.gz",
        "ref": write(ref, tmp_path / "ref.nii.gz", phantom),
        "pred": write(pred, tmp_path / "pred.nrrd", phantom),
        "labels": labels,
        "dir": tmp_path,
    }


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources.append(dict(attrs)["src"] or "")


def report_images(text: str) -> list[np.ndarray]:
    parser = _Images()
    parser.feed(text)
    images = []
    for source in parser.sources:
        assert source.startswith("data:image/png;base64,")  # embedded, nothing to fetch
        images.append(matplotlib.image.imread(io.BytesIO(base64.b64decode(source.split(",", 1)[1])), format="png"))
    return images


def test_single_case_table_json_csv_and_report(case: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = case["dir"] / "out"
    code = main([
        "evaluate", str(case["pred"]), str(case["ref"]), "--labels", str(case["labels"]), "--image", str(case["image"]),
        "--json", str(out / "m.json"), "--csv", str(out / "m.csv"), "--report", str(out / "report"), "--progress", "none",
    ])
    captured = capsys.readouterr()
    assert code == 0
    for name in ("Background", "Left blob", "Right blob", "Body", "Label 4", "mean (foreground)"):
        assert name in captured.out
    # class 2 is missed and 4 invented: both are stated warnings, not silent numbers
    assert "warning: labels only in the reference (missed entirely; Dice 0, HD95 inf): 2 (Right blob)" in captured.err
    assert "warning: labels only in the prediction (Dice 0, HD95 inf): 4 (Label 4)" in captured.err

    data = json.loads((out / "m.json").read_text(encoding="utf-8"))
    rows = {row["value"]: row for row in data["classes"]}
    assert sorted(rows) == [0, 1, 2, 3, 4]
    assert rows[2]["dice"] == 0.0 and rows[2]["hd95_mm"] == "inf" and rows[2]["status"] == "reference_only"
    # Body shifted by one voxel of 1.2 mm along x: every surface voxel is 0 or 1.2 mm away
    assert 0 < rows[3]["hd95_mm"] <= 1.2 + 1e-6 and 0.8 < rows[3]["dice"] < 1.0
    counts = np.array(data["confusion_matrix"]["counts"])
    assert counts.sum() == 40 * 36 * 32 and counts[2, 4] > 0 and counts[2, 2] == 0

    with open(out / "m.csv", newline="") as stream:
        table = list(csv.DictReader(stream))
    assert [r["row"] for r in table] == ["class"] * 5 + ["mean_all", "mean_foreground"]
    assert float(table[3]["dice"]) == pytest.approx(rows[3]["dice"])

    html = (out / "report" / "report.html").read_text(encoding="utf-8")
    for name in ("Background", "Left blob", "Right blob", "Body", "Label 4"):
        assert name in html
    images = report_images(html)
    assert len(images) == 2 + 3  # bar chart, heat map, one slice figure per axis
    for picture in images:
        assert picture.shape[0] > 100 and picture.shape[1] > 100
        assert picture[..., :3].std() > 0.05  # not blank
        assert len(np.unique(picture[..., :3].reshape(-1, 3), axis=0)) > 20


def test_labels_from_model_folder_and_json(case: dict[str, Path], tmp_path: Path) -> None:
    card = make_tiny_card()
    card.save(tmp_path / "model")
    names, colors = load_label_names(str(tmp_path / "model"))
    assert names == {1: "Left blob", 2: "Right blob", 3: "Body"} and colors[2] == (80, 80, 230)
    (tmp_path / "map.json").write_text(json.dumps({"1": "A", "3": "C"}))
    assert load_label_names(str(tmp_path / "map.json")) == ({1: "A", 3: "C"}, {})
    (tmp_path / "list.json").write_text(json.dumps({"labels": [{"value": 5, "name": "E", "color": [1, 2, 3]}]}))
    assert load_label_names(str(tmp_path / "list.json")) == ({5: "E"}, {5: (1, 2, 3)})
    assert load_label_names(str(case["labels"])) == (
        {1: "Left blob", 2: "Right blob", 3: "Body"},
        {1: (230, 80, 80), 2: (80, 80, 230)},
    )
    (tmp_path / "bad.txt").write_text("liver 1\n")
    with pytest.raises(InputError, match=r"bad\.txt: line 1 is not 'value name'"):
        load_label_names(str(tmp_path / "bad.txt"))
    with pytest.raises(InputError, match="not a label map file, model folder or known model"):
        load_label_names(str(tmp_path / "nowhere"))


def test_batch_folders(case: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    phantom = make_phantom()
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(case["ref"])))
    for folder in ("preds", "refs", "images"):
        (tmp_path / folder).mkdir()
    for shift, name in ((0, "c1"), (1, "c2"), (2, "c3")):
        write(np.roll(ref, shift, axis=2), tmp_path / "preds" / f"{name}.nii.gz", phantom)
        write(ref, tmp_path / "refs" / f"{name}.nii.gz", phantom)
    sitk.WriteImage(phantom, str(tmp_path / "images" / "c1_0000.nii.gz"))
    code = main([
        "evaluate", str(tmp_path / "preds"), str(tmp_path / "refs"), "--labels", str(case["labels"]),
        "--csv", str(tmp_path / "b.csv"), "--json", str(tmp_path / "b.json"),
        "--report", str(tmp_path / "rep"), "--image", str(tmp_path / "images"), "--slices", "2", "--progress", "none",
    ])
    captured = capsys.readouterr()
    assert code == 0
    assert re.search(r"^c1\s+1\.0000\s+1\.0000\s+0\.00\s+0\.00", captured.out, re.M)  # shift 0: perfect
    assert "IQR" in captured.out and "Body" in captured.out
    data = json.loads((tmp_path / "b.json").read_text(encoding="utf-8"))
    assert [c["case"] for c in data["cases"]] == ["c1", "c2", "c3"]
    body_dice = [next(r["dice"] for r in c["classes"] if r["value"] == 3) for c in data["cases"]]
    summary = next(s for s in data["summary"]["classes"] if s["value"] == 3)["dice"]
    assert summary["median"] == pytest.approx(body_dice[1])  # Dice falls as the shift grows
    assert summary["mean"] == pytest.approx(np.mean(body_dice))
    assert summary["iqr"] == pytest.approx((body_dice[0] - body_dice[2]) / 2)
    with open(tmp_path / "b.csv", newline="") as stream:
        kinds = {row["row"] for row in csv.DictReader(stream)}
    assert {"class", "mean_foreground", "summary_mean", "summary_median", "summary_iqr"} <= kinds
    html = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    assert all(f"Case {name}" in html for name in ("c1", "c2", "c3"))
    images = report_images(html)
    assert len(images) == 2 + 3 * 3
    assert all(picture[..., :3].std() > 0.05 for picture in images)


def test_bad_input_gives_one_line_errors(case: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    phantom = make_phantom()
    probabilities = write(np.full((32, 36, 40), 0.25, np.float32), tmp_path / "prob.nii.gz", phantom)
    far = make_phantom(origin=(900.0, 0.0, 0.0))
    elsewhere = write(sitk.GetArrayFromImage(sitk.ReadImage(str(case["ref"]))), tmp_path / "far.nii.gz", far)
    attempts = {
        "prob.nii.gz: not a label map (46080 voxels hold non-integer values)": [str(probabilities), str(case["ref"])],
        "far.nii.gz: no physical overlap with": [str(elsewhere), str(case["ref"])],
        "give two label-map files or two folders": [str(case["pred"]), str(tmp_path)],
        "missing.nii.gz: no such file or folder": [str(tmp_path / "missing.nii.gz"), str(case["ref"])],
    }
    for message, paths in attempts.items():
        code = main(["evaluate", *paths, "--progress", "none"])
        err = capsys.readouterr().err.strip()
        assert code == 2, message
        assert len(err.splitlines()) == 1 and err.startswith("medseg: error: ") and message in err


def test_an_intensity_volume_is_refused_as_a_label_map(case: dict[str, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The MRI given instead of its segmentation (stored as integers, so whole-number values)."""
    phantom = make_phantom()
    mri = np.clip(np.round(sitk.GetArrayFromImage(phantom) / 2 + 20), 0, 255).astype(np.uint8)
    assert 32 < len(np.unique(mri)) < 255  # what slipped through: a few dozen "classes", all whole numbers
    mri_path = write(mri, tmp_path / "t1.nii.gz", phantom)
    for paths, named in (([mri_path, case["ref"]], mri_path), ([case["pred"], mri_path], mri_path)):
        code = main(["evaluate", *map(str, paths), "--json", str(tmp_path / "m.json"), "--progress", "none"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1
        assert err.startswith(f"medseg: error: {named}: not a label map") and "intensity image" in err
        assert not (tmp_path / "m.json").exists()

    # A parcellation with many labels (125 blocks, as an atlas) is a label map: evaluated, not refused.
    k, j, i = np.indices(mri.shape)
    atlas = (1 + (k // 7) * 25 + (j // 8) * 5 + i // 8).astype(np.int16)
    assert len(np.unique(atlas)) == 125
    atlas_path = write(atlas, tmp_path / "atlas.nii.gz", phantom)
    shifted_path = write(np.roll(atlas, 1, axis=2), tmp_path / "atlas_pred.nii.gz", phantom)
    code = main(["evaluate", str(shifted_path), str(atlas_path), "--no-surface", "--json", str(tmp_path / "m.json"),
                 "--progress", "none"])
    assert code == 0, capsys.readouterr().err
    classes = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))["classes"]
    assert len(classes) == 126 and 0.5 < classes[60]["dice"] < 1.0  # background is a class too


@pytest.mark.parametrize("name", ["aal.nii.gz", "AICHAmc.nii.gz", "JHU-WhiteMatter-labels-2mm.nii.gz",
                                  "inia19-NeuroMaps.nii.gz", "ch2.nii.gz", "ch2bet.nii.gz", "ch2better.nii.gz"])
def test_real_atlases_are_label_maps_and_colin27_mris_are_not(name: str) -> None:
    """The label-map rule on real files (Debian mricron-data): every atlas passes, every MRI is refused."""
    from MedSegExtension.metrics.label_maps import read_label_map

    path = Path("/usr/share/mricron/templates") / name
    if not path.is_file():
        pytest.skip(f"{path} not installed (make data)")
    if name.startswith("ch2"):
        with pytest.raises(InputError, match=f"{name}: not a label map: .* this looks like an intensity image"):
            read_label_map(path)
    else:
        assert read_label_map(path).image.GetNumberOfPixels() > 0
