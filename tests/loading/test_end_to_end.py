"""`panowan train` and `panowan infer` with --base_model_dir on tiny replicas of the published Wan layouts.

The replica holds a real AutoencoderKLWan, UMT5 and CLIP (tiny widths) in the same files and config keys as
Wan2.1-I2V, so this runs the same code path as the 14B model: layout detection, loading, the Wan VAE codec,
the encoders and their cache, LoRA on a pretrained base, checkpoints, and completion with the VAE decoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from panowan.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rooms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from panowan.data.prepare import prepare_rooms
    from panowan.data.synth import synth_rooms

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("e2e_rooms")
    synth_rooms(root, rooms=2, views=5, height=32, width=64, seed=5)
    assert not prepare_rooms(root, overwrite=False, workers=1, progress=False).failed
    return root


@pytest.mark.parametrize("layout", ["diffusers", "original"])
def test_train_on_one_layout_then_infer_on_the_other(
    layouts: dict[str, Path], rooms: Path, tmp_path: Path, layout: str
) -> None:
    base = str(layouts[layout])
    run = tmp_path / "run"
    rc = main(["train", "--preset", "from_base", "--base_model_dir", base, "--data_root", str(rooms),
               "--output_dir", str(run), "--resolution", "32", "--num_frames", "5", "--max_train_steps", "2",
               "--lora_rank", "4", "--mixed_precision", "no", "--checkpointing_steps", "2", "--seed", "3"])  # fmt: skip
    assert rc == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in rows)
    saved = json.loads((run / "checkpoint-2" / "weights" / "trainable_config.json").read_text())
    assert saved["model"]["codec"] == "wan_vae" and saved["lora"]["rank"] == 4
    # The embeddings of every room were cached once, so the encoders need not stay on the device.
    assert any((run / "embeddings").rglob("*.safetensors"))

    # The checkpoint loads onto the same base given in the other layout.
    other = str(layouts["original" if layout == "diffusers" else "diffusers"])
    out = tmp_path / "pred"
    rc = main(["infer", "--base_model_dir", other, "--checkpoint_dir", str(run), "--data_root", str(rooms),
               "--output_dir", str(out), "--num_inference_steps", "2", "--num_frames", "5", "--resolution", "32",
               "--device", "cpu", "--dtype", "float32"])  # fmt: skip
    assert rc == 0
    depth = np.load(out / "area_000" / "room_0000" / "panorama_0001_depth.npy")
    assert (
        depth.shape == (32, 64)
        and depth.dtype == np.float32
        and np.isfinite(depth).all()
        and (depth > 0).all()
    )
    assert (out / "area_000" / "room_0000" / "room.ply").is_file()
    if layout == "diffusers":
        _check_vae_tiling(run, other)


def _check_vae_tiling(run: Path, base: str) -> None:
    """build_model tiles the VAE when asked (the default on CUDA, where an untiled encode beside both 14B streams
    on one 80 GB card is out of memory), and not on the CPU by default."""
    from panowan.sample.model_source import build_model, resolve_source

    source = resolve_source(checkpoint_dir=run, base_model_dir=base)
    for tiling, expected in ((None, False), (True, True)):
        _, codec, _ = build_model(source, base, torch.device("cpu"), torch.float32, vae_tiling=tiling)
        assert (codec.vae.use_tiling, codec.vae.use_slicing) == (expected, expected)


def test_lora_rank_mismatch_is_refused_before_loading(
    layouts: dict[str, Path], rooms: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    assert main(["train", "--preset", "from_base", "--base_model_dir", str(layouts["diffusers"]), "--data_root",
                 str(rooms), "--output_dir", str(run), "--resolution", "32", "--num_frames", "5",
                 "--max_train_steps", "1", "--lora_rank", "4", "--mixed_precision", "no",
                 "--checkpointing_steps", "1"]) == 0  # fmt: skip
    rc = main(["infer", "--base_model_dir", str(layouts["diffusers"]), "--checkpoint_dir", str(run), "--data_root",
               str(rooms), "--output_dir", str(tmp_path / "p"), "--lora_rank", "8", "--num_frames", "5",
               "--resolution", "32"])  # fmt: skip
    assert rc == 2  # a clear CLI error, not a traceback
