"""`panowan infer` stopped by SIGTERM (issue 21, fault matrix part B): the room in progress is written whole,
no other is begun, exit 143; a rerun completes only the missing rooms (complete = every output file, same
sampling settings), and --overwrite or other settings redo them."""

from __future__ import annotations

import os
import signal
import warnings
from pathlib import Path

import pytest

from panowan.cli import main
from panowan.sample import completer as completer_mod
from panowan.sample.pipeline import room_output_files

ROOMS = ["area_000/room_0000", "area_000/room_0001"]


@pytest.fixture(scope="module")
def two_rooms(tmp_path_factory) -> Path:
    from panowan.data.prepare import prepare_rooms
    from panowan.data.synth import synth_rooms

    root = tmp_path_factory.mktemp("rooms")
    synth_rooms(root, 2, 5, 32, 64, seed=31)
    assert not prepare_rooms(root, progress=False).failed
    return root


def _infer(data: Path, out: Path, *extra: str) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained-default warning
        return main(["infer", "--data_root", str(data), "--output_dir", str(out), "--num_inference_steps", "2",
                     "--num_frames", "5", "--resolution", "32", "--device", "cpu", *extra])  # fmt: skip


class Calls(list):
    """Room ids completed, in order; with `signal_after_first`, this process sends itself SIGTERM once the
    first room is completed (before it is written), as a cluster would while a room is in progress."""

    signal_after_first = False


@pytest.fixture
def completed(monkeypatch) -> Calls:
    calls = Calls()
    real = completer_mod.Completer.complete

    def complete(self, room, **kw):
        result = real(self, room, **kw)
        calls.append(result.room_id)
        if len(calls) == 1 and calls.signal_after_first:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(completer_mod.Completer, "complete", complete)
    return calls


def _mtimes(out: Path, room: str) -> dict[str, int]:
    return {f.name: f.stat().st_mtime_ns for f in room_output_files(out / room, range(5))}


def test_sigterm_stops_after_the_room_and_a_rerun_completes_only_the_rest(
    two_rooms, tmp_path, completed, capsys
) -> None:
    out = tmp_path / "pred"
    before = signal.getsignal(signal.SIGTERM)
    completed.signal_after_first = True
    assert _infer(two_rooms, out) == 128 + signal.SIGTERM
    assert (
        "received SIGTERM: stopped with 1 rooms not begun; rerun the same command" in capsys.readouterr().err
    )
    assert completed == ROOMS[:1]
    files = room_output_files(out / ROOMS[0], range(5))  # what the skip checks is what write_room writes
    assert sorted(f.name for f in files) == sorted(
        f.name for f in (out / ROOMS[0]).iterdir()
    )  # written whole
    assert not (out / ROOMS[1]).exists()  # not begun
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are put back
    first = _mtimes(out, ROOMS[0])

    completed.signal_after_first = False
    assert _infer(two_rooms, out) == 0
    assert completed == ROOMS  # only the missing room was completed
    assert _mtimes(out, ROOMS[0]) == first
    assert all(f.is_file() for f in room_output_files(out / ROOMS[1], range(5)))
    assert _infer(two_rooms, out) == 0 and completed == ROOMS  # nothing left to do

    # A room counts as done only for the same sampling settings; --overwrite redoes it anyway.
    assert _infer(two_rooms, out, "--seed", "5") == 0 and completed == ROOMS * 2
    assert _infer(two_rooms, out, "--seed", "5", "--overwrite") == 0 and completed == ROOMS * 3


def test_a_room_missing_one_file_is_redone(two_rooms, tmp_path, completed) -> None:
    out = tmp_path / "pred"
    assert _infer(two_rooms, out, "--rooms", ROOMS[0]) == 0
    (out / ROOMS[0] / "panorama_0003_depth.npy").unlink()  # e.g. a second signal while it was written
    assert _infer(two_rooms, out, "--rooms", ROOMS[0]) == 0
    assert completed == [ROOMS[0], ROOMS[0]]
    assert (out / ROOMS[0] / "panorama_0003_depth.npy").is_file()


def test_a_room_completed_by_other_weights_is_redone(two_rooms, tmp_path, completed) -> None:
    """The skip compares the weights too: completion.json records the model's fingerprint (an export's weights
    sha256), so switching --model_dir redoes every room; the same model again skips them."""
    from panowan.commands.infer import export_embedded
    from panowan.models.replicas import tiny_dual_stream

    models = []
    for seed in (1, 2):
        model, _ = tiny_dual_stream(seed=seed)
        export_embedded(model, {"resolution": 32, "num_frames": 5}, tmp_path / f"m{seed}", compact=False)
        models.append(["--model_dir", str(tmp_path / f"m{seed}")])
    out = tmp_path / "pred"
    assert _infer(two_rooms, out, *models[0]) == 0 and completed == ROOMS
    assert _infer(two_rooms, out, *models[0]) == 0 and completed == ROOMS  # same weights: skipped
    assert _infer(two_rooms, out, *models[1]) == 0 and completed == ROOMS * 2  # other weights: redone
    import json

    recorded = json.loads((out / ROOMS[0] / "completion.json").read_text())
    assert recorded["model_fingerprint"].startswith("sha256:")
