"""benchmarks/bench_infer_room.py at tiny scale on the CPU: every step of the 14B GPU run (random-weight base
folder, room, untrained checkpoint, torchrun infer with --timings_json, plain forward) runs end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_infer_room.py"

pytestmark = pytest.mark.timeout(240)  # ~25 s on 2 idle cores; torchrun of 2 processes


def test_tiny_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    out, work = tmp_path / "bench_tiny.json", tmp_path / "work"
    cmd = [sys.executable, str(BENCH), "--scale", "tiny", "--views", "5", "--height", "64", "--steps", "2",
           "--nproc", "2", "--out", str(out), "--workdir", str(work)]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=220)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]

    result = json.loads(out.read_text())
    assert "error" not in result and not work.exists()  # the work folder is deleted without --keep
    assert result["shape"]["latent_thw"] == [2, 8, 16] and result["nproc"] == 2
    assert result["base"]["write_s"] > 0 and result["room"]["prepare_s"] > 0
    assert result["infer_wall_s"] > result["infer_timings"]["load_model"] > 0
    assert "--timings_json" in result["commands"]["infer"]
    room = result["infer_timings"]["rooms"]["area_000/room_0000"]
    assert all(room[k] > 0 for k in ("encoders", "vae_encode", "denoise", "vae_decode", "write", "total"))
    assert {r["streams"][0] for r in result["infer_timings"]["ranks"]} == {"rgb", "depth"}
    assert result["plain_forward"]["median_s"] > 0 and result["ratio_wall_to_steps_x_forward"] > 1
    assert "INFER WALL" in done.stdout
