"""``medseg train CONFIG`` end to end on real files: train, interrupt with Ctrl-C, resume, errors."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_training import LABELS, write_case

from MedSegExtension.cli.main import main
from MedSegExtension.models.card import ModelCard

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDSEG_BUNDLED_MODELS", str(tmp_path / "bundled"))


def write_config(tmp_path: Path, **training) -> Path:
    """A YAML config with paths relative to its own folder, as a user would write it."""
    for n in range(3):
        write_case(tmp_path / "data", f"c{n}", seed=n)
    config = {
        "model": {"name": "cli-toy", "labels": LABELS, "left_right_pairs": [[1, 2]], "target_spacing": [2, 2, 2],
                  "window_size": [16, 16, 16], "normalization": {"kind": "window", "lower": 0, "upper": 400},
                  "network": {"channels": [4, 8]}},
        "data": {"cases": [{"image": f"data/c{n}_img.nii.gz", "label": f"data/c{n}_seg.nii.gz"} for n in range(2)],
                 "val_cases": [{"image": "data/c2_img.nii.gz", "label": "data/c2_seg.nii.gz"}]},
        "training": {"steps": 3, "batch_size": 1, "val_every": 2, "device": "cpu", "lr": 0.01, **training},
        "output": "out/cli-toy",
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_then_resume_with_more_steps(tmp_path, capsys):
    config = write_config(tmp_path)
    assert main(["train", str(config), "--progress", "json"]) == 0
    out, err = capsys.readouterr()
    folder = tmp_path / "out" / "cli-toy"
    assert f"written to {folder}" in out and "validation Dice" in out
    progress = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    steps = [p for p in progress if "progress" in p and p["message"].startswith("step")]
    assert steps[-1]["message"].startswith("step 3/3 loss") and "ETA" in steps[0]["message"]
    assert ModelCard.load(folder).training["steps"] == 3

    assert main(["train", str(config)]) == 2  # a checkpoint exists: refuse to silently start over
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "pass --resume" in err

    assert main(["train", str(config), "--resume", "--steps", "5", "--progress", "none"]) == 0
    card = ModelCard.load(folder)
    assert card.training["steps"] == 5 and card.training["planned_steps"] == 5
    assert main(["train", str(config), "--restart", "--steps", "1", "--progress", "none"]) == 0
    assert ModelCard.load(folder).training["steps"] == 1


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tmp_path, capsys):
    config = write_config(tmp_path, steps=100000, checkpoint_every=2, val_every=50000)
    last = tmp_path / "out" / "cli-toy" / "checkpoints" / "last.pt"

    def interrupt_once_training_runs() -> None:
        deadline = time.monotonic() + 60
        while not last.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=interrupt_once_training_runs, daemon=True)
    watcher.start()
    assert main(["train", str(config), "--progress", "none"]) == 130
    watcher.join()
    err = capsys.readouterr().err
    assert "training cancelled at step" in err and "--resume" in err
    step = torch.load(last, weights_only=True)["step"]
    assert step >= 2 and not (tmp_path / "out" / "cli-toy" / "model.json").exists()
    assert main(["train", str(config), "--resume", "--steps", str(step + 1), "--progress", "none"]) == 0
    assert ModelCard.load(tmp_path / "out" / "cli-toy").training["steps"] == step + 1


def test_bad_data_is_reported_one_line_per_problem(tmp_path, capsys):
    config = write_config(tmp_path)
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    bad = write_case(tmp_path / "data", "bad", labels=np.full((20, 20, 24), 9, np.uint8))
    raw["data"]["cases"] += [{"image": "data/missing.nii.gz", "label": "data/c0_seg.nii.gz"}, bad]
    config.write_text(yaml.safe_dump(raw))
    assert main(["train", str(config)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("medseg: error: ") and "missing.nii.gz: no such file" in lines[0]
    assert lines[1].startswith(bad["label"]) and "label values 9" in lines[1]
    assert not (tmp_path / "out").exists()


class _WritesMarker:
    """A pickle that, when loaded without ``weights_only``, writes a marker file (a stand-in for any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


def test_resume_refuses_a_planted_pickle_and_resumes_a_real_checkpoint(tmp_path, capsys):
    config = write_config(tmp_path, val_every=50000)
    last = tmp_path / "out" / "cli-toy" / "checkpoints" / "last.pt"
    assert main(["train", str(config), "--steps", "2", "--progress", "none"]) == 0
    assert torch.load(last, weights_only=True)["step"] == 2  # what MedSeg saves loads without pickled code
    real = last.read_bytes()
    capsys.readouterr()

    marker = tmp_path / "marker.txt"
    torch.save({"format": 2, "step": 2, "model": _WritesMarker(marker)}, last)
    planted = tmp_path / "planted-copy.pt"
    planted.write_bytes(last.read_bytes())
    torch.load(planted, weights_only=False)  # the fixture is really hostile: loading it unsafely runs its code
    assert marker.read_text() == "code ran"
    marker.unlink()

    assert main(["train", str(config), "--resume", "--steps", "3", "--progress", "none"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(last) in err and "refused to load" in err and "Traceback" not in err
    assert not marker.exists()

    last.write_bytes(real)
    assert main(["train", str(config), "--resume", "--steps", "3", "--progress", "json"]) == 0
    assert f"resuming from step 2 ({last})" in capsys.readouterr().err
    card = ModelCard.load(tmp_path / "out" / "cli-toy")
    assert card.training["steps"] == 3 and torch.load(last, weights_only=True)["step"] == 3
