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


def _infer(cmd: list[str], data: Path, out: Path) -> None:
    args = ["-m", "panowan", "infer", "--data_root", str(data), "--output_dir", str(out), "--num_inference_steps",
            "3", "--num_frames", "5", "--resolution", "32", "--seed", "11", "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_ranks_write_what_one_process_writes(prepared_root: Path, tmp_path: Path) -> None:
    import cv2

    _infer([sys.executable], prepared_root, tmp_path / "one")
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port",
        str(port),
    ]
    _infer(torchrun, prepared_root, tmp_path / "two")
    room = "area_000/room_0000"
    for v in range(5):
        a = cv2.imread(str(tmp_path / "one" / room / f"panorama_{v:04d}.png")).astype(int)
        b = cv2.imread(str(tmp_path / "two" / room / f"panorama_{v:04d}.png")).astype(int)
        assert np.abs(a - b).max() <= 1
        da = np.load(tmp_path / "one" / room / f"panorama_{v:04d}_depth.npy")
        db = np.load(tmp_path / "two" / room / f"panorama_{v:04d}_depth.npy")
        np.testing.assert_allclose(da, db, rtol=1e-4, atol=1e-5)
    assert (tmp_path / "two" / room / "room.ply").is_file()
