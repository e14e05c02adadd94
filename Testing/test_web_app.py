"""The web app's parts that need no browser: the session folder's safety rules, the downloads
(written by the module's logic on a real MRML scene), and ``medseg web``'s argument checks."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
from conftest import make_phantom
from MedSegModuleLib.headless import create_scene
from MedSegModuleLib.segmentation_nodes import labels_to_segmentation_node
from MedSegModuleLib.volume_conversion import sitk_to_volume_node
from MedSegWeb.exports import download_name, export_segmentation
from MedSegWeb.work_folder import WorkFolder, sanitise_name

from MedSegExtension.cli.main import main
from MedSegExtension.errors import InputError
from MedSegExtension.models.card import LabelInfo


@pytest.fixture
def folder(tmp_path):
    work = WorkFolder(upload_limit_mb=1, parent=str(tmp_path))
    yield work
    work.remove()


@pytest.mark.parametrize("name, clean", [
    ("../../etc/passwd.nii.gz", "passwd.nii.gz"),
    ("..\\..\\boot.ini.nrrd", "boot.ini.nrrd"),
    (".hidden.mha", "hidden.mha"),
    ("Gehirn Müller (1).nii.gz", "Gehirn_Muller_1_.nii.gz"),
    ("..", ""),
])
def test_names_are_sanitised(name, clean):
    assert sanitise_name(name) == clean


def test_uploads_stay_in_the_folder_and_respect_the_limit(folder, tmp_path):
    saved = folder.save_upload("../../outside.nii.gz", b"x" * 100)
    assert saved.parent == folder.root and saved.name == "outside.nii.gz"
    assert not (tmp_path / "outside.nii.gz").exists()
    with pytest.raises(InputError, match="over the limit of 1 MB"):
        folder.save_upload("big.nrrd", b"x" * (1024 * 1024 + 1))
    assert not folder.path_for("big.nrrd").exists()
    with pytest.raises(InputError, match="not a volume file"):
        folder.save_upload("run.py", b"print(1)")
    with pytest.raises(InputError, match="not a usable file name"):
        folder.path_for("..")
    again = folder.save_upload("outside.nii.gz", b"y")  # a second upload never replaces the first
    assert again != saved and saved.read_bytes() == b"x" * 100


def test_zipped_dicom_is_unpacked_flat_inside_the_folder(folder, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("series/IM0001.dcm", b"a")
        archive.writestr("../../escape.dcm", b"b")
    target = folder.save_upload("scan.zip", buffer.getvalue())
    assert target.parent == folder.root and target.is_dir()
    assert sorted(p.name for p in target.iterdir()) == ["00000_IM0001.dcm", "00001_escape.dcm"]
    assert not (tmp_path / "escape.dcm").exists() and not (folder.root / "scan.zip").exists()
    with pytest.raises(InputError, match="not a valid zip file"):
        folder.save_upload("broken.zip", b"not a zip")


def test_downloads_are_the_segmentation_in_both_formats(folder):
    env = create_scene()
    image = make_phantom()
    volume = sitk_to_volume_node(env.scene, image, "head")
    array = np.zeros(image.GetSize()[::-1], np.uint8)
    array[10:20, 12:20, 5:15] = 2
    array[2:6, 2:6, 2:6] = 1
    labels = sitk.GetImageFromArray(array)
    labels.CopyInformation(image)
    node = labels_to_segmentation_node(env.scene, labels, [LabelInfo(1, "Left", (255, 0, 0)),
                                                           LabelInfo(2, "Right", (0, 0, 255))], "seg", volume)
    seg_path = export_segmentation(node, volume, "seg.nrrd", folder)
    assert seg_path.parent == folder.root and seg_path.name == download_name("head", "seg.nrrd")
    assert [s["name"] for s in slicerio.read_segmentation(str(seg_path), skip_voxels=True)["segments"]] == ["Left", "Right"]
    nii = sitk.ReadImage(str(export_segmentation(node, volume, "nii.gz", folder)))
    assert np.array_equal(sitk.GetArrayFromImage(nii), array)
    assert export_segmentation(node, volume, "nii.gz", folder).is_file()  # a second export replaces the first
    with pytest.raises(InputError, match="unknown download format"):
        export_segmentation(node, volume, "exe", folder)


def test_web_command_checks_its_arguments(tmp_path, capsys):
    assert main(["web", "--port", "70000"]) == 2
    assert "not a port number" in capsys.readouterr().err
    assert main(["web", "--open", str(tmp_path / "missing.nii.gz")]) == 2
    assert "missing.nii.gz: no such file or folder" in capsys.readouterr().err


def test_app_listens_on_localhost_by_default():
    from MedSegWeb.__main__ import build_parser

    from MedSegExtension.cli.main import build_parser as cli_parser

    assert build_parser().parse_args([]).host == "127.0.0.1"
    assert cli_parser().parse_args(["web"]).host == "127.0.0.1"


def _dicom_zip(image: sitk.Image) -> bytes:
    """A real DICOM series (one file per slice, written by SimpleITK/GDCM), zipped in a folder."""
    import tempfile
    from pathlib import Path

    volume = sitk.Cast(sitk.RescaleIntensity(image, 0, 1000), sitk.sitkInt16)
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(buffer, "w") as archive:
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        for k in range(volume.GetDepth()):
            plane = volume[:, :, k]
            for tag, value in (("0020|000e", "1.2.826.0.1.3680043.2.1125.1.1"), ("0020|0013", str(k + 1)),
                               ("0020|0032", "\\".join(map(str, volume.TransformIndexToPhysicalPoint((0, 0, k))))),
                               ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0008|0060", "MR")):
                plane.SetMetaData(tag, value)
            path = Path(tmp) / f"IM{k:04d}.dcm"
            writer.SetFileName(str(path))
            writer.Execute(plane)
            archive.write(path, f"series/{path.name}")
    return buffer.getvalue()


@pytest.fixture
def app():
    pytest.importorskip("trame_slicer", reason="the web extra is not installed")
    from MedSegWeb.app import MedSegWebApp

    web = MedSegWebApp(upload_limit_mb=50)
    yield web
    web.folder.remove()


def test_app_loads_uploads_and_names_bad_ones(app, tmp_path):
    image = make_phantom()
    sitk.WriteImage(image, str(tmp_path / "head.mha"))
    app.on_upload([{"name": "head.mha", "content": (tmp_path / "head.mha").read_bytes()}])
    assert app.state.error == "" and app.state.volume_name == "head"
    assert app.volume_node.GetImageData().GetDimensions() == image.GetSize()

    app.on_upload([{"name": "series.zip", "content": _dicom_zip(image)}])
    assert app.state.error == "" and app.state.volume_name == "series"
    assert app.volume_node.GetImageData().GetDimensions() == image.GetSize()  # the whole series, one volume
    assert [item["title"] for item in app.state.history] == ["head — not segmented", "series — not segmented"]
    labels = sitk.Cast(image > 150, sitk.sitkUInt8)
    segmentation = labels_to_segmentation_node(app.slicer.scene, labels, [LabelInfo(1, "Blob", (255, 0, 0))],
                                                "seg", app.volume_node)
    app._show_segmentation(segmentation, "tiny")
    assert app.state.history[1]["title"] == "series — tiny" and app.state.segments[0]["name"] == "Blob"
    app.select_upload(0)  # back to the first upload: the history keeps it, without the other's segments
    assert app.state.volume_name == "head" and app.volume_node.GetName() == "head"
    assert app.segmentation_node is None and app.state.segments == []
    assert not segmentation.GetDisplayNode().GetVisibility()
    app.select_upload(1)
    assert app.segmentation_node is segmentation and segmentation.GetDisplayNode().GetVisibility()
    app.select_upload(0)
    app.select_upload(7)  # no such upload: nothing changes
    assert app.state.current == 0

    app.on_upload([{"name": "broken.nii.gz", "content": b"not a volume"}])
    assert "broken.nii.gz" in app.state.error
    assert app.state.volume_name == "head" and len(app.history.uploads) == 2  # the loaded volume stays


def test_app_evaluates_against_an_uploaded_reference(app, tmp_path, tiny_model_dir):
    import asyncio

    from MedSegModuleLib.evaluation import EvaluationRun

    from MedSegExtension.models.card import ModelCard

    image = make_phantom()
    sitk.WriteImage(image, str(tmp_path / "head.nrrd"))
    app.on_upload([{"name": "head.nrrd", "content": (tmp_path / "head.nrrd").read_bytes()}])
    app.state.model = str(tiny_model_dir)
    card = ModelCard.load(tiny_model_dir)
    prediction = np.zeros(image.GetSize()[::-1], np.uint8)
    prediction[8:24, 8:28, 4:16] = 1
    prediction[8:24, 8:28, 20:30] = 2
    reference = prediction.copy()
    reference[8:24, 8:28, 20:25] = 0  # half of label 2 missing in the reference
    predicted = sitk.GetImageFromArray(prediction)
    predicted.CopyInformation(image)
    app._show_segmentation(labels_to_segmentation_node(app.slicer.scene, predicted, card.labels, "pred", app.volume_node))
    truth = sitk.GetImageFromArray(reference)
    truth.CopyInformation(image)
    sitk.WriteImage(truth, str(tmp_path / "truth.nii.gz"))
    app.on_reference([{"name": "truth.nii.gz", "content": (tmp_path / "truth.nii.gz").read_bytes()}])
    assert app.state.error == "" and app.state.reference_name == "truth.nii.gz"

    asyncio.run(app._follow(lambda: EvaluationRun(app.slicer.scene, app.segmentation_node, app.reference_node,
                                                  volume_node=app.volume_node), "Evaluating...", app._evaluated))
    assert app.state.error == ""
    rows = {row["name"]: row for row in app.state.evaluation}
    assert rows["Left blob"]["dice"] == "1"
    assert float(rows["Right blob"]["dice"]) == pytest.approx(2 * 5 / (10 + 5), abs=0.01)
    assert app.state.mean_dice and "<html" in app.report_html.lower()


def test_medseg_web_serves_and_stops_with_its_app(tmp_path):
    """``medseg web`` starts the app on localhost; SIGTERM to the command ends the app too."""
    pytest.importorskip("trame_slicer", reason="the web extra is not installed")
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from MedSegWeb.browser import free_port

    port = free_port()
    log = open(tmp_path / "web.log", "w")  # noqa: SIM115
    command = subprocess.Popen([sys.executable, "-m", "MedSegExtension", "web", "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 120
        while True:
            assert command.poll() is None, (tmp_path / "web.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "medseg web did not answer"
                time.sleep(0.5)
        command.send_signal(signal.SIGTERM)
        command.wait(timeout=30)
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
    finally:
        if command.poll() is None:
            command.kill()
        log.close()
