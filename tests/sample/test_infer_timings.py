"""`panowan infer --timings_json`: every phase timed, and the completion files unchanged by the flag."""

from __future__ import annotations

import argparse
import hashlib
import json
import warnings
from pathlib import Path

from panowan.commands import infer as infer_cmd

ROOM = "area_000/room_0000"
ROOM_PHASES = ("read", "encoders", "vae_encode", "denoise", "vae_decode", "write")


def _infer(data_root: Path, output_dir: Path, *extra: str) -> None:
    parser = argparse.ArgumentParser()
    infer_cmd.add_arguments(parser)
    args = parser.parse_args(["--data_root", str(data_root), "--output_dir", str(output_dir), "--seed", "5",
                              "--num_inference_steps", "2", "--num_frames", "5", "--resolution", "32",
                              "--device", "cpu", *extra])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained-default warning, where the package holds no model
        infer_cmd.infer(args)


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def test_timings_json_times_every_phase_and_changes_no_file(prepared_root: Path, tmp_path: Path) -> None:
    timings = tmp_path / "timings.json"
    _infer(prepared_root, tmp_path / "plain")
    _infer(prepared_root, tmp_path / "timed", "--timings_json", str(timings))

    assert _digests(tmp_path / "plain") == _digests(tmp_path / "timed")  # completion.json included
    assert "timings" not in (tmp_path / "timed" / ROOM / "completion.json").read_text()
    report = json.loads(timings.read_text())
    assert report["world_size"] == 1 and report["steps"] == 2 and report["device"] == "cpu"
    assert report["load_model"] > 0 and report["infer"] > report["load_model"]
    room = report["rooms"][ROOM]
    assert set(room) == {*ROOM_PHASES, "total"}
    assert all(room[p] > 0 for p in ROOM_PHASES)
    assert sum(room[p] for p in ROOM_PHASES) <= room["total"]
    assert report["ranks"][0]["rooms"][ROOM] == room
