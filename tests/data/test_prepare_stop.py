"""`panowan prepare` stopped by SIGTERM / SIGINT (issue 21, fault matrix part B): the room in progress is
finished, no other is begun, exit 128 + signum; a rerun prepares only the missing rooms."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from panowan.cli import main
from panowan.data import prepare as prep


@pytest.fixture
def raw_rooms(tmp_path) -> list[Path]:
    from panowan.data.synth import synth_rooms

    synth_rooms(tmp_path / "data", 3, 5, 32, 64, seed=17)
    for input_dir in (tmp_path / "data").glob("*/*/input"):  # only what a user brings: view 0 and poses
        for f in input_dir.glob("pano0000_to_*"):
            f.unlink()
    rooms = sorted(p for p in (tmp_path / "data").glob("*/*") if p.is_dir())
    assert len(rooms) == 3 and not any(prep.is_prepared(r) for r in rooms)
    return rooms


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_after_the_room_and_a_rerun_prepares_the_rest(raw_rooms, monkeypatch, capsys, signum):
    data = raw_rooms[0].parent.parent
    done: list[str] = []
    real = prep.prepare_room

    def prepare_then_signal(room, **kw):
        result = real(room, **kw)
        done.append(Path(room).name)
        if len(done) == 1:  # lands right after the first room, as a cluster's signal would mid-run
            os.kill(os.getpid(), signum)
        return result

    monkeypatch.setattr(prep, "prepare_room", prepare_then_signal)
    before = signal.getsignal(signum)
    assert main(["prepare", "--data_root", str(data)]) == 128 + signum
    captured = capsys.readouterr()
    assert "prepared 1, already complete 0, failed 0" in captured.out
    assert (
        f"received {signum.name}: stopped before 2 of 3 rooms were done; rerun the same command"
        in captured.err
    )
    assert [prep.is_prepared(r) for r in raw_rooms] == [True, False, False]
    assert not list(raw_rooms[1].glob("input/pano0000_to_*"))  # not begun: no file at all
    assert signal.getsignal(signum) is before

    monkeypatch.setattr(prep, "prepare_room", real)
    assert main(["prepare", "--data_root", str(data)]) == 0
    assert "prepared 2, already complete 1, failed 0" in capsys.readouterr().out
    assert all(prep.is_prepared(r) for r in raw_rooms)
