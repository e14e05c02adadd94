"""The web app end to end in a real headless Chromium: upload the demo head -> Segment -> segments
drawn in the axial view (the screenshot's pixels) -> paint one stroke -> Download -> the file is a
valid segmentation that holds the stroke. Skips (saying why) only where the browser or the web
extra cannot be installed; scripts/install_browser.sh installs them from Debian."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO

from MedSegExtension.cli.demo import DEMO_VOLUMES
from MedSegExtension.models.card import ModelCard

if importlib.util.find_spec("trame_slicer") is None:
    pytest.skip("trame-slicer not installed (the web extra: pip install -e '.[web]')", allow_module_level=True)

from MedSegWeb.browser import AppPage, AppServer, browser_missing, chrome, overlay_pixels  # noqa: E402

MODEL = REPO / "Resources" / "Models" / "brain-deep-structures"


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    if not DEMO_VOLUMES[0].is_file():
        pytest.skip(f"{DEMO_VOLUMES[0]}: demo head not installed (make data)")
    folder = tmp_path_factory.mktemp("web")
    downloads = folder / "downloads"
    downloads.mkdir()
    with AppServer(folder / "server.log") as server:
        driver = chrome(downloads)
        try:
            yield AppPage(driver, server.url, downloads)
        finally:
            driver.quit()


def painted_voxels(before: sitk.Image, after: sitk.Image, value: int) -> np.ndarray:
    a, b = sitk.GetArrayFromImage(before), sitk.GetArrayFromImage(after)
    return np.argwhere((a != value) & (b == value))


@pytest.mark.slow
def test_cancel_stops_the_run_and_adds_nothing(page):
    page.upload(DEMO_VOLUMES[0])
    page.click("medseg-segment")
    # the engine reports its stages while the page stays live; then Cancel
    page.wait_for(lambda: page.status() not in ("Volume loaded.", "Segmenting..."), "engine progress", 120)
    page.click("medseg-cancel")
    page.wait_for(lambda: "cancelled" in page.status(), "cancelled status", 60)
    assert "nothing was added" in page.status()
    assert page.driver.find_element("id", "medseg-segments").text.strip() == ""
    assert page.driver.find_element("id", "medseg-segment").is_enabled()  # ready for another run


@pytest.mark.slow
def test_upload_segment_paint_download(page):
    labels = ModelCard.load(MODEL).labels
    colours = [label.color for label in labels]
    page.upload(DEMO_VOLUMES[0])
    assert not page.error()
    assert page.status().startswith("Volume loaded")
    assert overlay_pixels(page.view_pixels(), colours) < 20  # the bare MRI is grey

    progress = page.segment()
    assert not page.error(), page.error()
    assert page.status().startswith("Segmented with brain-deep-structures")
    assert max(progress) == 100 and any(0 < value < 100 for value in progress)  # progress was reported on the way
    assert overlay_pixels(page.view_pixels(), colours) > 500  # the segments are drawn in the axial view
    assert "Left caudate nucleus" in page.driver.find_element("id", "medseg-segments").text

    before = sitk.ReadImage(str(page.download("medseg-download-nii", ".nii.gz")))
    assert before.GetSize() == sitk.ReadImage(str(DEMO_VOLUMES[0])).GetSize()

    page.select_segment("Left lentiform nucleus")  # paint with the third segment (label 3)
    page.click("medseg-paint")
    page.stroke((-70, -170), (70, -170))  # frontal white matter: no deep structure there
    page.click("medseg-paint")  # paint off

    import slicerio

    segmentation = slicerio.read_segmentation(str(page.download("medseg-download-seg", ".seg.nrrd")))
    assert [segment["name"] for segment in segmentation["segments"]] == [label.name for label in labels]
    after = sitk.ReadImage(str(page.download("medseg-download-nii", ".nii.gz")))
    stroke = painted_voxels(before, after, value=3)
    assert len(stroke) > 20, "the painted stroke is not in the downloaded segmentation"
    assert len(np.unique(stroke[:, 0])) <= 3  # one axial stroke: on (about) one slice
    lentiform_before = np.argwhere(sitk.GetArrayFromImage(before) == 3)
    assert abs(stroke[:, 1].mean() - lentiform_before[:, 1].mean()) > 10  # away from where the segment was
    in_seg_file = slicerio.extract_segments(segmentation, [("Left lentiform nucleus", 1)])["voxels"]
    assert int((in_seg_file == 1).sum()) == int((sitk.GetArrayFromImage(after) == 3).sum())  # .seg.nrrd has it too

    page.click("medseg-undo")
    undone = sitk.ReadImage(str(page.download("medseg-download-nii", ".nii.gz")))
    assert len(painted_voxels(before, undone, value=3)) == 0  # Undo took the stroke back


@pytest.mark.slow
def test_evaluate_against_the_downloaded_segmentation(page):
    """After the test above: the app's own .nii.gz as the reference gives Dice 1 for every segment."""
    reference = page.download("medseg-download-nii", ".nii.gz")
    page.upload(reference, "medseg-reference", done="Reference loaded")
    assert not page.error(), page.error()
    page.click("medseg-evaluate")
    page.wait_for(lambda: page.status().startswith("Mean Dice") or page.error(), "evaluation result", 300)
    assert not page.error(), page.error()
    assert page.driver.find_element("id", "medseg-mean-dice").text == "Mean Dice 1.000"
    table = page.driver.find_element("id", "medseg-evaluation").text
    assert "Left caudate nucleus" in table


@pytest.mark.slow
def test_history_switches_between_this_sessions_uploads(page):
    """After the tests above: two uploads of the head, the second one segmented."""
    page.choose("medseg-history", "ch2 — not segmented")
    page.wait_for(lambda: page.status() == "ch2 shown.", "first upload shown", 30)
    assert page.driver.find_element("id", "medseg-segments").text.strip() == ""
    page.choose("medseg-history", "ch2 — brain-deep-structures")
    page.wait_for(lambda: "Left caudate nucleus" in page.driver.find_element("id", "medseg-segments").text,
                  "second upload's segments", 30)
