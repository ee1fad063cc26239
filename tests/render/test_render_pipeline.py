"""Rendered rooms read through `panowan prepare`, `panowan train` and `panowan infer` unchanged (64 x 128)."""

from __future__ import annotations

import json

import numpy as np
import torch
from render_scenes import make_quads, write_glb

from panowan.cli import main


def test_rendered_room_prepares_trains_and_completes(tmp_path) -> None:
    torch.set_num_threads(1)
    (tmp_path / "scans" / "house").mkdir(parents=True)
    mesh = write_glb(tmp_path / "scans" / "house" / "living_room.glb", make_quads("y"))
    data = tmp_path / "data"
    assert main(["render", "--mesh", str(mesh), "--out", str(data), "--views", "5", "--height", "64",
                 "--width", "128", "--prepare", "--description", "a living room"]) == 0  # fmt: skip
    room = data / "house" / "living_room"
    assert (room / "input" / "description.txt").read_text() == "a living room\n"
    assert (room / "input" / "pano0000_to_pano0004_mask.png").is_file()
    run = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--data_root", str(data), "--output_dir", str(run),
                 "--resolution", "64", "--num_frames", "5", "--max_train_steps", "2", "--lora_rank", "2",
                 "--mixed_precision", "no", "--checkpointing_steps", "2", "--no-progress"]) == 0  # fmt: skip
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)
    pred = tmp_path / "pred"
    assert main(["infer", "--checkpoint_dir", str(run), "--data_root", str(data), "--output_dir", str(pred),
                 "--num_inference_steps", "2", "--num_frames", "5", "--resolution", "64",
                 "--device", "cpu", "--dtype", "float32"]) == 0  # fmt: skip
    out = pred / "house" / "living_room"
    for v in range(5):
        depth = np.load(out / f"panorama_{v:04d}_depth.npy")
        assert depth.shape == (64, 128) and np.isfinite(depth).all() and (depth > 0).all()
    known = np.load(room / "input" / "pano0000_to_pano0003_depth_range.npy")
    completed = np.load(out / "panorama_0003_depth.npy")
    close = np.isclose(completed[known > 0], known[known > 0], rtol=1e-3)
    assert close.mean() > 0.95, (
        close.mean()
    )  # known pixels composited back (depth normalisation clamps a few)
    assert (out / "room.ply").is_file()
