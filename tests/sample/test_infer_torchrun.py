"""`torchrun --nproc_per_node=2 -m panowan infer`: one stream per rank writes what one process writes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _infer(cmd: list[str], data: Path, out: Path, *extra: str) -> None:
    args = ["-m", "panowan", "infer", "--data_root", str(data), "--output_dir", str(out), "--num_inference_steps",
            "3", "--num_frames", "5", "--resolution", "32", "--seed", "11", "--device", "cpu", *extra]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]


def _torchrun() -> list[str]:
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(port)]


def _assert_same_room(one: Path, two: Path, views: int) -> None:
    import cv2

    for v in range(views):
        a = cv2.imread(str(one / f"panorama_{v:04d}.png")).astype(int)
        b = cv2.imread(str(two / f"panorama_{v:04d}.png")).astype(int)
        assert np.abs(a - b).max() <= 1, v
        da = np.load(one / f"panorama_{v:04d}_depth.npy")
        db = np.load(two / f"panorama_{v:04d}_depth.npy")
        np.testing.assert_allclose(da, db, rtol=1e-4, atol=1e-5)


def test_two_ranks_complete_a_room_in_passes_with_batched_guidance(tmp_path: Path) -> None:
    """7 views with 5 frames a pass: two passes, the second holding completed views as known frames, and
    guidance 2 as one forward of batch 2 through the point-to-point exchange; the pair writes what one process
    writes, every view."""
    import json

    from panowan.data.prepare import prepare_rooms
    from panowan.data.synth import synth_rooms

    data = tmp_path / "data"
    synth_rooms(data, 1, 7, 32, 64, seed=77)
    assert not prepare_rooms(data, progress=False).failed
    _infer([sys.executable], data, tmp_path / "one", "--guidance_scale", "2")
    _infer(_torchrun(), data, tmp_path / "two", "--guidance_scale", "2")
    room = "area_000/room_0000"
    _assert_same_room(tmp_path / "one" / room, tmp_path / "two" / room, 7)
    record = json.loads((tmp_path / "two" / room / "completion.json").read_text())
    assert record["views"] == list(range(7))


def test_two_ranks_write_what_one_process_writes(prepared_root: Path, tmp_path: Path) -> None:
    _infer([sys.executable], prepared_root, tmp_path / "one")
    _infer(_torchrun(), prepared_root, tmp_path / "two")
    room = "area_000/room_0000"
    _assert_same_room(tmp_path / "one" / room, tmp_path / "two" / room, 5)
    assert (tmp_path / "two" / room / "room.ply").is_file()
