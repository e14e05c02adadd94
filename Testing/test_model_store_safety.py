"""The user model store under hostile and careless use: concurrent saves, kills, planted cards and pickles.

Every case runs on real files the test writes (cards, weights, pickles, symlinks), mostly through
``medseg`` itself; savers that race or are killed are real processes.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import SimpleITK as sitk
from conftest import REPO, make_phantom

from MedSegExtension.cli.main import main
from MedSegExtension.models.card import ModelCard
from MedSegExtension.models.registry import ModelRegistry, sha256_of, verify_weights

ENV = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'Testing'}", "OMP_NUM_THREADS": "1"}

# A saver process: waits for the start file so all savers race, then saves a new version of "race"
# with its own weights (1 MB of bytes: torch stays out of the race, which makes the test fast).
SAVER = """
import os, sys, time
from pathlib import Path
from MedSegExtension.models.card import ModelCard
from MedSegExtension.models.registry import ModelRegistry, create_user_model, sha256_of
user, start = Path(sys.argv[1]), Path(sys.argv[2])
card = ModelCard.load(sys.argv[3])
card.name = "race"
def write(folder, version):
    (folder / card.weights_file).write_bytes(os.urandom(1 << 20))
    card.version, card.sha256 = str(version), sha256_of(folder / card.weights_file)
    card.save(folder)
while not start.exists():
    time.sleep(0.002)
print(create_user_model("race", write, ModelRegistry(bundled=user / "none", user=user)).name)
"""

# A saver that is killed while it writes: it announces its hidden folder and then hangs.
HANGING_SAVER = """
import os, sys, time
from pathlib import Path
from MedSegExtension.models.registry import ModelRegistry, create_user_model
user = Path(sys.argv[1])
def write(folder, version):
    (folder / "model.pt").write_bytes(b"half")
    (folder / f".model.json.{os.getpid()}-abc.partial.json").write_text("{")
    print(folder, flush=True)
    time.sleep(600)
create_user_model("halfmade", write, ModelRegistry(bundled=user / "none", user=user))
"""


@pytest.fixture
def store(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Bundled models: the tiny one; user models: an empty store under MEDSEG_HOME."""
    monkeypatch.setenv("MEDSEG_BUNDLED_MODELS", str(tiny_model_dir.parent))
    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path / "home"))
    user = tmp_path / "home" / "models"
    user.mkdir(parents=True)
    return user


