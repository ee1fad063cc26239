"""scripts/train_default_model.py: runs side by side share one copy of the training rooms (`--data`)."""

from __future__ import annotations

import argparse
import importlib.util
import threading
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_default_model.py"


@pytest.fixture
def script(monkeypatch):
    """The script as a module, its `sh` replaced by a recorder that writes a room folder for `synth`."""
    spec = importlib.util.spec_from_file_location("train_default_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls: list[str] = []

    def fake_sh(*cmd: str, timeout=None) -> int:
        command = cmd[cmd.index("panowan") + 1]
        calls.append(command)
        if command == "synth":
            out = Path(cmd[cmd.index("--out") + 1])
            (out / "area_000" / "room_0000").mkdir(parents=True)
            time.sleep(0.2)  # long enough for a concurrent caller to arrive while the rooms are built
        return 0

    monkeypatch.setattr(module, "sh", fake_sh)
    module.calls = calls
    return module


def _args(**kw) -> argparse.Namespace:
    base = {"rooms": 4, "resolution": 32, "train_seed": 0, "data_workers": 1, "difficulty": "easy"}
    return argparse.Namespace(**{**base, **kw})


def test_data_is_built_once_and_reused(script, tmp_path):
    data = tmp_path / "rooms"
    script.make_data(_args(), data, ["python", "-m", "panowan"])
    script.make_data(_args(), data, ["python", "-m", "panowan"])
    assert script.calls == ["synth", "prepare"]
    assert (data / "area_000" / "room_0000").is_dir()


def test_concurrent_runs_wait_for_one_build(script, tmp_path):
    data = tmp_path / "rooms"
    threads = [
        threading.Thread(target=script.make_data, args=(_args(), data, ["python", "-m", "panowan"]))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert script.calls == ["synth", "prepare"]


def test_other_rooms_in_the_folder_are_refused(script, tmp_path):
    data = tmp_path / "rooms"
    script.make_data(_args(), data, ["python", "-m", "panowan"])
    with pytest.raises(SystemExit, match="holds other rooms"):
        script.make_data(_args(resolution=64), data, ["python", "-m", "panowan"])


def test_an_unfinished_copy_is_rebuilt(script, tmp_path):
    data = tmp_path / "rooms"
    (data / "area_000" / "room_0000").mkdir(parents=True)  # a build cut short: no marker
    (data / "stale.txt").write_text("left over")
    script.make_data(_args(), data, ["python", "-m", "panowan"])
    assert script.calls == ["synth", "prepare"]
    assert not (data / "stale.txt").exists()
