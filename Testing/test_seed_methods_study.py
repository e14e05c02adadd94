"""The seed-methods study's own parts: its label noise and its table (the runs themselves are the benchmark)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # ``benchmarks`` is not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks.seed_methods import markdown, planned_runs  # noqa: E402
from benchmarks.seed_methods_data import corrupt  # noqa: E402


def two_boxes() -> np.ndarray:
    labels = np.zeros((30, 30, 40), np.uint8)
    labels[10:20, 10:20, 5:15] = 1
    labels[10:20, 10:20, 25:35] = 2
    return labels


def test_label_noise_dilates_into_background_or_erodes_by_n_millimetres():
    labels = two_boxes()
    seen = set()
    for seed in range(12):
        noisy, how = corrupt(labels, np.random.default_rng(seed))
        kind, n, _ = how.split()
        n = int(n)
        assert 5 <= n <= 13
        seen.add(kind)
        grid_voxels = n // 2  # 2 mm grid
        for value in (1, 2):
            line = noisy[15, 15] == value  # along i, through the box centre
            width = int(line.sum())
            if kind == "dilated":
                assert (noisy[labels == value] == value).all()  # a class keeps its voxels ...
                assert width >= 10 + grid_voxels  # ... and grows (into background only: the other box stays)
            else:
                assert (labels[noisy == value] == value).all() and width == max(10 - 2 * grid_voxels, 0)
        assert (noisy[labels == 2] != 1).all() and (noisy[labels == 1] != 2).all()
    assert seen == {"dilated", "eroded"}


def test_the_table_shows_the_share_of_lost_dice_each_method_recovers():
    runs = []
    dice = {"clean_unet3d": 0.9, "noise25_none": 0.8, "noise25_qam": 0.85, "noise25_qam_ocm": 0.9,
            "noise50_none": 0.5, "noise50_qam": 0.5, "noise50_qam_ocm": 0.7,
            "noise75_none": 0.3, "noise75_qam": 0.2, "noise75_qam_ocm": 0.6}
    for run in planned_runs(["noise"]):
        runs.append({**run, "mean_dice": dice[run["name"]], "steps": 10, "parameters": 1000})
    text = markdown({"commit": "0123456789abc", "cpu_seconds_per_run": 60, "load_before": [2.0], "load_after": [3.0],
                     "runs": runs})
    assert "| 25 % | 0.800 | 0.850 (+50%) | 0.900 (+100%) |" in text
    assert "| 50 % | 0.500 | 0.500 (+0%) | 0.700 (+50%) |" in text
    assert "| 75 % | 0.300 | 0.200 (-17%) | 0.600 (+50%) |" in text
    assert len(planned_runs(["noise", "models"])) == 1 + 9 + 5  # the clean 3D baseline is run once for both


def test_a_partial_study_says_which_cells_were_not_run():
    runs = [{**run, "mean_dice": 0.9 if run["name"] == "clean_unet3d" else 0.6, "steps": 10, "parameters": 1000}
            for run in planned_runs(["noise"]) if run["name"] in ("clean_unet3d", "noise50_none", "noise50_qam_ocm")]
    text = markdown({"commit": "0123456789abc", "cpu_seconds_per_run": 60, "load_before": [2.0], "load_after": [3.0],
                     "runs": runs})
    assert "| 50 % | 0.600 | not run | 0.600 (+0%) |" in text and "| 25 % | not run | not run | not run |" in text