def run_cli(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def user_model(store: Path, tiny_model_dir: Path, name: str, **card_changes: object) -> Path:
    """A copy of the tiny model as user model ``name``, with its card edited as given."""
    folder = store / name
    folder.mkdir()
    (folder / "model.pt").write_bytes((tiny_model_dir / "model.pt").read_bytes())
    data = json.loads((tiny_model_dir / "model.json").read_text())
    data.update(name=name, **card_changes)
    (folder / "model.json").write_text(json.dumps(data))
    return folder


def test_concurrent_saves_of_one_name_get_distinct_verified_versions(tiny_model_dir: Path, tmp_path: Path) -> None:
    user, start = tmp_path / "store", tmp_path / "start"
    savers = [subprocess.Popen([sys.executable, "-c", SAVER, str(user), str(start), str(tiny_model_dir)], env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    time.sleep(2)
    start.touch()
    results = [saver.communicate(timeout=120) for saver in savers]
    assert all(saver.returncode == 0 for saver in savers), [err for _out, err in results]
    saved = sorted(out.split()[0] for out, _err in results)
    assert saved == ["race", "race-v2", "race-v3", "race-v4"]
    registry = ModelRegistry(bundled=tmp_path / "none", user=user)
    cards = registry.user_models()
    assert sorted(card.folder.name for card in cards) == saved
    for card in cards:
        verify_weights(card)  # each card's sha256 is its own weights' (mixed files would mismatch)
        assert card.version == ("1" if card.folder.name == "race" else card.folder.name.rsplit("-v", 1)[1])
    assert len({card.sha256 for card in cards}) == 4  # four different weights, none overwritten
    assert sorted(p.name for p in user.iterdir()) == saved  # no hidden temporaries left


def test_a_killed_save_leaves_no_model_and_its_leftovers_are_removed(store: Path, capsys) -> None:
    saver = subprocess.Popen([sys.executable, "-c", HANGING_SAVER, str(store)], env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hidden = Path(saver.stdout.readline().strip())
    assert hidden.parent == store and hidden.name.startswith(".tmp-") and (hidden / "model.pt").is_file()
    code, out, _err = run_cli(capsys, "models")
    assert code == 0 and "halfmade" not in out and hidden.is_dir()  # a live saver's folder is kept
    saver.send_signal(signal.SIGKILL)
    saver.wait(timeout=30)
    finished = store / "done"  # a complete model whose folder kept a killed writer's partial file
    finished.mkdir()
    (finished / f".model.pt.{saver.pid}-x1y2.partial.pt").write_bytes(b"half")
    for name, age_days in (("halfmade-v3", 2), ("fresh-empty", 0)):  # an old MedSeg's empty version folder
        (store / name).mkdir()
        os.utime(store / name, (time.time() - age_days * 86400,) * 2)

    code, out, _err = run_cli(capsys, "models")
    assert code == 0 and "halfmade" not in out
    assert not hidden.exists() and list(finished.iterdir()) == []
    assert sorted(p.name for p in store.iterdir()) == ["done", "fresh-empty"]  # a fresh one may be in use


def test_a_malformed_user_card_is_skipped_with_one_warning(store: Path, tiny_model_dir: Path, capsys) -> None:
    user_model(store, tiny_model_dir, "good")
    (user_model(store, tiny_model_dir, "badjson") / "model.json").write_text("{not json")
    user_model(store, tiny_model_dir, "badtypes", labels="Liver", window_size=[96, "x", 1])
    (user_model(store, tiny_model_dir, "notobject") / "model.json").write_text("[1, 2]")

    code, out, err = run_cli(capsys, "models")
    assert code == 0
    assert "good 0.0.1 [user]" in out and "tiny-test" in out
    warnings = err.splitlines()
    assert len(warnings) == 3 and all(line.startswith("medseg: warning: ") for line in warnings)
    for name in ("badjson", "badtypes", "notobject"):
        assert sum(str(store / name / "model.json") in line for line in warnings) == 1

    volume = store.parent / "head.nii.gz"
    sitk.WriteImage(make_phantom(), str(volume))
    code, _out, err = run_cli(capsys, "predict", volume, "--model", "badtypes", "-o", store.parent / "o.nii.gz")
    assert code == 2 and err.count("\n") == 1 and "badtypes" in err and "malformed model card" in err
    code, _out, err = run_cli(capsys, "predict", volume, "--model", "good", "-o", store.parent / "o.nii.gz")
    assert code == 0, err


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_weights_outside_the_model_folder_are_refused(store: Path, tiny_model_dir: Path, tmp_path, where, capsys) -> None:
    outside = tmp_path / "outside.pt"
    outside.write_bytes((tiny_model_dir / "model.pt").read_bytes())
    weights = {"parent": "../../../outside.pt", "absolute": str(outside), "symlink": "link.pt"}[where]
    folder = user_model(store, tiny_model_dir, "planted", weights_file=weights, sha256=sha256_of(outside))
    if where == "symlink":
        (folder / "link.pt").symlink_to(outside)
    volume = tmp_path / "head.nii.gz"
    sitk.WriteImage(make_phantom(), str(volume))
    code, _out, err = run_cli(capsys, "predict", volume, "--model", folder, "-o", tmp_path / "o.nii.gz")
    assert code == 2 and err.count("\n") == 1 and "points outside the model folder" in err
    assert not (tmp_path / "o.nii.gz").exists()


class Planted:
    """A pickle that would run a command when unpickled without weights_only."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/medseg-pwned",))


def test_a_pickle_with_code_is_refused_in_one_line(store: Path, tiny_model_dir: Path, tmp_path, capsys) -> None:
    folder = user_model(store, tiny_model_dir, "pickled")
    (folder / "model.pt").write_bytes(pickle.dumps({"state_dict": Planted()}))
    data = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**data, "sha256": sha256_of(folder / "model.pt")}))
    assert ModelCard.load(folder).sha256 == sha256_of(folder / "model.pt")
    volume = tmp_path / "head.nii.gz"
    sitk.WriteImage(make_phantom(), str(volume))
    code, _out, err = run_cli(capsys, "predict", volume, "--model", "pickled", "-o", tmp_path / "o.nii.gz")
    assert code == 2 and err.count("\n") == 1
    assert "refused" in err and "never runs code" in err and "weights_only" not in err
