"""The training loop on the tiny preset and synthetic rooms (CPU): exact resume (one process and two
gloo ranks), a run killed while checkpointing, data-parallel pairs vs a larger batch, NaN skipping on
every rank, corrupt rooms, and the loss falling over 200 steps."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from _harness import run_ranks
from safetensors.torch import load_file

from conftest import corrupt_copy
from panowan.train import checkpoint as ckpt
from panowan.train.config import TrainConfig
from panowan.train.trainer import train


def make_config(data: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(
        data_root=str(data), output_dir=str(out), preset="tiny", resolution=32, num_frames=5, lora_rank=4,
        mixed_precision="no", progress=False, tensorboard=False, learning_rate=1e-3, checkpointing_steps=2,
        ssim_crop=[2, 4],
    )  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def losses(out: Path) -> list[tuple]:
    """Per-step loss values (every loss term of both streams), the things a replay must reproduce."""
    return [(m["step"], *sorted((k, v) for k, v in m.items() if k.startswith("loss"))) for m in metrics(out)]


def weights(out: Path, step: int) -> dict[str, torch.Tensor]:
    folder = Path(out) / f"checkpoint-{step}" / "weights"
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update({f"{file.stem}/{k}": v for k, v in load_file(file).items()})
    assert tensors
    return tensors


def assert_same_weights(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if atol == 0:
            assert torch.equal(a[k], b[k]), k
        else:
            assert torch.allclose(a[k], b[k], atol=atol, rtol=0), (k, (a[k] - b[k]).abs().max())


# ------------------------------------------------------------------------------- one process
@pytest.fixture(scope="module")
def straight_run(rooms, tmp_path_factory) -> Path:
    """4 uninterrupted steps with every feature on (accumulation, yaw augmentation, latitude weights,
    hole weighting, every loss), checkpoints at 2 and 4."""
    out = tmp_path_factory.mktemp("straight")
    train(make_config(rooms, out, max_train_steps=4, **FEATURES))
    return out


FEATURES = dict(gradient_accumulation_steps=2, yaw_augment=True, latitude_weighting=True, hole_weight=1.0,
                lr_scheduler="constant_with_warmup", lr_warmup_steps=2)  # fmt: skip


@pytest.mark.parametrize("workers", [0, 2])  # 2: threads read ahead, so a resume must drop their guesses
def test_resume_one_process_replays_exactly(rooms, straight_run, tmp_path, workers) -> None:
    out = tmp_path / "resumed"
    first = train(make_config(rooms, out, max_train_steps=2, dataloader_workers=workers, **FEATURES))
    assert first.step == 2 and ckpt.complete_checkpoints(out)[-1][0] == 2
    again = train(
        make_config(rooms, out, max_train_steps=4, dataloader_workers=workers, **FEATURES)
    )  # resumes
    assert again.step == 4
    assert losses(out) == losses(straight_run)
    assert [m["step"] for m in metrics(out)] == list(range(1, 5))
    assert_same_weights(weights(out, 4), weights(straight_run, 4))
    assert json.loads((out / "config.json").read_text())["max_train_steps"] == 4


def test_full_finetuning_trains_every_weight_and_resumes_exactly(rooms, tmp_path) -> None:
    """--lora_rank 0: no adapters; the checkpoints hold whole Wan streams, their weights move, and a resumed
    run replays the uninterrupted one exactly."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(make_config(rooms, straight, max_train_steps=4, lora_rank=0))
    train(make_config(rooms, resumed, max_train_steps=2, lora_rank=0))
    train(make_config(rooms, resumed, max_train_steps=4, lora_rank=0))
    assert losses(resumed) == losses(straight)
    at2, at4 = weights(straight, 2), weights(straight, 4)
    assert_same_weights(weights(resumed, 4), at4)
    base = [k for k in at4 if k.startswith("stream_rgb/") and k.endswith("ffn.net.2.weight")]
    assert base and not any("lora" in k for k in at4)
    assert all(not torch.equal(at2[k], at4[k]) for k in base)


def test_init_from_an_exported_model_starts_the_run_there(rooms, tmp_path) -> None:
    """--init_from: the run's first weights are the exported ones (a step at lr 1e-12 moves nothing visible);
    an export of another architecture and a missing folder are refused before training."""
    from panowan.commands.infer import export_embedded
    from panowan.models.replicas import tiny_dual_stream

    source, _ = tiny_dual_stream(seed=5)
    export_embedded(source, {}, tmp_path / "exported", compact=False)
    out = tmp_path / "run"
    train(make_config(rooms, out, max_train_steps=1, checkpointing_steps=1, lora_rank=0, learning_rate=1e-12,
                      init_from=str(tmp_path / "exported")))  # fmt: skip
    got = weights(out, 1)
    for name, tensor in source.streams["rgb"].state_dict().items():
        assert torch.allclose(got[f"stream_rgb/{name}"], tensor, atol=1e-8), name
    other, _ = tiny_dual_stream(seed=5, pose_dim=16)
    export_embedded(other, {}, tmp_path / "other", compact=False)
    with pytest.raises(ValueError, match=r"another model configuration \(differs in \['pose_dim'\]\)"):
        train(make_config(rooms, tmp_path / "run2", max_train_steps=1, init_from=str(tmp_path / "other")))
    with pytest.raises(ValueError, match="not an exported model"):
        make_config(rooms, tmp_path / "run3", init_from=str(tmp_path / "nothing"))


def test_threaded_cached_loading_trains_the_same_run(rooms, straight_run, tmp_path) -> None:
    out = tmp_path / "threads"
    train(make_config(rooms, out, max_train_steps=4, dataloader_workers=3, cache_files=True, **FEATURES))
    assert losses(out) == losses(straight_run)
    assert_same_weights(weights(out, 4), weights(straight_run, 4))


def test_killed_while_checkpointing_resumes_from_previous_complete(rooms, straight_run, tmp_path) -> None:
    out = tmp_path / "killed"
    train(make_config(rooms, out, max_train_steps=2, checkpoints_total_limit=1, **FEATURES))
    # Simulate a kill while writing checkpoint-4 (its temporary folder), a folder that never got its
    # marker, and metrics written past the last complete checkpoint.
    partial = out / f"{ckpt.TMP_PREFIX}4"
    partial.mkdir()
    (partial / "rng_rank0.pt").write_bytes(b"half")
    unmarked = out / "checkpoint-3"
    (unmarked / "weights").mkdir(parents=True)
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "loss": 123.0}) + "\n")
    assert ckpt.resolve_resume(out, "latest") == out / "checkpoint-2"
    train(make_config(rooms, out, max_train_steps=4, checkpoints_total_limit=1, **FEATURES))
    assert losses(out) == losses(straight_run)
    assert_same_weights(weights(out, 4), weights(straight_run, 4))
    # The limit kept only the newest complete checkpoint; the unmarked folder is ignored, never resumed.
    assert [s for s, _ in ckpt.complete_checkpoints(out)] == [4]
    assert not partial.exists() and unmarked.exists()
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["step"] == 4 and {"epoch", "position", "bad_rooms"} <= set(state["loader"])
    names = {p.name for p in (out / "checkpoint-4").iterdir()}
    assert names >= {
        "COMPLETE",
        "config.json",
        "optimizer_rgb-depth.pt",
        "rng_rank0.pt",
        "scheduler.pt",
        "weights",
    }


# ------------------------------------------------------------------------------- faults
def test_corrupt_room_is_skipped_and_counted(rooms, tmp_path, caplog) -> None:
    data = tmp_path / "data"
    (bad,) = corrupt_copy(rooms, data, 1)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        result = train(make_config(data, out, max_train_steps=3, max_skip_fraction=0.5, ssim_weight=0,
                                   dataloader_workers=2))  # fmt: skip
    assert result.step == 3 and result.skipped_rooms == 1
    assert metrics(out)[-1]["skipped_rooms"] == 1
    assert any(bad in r.getMessage() and "NaN" in r.getMessage() for r in caplog.records)
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["loader"]["bad_rooms"] == [bad]
    # The same corruption is too much for the default threshold (1 of 3 rooms > 10%).
    with pytest.raises(ValueError, match="max_skip_fraction"):
        train(make_config(data, tmp_path / "strict", max_train_steps=3, ssim_weight=0))


def test_only_corrupt_rooms_stop_with_clear_error(rooms, tmp_path) -> None:
    data = tmp_path / "data"
    corrupt_copy(rooms, data, 3)
    with pytest.raises(ValueError, match="every training room is corrupt") as err:
        train(make_config(data, tmp_path / "out", max_train_steps=2, max_skip_fraction=1.0))
    assert "area_000/room_0000" in str(err.value) or "room_000" in str(err.value)


def test_cli_run_writes_config_metrics_tensorboard_validation(rooms, tmp_path) -> None:
    from panowan.cli import main

    out = tmp_path / "cli"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(
        json.dumps(
            {"preset": "tiny", "resolution": 32, "num_frames": 5, "lora_rank": 2, "max_train_steps": 5}
        )
    )
    code = main(["train", "--config", str(cfg), "--data_root", str(rooms), "--output_dir", str(out),
                 "--max_train_steps", "2", "--mixed_precision", "no", "--validation_steps", "2",
                 "--validation_sampling_steps", "2", "--no-progress"])  # fmt: skip
    assert code == 0
    saved = json.loads((out / "config.json").read_text())
    assert (
        saved["max_train_steps"] == 2 and saved["lora_rank"] == 2
    )  # flag overrides file, file overrides default
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("loss", "loss/rgb", "loss/depth", "loss/rgb/mse", "loss/depth/ssim", "lr", "grad_norm",
                "seconds_per_step", "peak_memory_mb"):  # fmt: skip
        assert key in rows[0] and math.isfinite(rows[0][key]), key
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    images = sorted(p.name for p in (out / "validation" / "step-000002").iterdir())
    assert len(images) == 10 and images[0] == "depth_0000.png"
    assert (
        main(
            [
                "train",
                "--data_root",
                str(rooms),
                "--output_dir",
                str(tmp_path / "x"),
                "--preset",
                "wan2.1-i2v-14b",
            ]
        )
        == 2
    )


# ------------------------------------------------------------------------------- gloo ranks
def _nan_on_rank1_step1(step: int, rank: int, loss: torch.Tensor) -> torch.Tensor:
    return loss * float("nan") if (rank == 1 and step == 1) else loss


def _two_rank_worker(rank: int, data: Path, root: Path) -> None:
    cfg = dict(structural_weight=0.1, ssim_weight=0.1)
    train(make_config(data, root / "straight", max_train_steps=4, **cfg))
    train(make_config(data, root / "resumed", max_train_steps=2, **cfg))
    train(make_config(data, root / "resumed", max_train_steps=4, **cfg))
    train(
        make_config(data, root / "nan", max_train_steps=3, checkpointing_steps=1, **cfg),
        loss_hook=_nan_on_rank1_step1,
    )


@pytest.mark.slow
def test_two_gloo_ranks_resume_exactly_and_skip_nan_together(rooms, tmp_path) -> None:
    run_ranks(2, _two_rank_worker, rooms, tmp_path)
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    assert_same_weights(weights(tmp_path / "resumed", 4), weights(tmp_path / "straight", 4))
    assert {f.name for f in (tmp_path / "straight" / "checkpoint-4").iterdir()} >= {
        "optimizer_rgb.pt",
        "optimizer_depth.pt",
        "rng_rank0.pt",
        "rng_rank1.pt",
        "COMPLETE",
    }
    # NaN on rank 1 (depth stream) at the 2nd step: both ranks skip it, so no weight moves, either stream.
    rows = metrics(tmp_path / "nan")
    assert [r["skipped"] for r in rows] == [False, True, False] and rows[-1]["skipped_steps"] == 1
    assert_same_weights(weights(tmp_path / "nan", 2), weights(tmp_path / "nan", 1))
    w3, w2 = weights(tmp_path / "nan", 3), weights(tmp_path / "nan", 2)
    assert all(not torch.equal(w3[k], w2[k]) for k in w3 if k.startswith("lora_"))  # it trains again after


def _dp_worker(rank: int, data: Path, out: Path, batch: int) -> None:
    # lr 1e-4: Adam's g / sqrt(v) turns float rounding in near-zero gradients into steps of up to lr.
    train(
        make_config(
            data, out, max_train_steps=3, checkpointing_steps=3, train_batch_size=batch, learning_rate=1e-4
        )
    )


@pytest.mark.slow
def test_two_pairs_match_one_pair_with_twice_the_batch(rooms, tmp_path) -> None:
    run_ranks(4, _dp_worker, rooms, tmp_path / "pairs", 1)
    run_ranks(2, _dp_worker, rooms, tmp_path / "pair", 2)
    a, b = weights(tmp_path / "pairs", 3), weights(tmp_path / "pair", 3)
    assert_same_weights(a, b, atol=1e-5)
    start = weights_after_init(rooms, tmp_path)
    assert any(
        not torch.allclose(a[k], start[k]) for k in a
    )  # the comparison is not between untouched weights
    for m1, m2 in zip(metrics(tmp_path / "pairs"), metrics(tmp_path / "pair")):
        assert m1["loss"] == pytest.approx(m2["loss"], rel=1e-5)


def weights_after_init(rooms: Path, tmp_path: Path) -> dict[str, torch.Tensor]:
    """The trainable weights before any step (a run with a zero learning rate ... is not allowed, so
    read the initial weights by saving a fresh model)."""
    import dataclasses

    from diffusers import WanTransformer3DModel

    from panowan.models.dual_stream import DualStreamWan
    from panowan.models.lora import add_lora, freeze_base, save_trainable
    from panowan.models.presets import get_preset

    config = dataclasses.replace(get_preset("tiny"), init_seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        base = WanTransformer3DModel(**config.wan)
    model = DualStreamWan.from_base(base, config)
    add_lora(model, 4, None, seed=0)
    freeze_base(model)
    folder = tmp_path / "init" / "checkpoint-0" / "weights"
    save_trainable(model, folder)
    return weights(tmp_path / "init", 0)


# ------------------------------------------------------------------------------- learning
@pytest.mark.slow
def test_loss_falls_over_200_steps_for_each_stream(rooms, tmp_path) -> None:
    """Flow matching has a high floor (the noise is unpredictable near sigma = 0), so the fall is judged
    against the step-to-step spread: first-20 mean minus last-20 mean above 3 standard errors, and >= 5%."""
    out = tmp_path / "long"
    train(make_config(rooms, out, max_train_steps=200, checkpointing_steps=200, lora_rank=16, learning_rate=3e-3, train_batch_size=3,
                      ssim_weight=0.0))  # fmt: skip
    rows = metrics(out)
    assert len(rows) == 200 and not any(r["skipped"] for r in rows)
    for stream in ("rgb", "depth"):
        series = torch.tensor([r[f"loss/{stream}"] for r in rows], dtype=torch.float64)
        first, last = series[:20], series[-20:]
        spread = math.sqrt(first.var().item() / 20 + last.var().item() / 20)
        print(
            f"{stream}: first-20 mean {first.mean():.4f}, last-20 mean {last.mean():.4f}, s.e. {spread:.4f}"
        )
        assert last.mean() < 0.95 * first.mean(), stream
        assert first.mean() - last.mean() > 3 * spread, stream


def test_compiled_blocks_train_like_eager(rooms, tmp_path) -> None:
    """--compile_blocks changes kernels, not the run: losses and weights of two steps match eager ones
    to float32 rounding."""
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    train(make_config(rooms, eager, max_train_steps=2, ssim_weight=0))
    train(make_config(rooms, compiled, max_train_steps=2, ssim_weight=0, compile_blocks=True))
    for a, b in zip(metrics(eager), metrics(compiled)):
        assert math.isclose(a["loss"], b["loss"], rel_tol=1e-4), (a["loss"], b["loss"])
    # Adam turns float32 differences of tiny gradients into up to lr-sized moves; 1e-4 is 5% of two steps.
    assert_same_weights(weights(compiled, 2), weights(eager, 2), atol=1e-4)


def test_condition_fills_train_and_are_recorded(rooms, tmp_path) -> None:
    """--rgb_condition_fill telea / --depth_condition_fill ns: the checkpoint's model config says so, the
    condition latents hold the fills (each stream's loss differs from a zero-filled run's from the first step
    on), and a run started from that export inherits the fills unless a flag says otherwise; analytic-codec
    presets only."""
    from panowan.commands.infer import export_embedded
    from panowan.models.replicas import tiny_dual_stream

    zero, filled = tmp_path / "zero", tmp_path / "filled"
    train(make_config(rooms, zero, max_train_steps=1, checkpointing_steps=1, lora_rank=0))
    train(make_config(rooms, filled, max_train_steps=1, checkpointing_steps=1, lora_rank=0,
                      rgb_condition_fill="telea", depth_condition_fill="ns"))  # fmt: skip
    config = json.loads((filled / "checkpoint-1" / "weights" / "trainable_config.json").read_text())
    assert (config["model"]["rgb_condition_fill"], config["model"]["depth_condition_fill"]) == ("telea", "ns")
    for stream in ("rgb", "depth"):
        assert metrics(zero)[0][f"loss/{stream}"] != metrics(filled)[0][f"loss/{stream}"], stream
    model, _ = tiny_dual_stream(seed=0, rgb_condition_fill="telea", depth_condition_fill="ns")
    export_embedded(model, {}, tmp_path / "exported", compact=False)
    start = str(tmp_path / "exported")
    assert make_config(rooms, tmp_path / "a", init_from=start).condition_fills() == {
        "rgb": "telea",
        "depth": "ns",
    }
    assert make_config(rooms, tmp_path / "b", init_from=start, rgb_condition_fill="zero").condition_fills() == {
        "rgb": "zero", "depth": "ns"}  # fmt: skip
    assert make_config(rooms, tmp_path / "c").condition_fills() == {"rgb": "zero", "depth": "zero"}
    for flag in ("rgb_condition_fill", "depth_condition_fill"):
        with pytest.raises(ValueError, match="needs an analytic-codec preset"):
            make_config(rooms, tmp_path / "d", preset="wan2.1-1.3b-i2v", base_model_dir=str(tmp_path),
                        **{flag: "telea"})  # fmt: skip


def test_resuming_a_finished_run_warns_that_it_trains_nothing(rooms, tmp_path, caplog) -> None:
    out = tmp_path / "run"
    train(make_config(rooms, out, max_train_steps=2, checkpointing_steps=2, lora_rank=0))
    with caplog.at_level(logging.WARNING, logger="panowan.train.trainer"):
        train(make_config(rooms, out, max_train_steps=1, checkpointing_steps=1, lora_rank=0))
    assert "this run trains nothing" in caplog.text


# ------------------------------------------------------------------------------- pixel decoders, ablations
PIXEL = dict(pixel_decoder_width=4, lora_rank=0, ssim_weight=0.0, checkpointing_steps=1)


def test_pixel_decoders_train_with_the_model_and_resume_exactly(rooms, tmp_path) -> None:
    """--pixel_decoder_width: each stream's decoder is trained through the "pixel" loss term (logged per
    stream), saved with the checkpoint, and a resumed run replays the uninterrupted one."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(make_config(rooms, straight, max_train_steps=3, interactions="cross", **PIXEL))
    train(make_config(rooms, resumed, max_train_steps=1, interactions="cross", **PIXEL))
    train(make_config(rooms, resumed, max_train_steps=3, interactions="cross", **PIXEL))
    assert losses(resumed) == losses(straight)
    for row in metrics(straight):
        assert all(
            math.isfinite(row[f"loss/{s}/pixel"]) and row[f"loss/{s}/pixel"] > 0 for s in ("rgb", "depth")
        )
    at1, at3 = weights(straight, 1), weights(straight, 3)
    decoder = [k for k in at3 if k.startswith("pixel_decoder_")]
    assert {k.split("/")[0] for k in decoder} == {"pixel_decoder_rgb", "pixel_decoder_depth"}
    assert all(not torch.equal(at1[k], at3[k]) for k in decoder if k.endswith("out.weight"))
    config = json.loads((straight / "checkpoint-3" / "weights" / "trainable_config.json").read_text())[
        "model"
    ]
    assert (config["pixel_decoder_width"], config["interactions"]) == (4, "cross")
    # the pixel term is part of the loss: a run without it differs from the first step on
    train(
        make_config(
            rooms, tmp_path / "off", max_train_steps=1, interactions="cross", pixel_weight=0.0, **PIXEL
        )
    )
    assert metrics(tmp_path / "off")[0]["loss"] != metrics(straight)[0]["loss"]


def test_a_run_with_pixel_decoders_starts_from_an_export_without_them(rooms, tmp_path) -> None:
    """--init_from a model without pixel decoders plus --pixel_decoder_width: the streams start from the export,
    the decoders fresh; without the flag the run inherits the export's architecture (no decoders)."""
    from panowan.commands.infer import export_embedded
    from panowan.models.replicas import tiny_dual_stream

    source, _ = tiny_dual_stream(seed=5)
    export_embedded(source, {}, tmp_path / "exported", compact=False)
    start = str(tmp_path / "exported")
    out = tmp_path / "grown"
    train(make_config(rooms, out, max_train_steps=1, learning_rate=1e-12, init_from=start, **PIXEL))
    got = weights(out, 1)
    for name, tensor in source.streams["depth"].state_dict().items():
        assert torch.allclose(got[f"stream_depth/{name}"], tensor, atol=1e-8), name
    assert any(k.startswith("pixel_decoder_rgb/") for k in got)
    assert make_config(rooms, tmp_path / "x", init_from=start).architecture_overrides() == {
        "interactions": "pose+cross", "pixel_decoder_width": 0, "pixel_decoder_levels": 4,
        "pixel_decoder_rays": False}  # fmt: skip


def _pixel_pair_worker(rank: int, data: Path, out: Path, interactions: str) -> None:
    train(make_config(data, out, max_train_steps=2, interactions=interactions, learning_rate=1e-4, **PIXEL))


@pytest.mark.parametrize("interactions", ["pose+cross", "none"])
def test_pixel_decoders_on_one_stream_per_rank_match_one_process(rooms, tmp_path, interactions) -> None:
    """Two gloo ranks (one stream each): the cross-stream decoder inputs arrive through the exchange, and the
    run's losses equal the one-process run's to float rounding; with no exchange at all (ablation "none",
    PluckerNet unused) the pair trains too."""
    run_ranks(2, _pixel_pair_worker, rooms, tmp_path / "pair", interactions)
    _pixel_pair_worker(0, rooms, tmp_path / "one", interactions)
    for a, b in zip(metrics(tmp_path / "pair"), metrics(tmp_path / "one"), strict=True):
        for key in ("loss", "loss/rgb/pixel", "loss/depth/pixel"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), key
    assert_same_weights(weights(tmp_path / "pair", 2), weights(tmp_path / "one", 2), atol=1e-5)


def test_selective_checkpointing_with_a_budget_trains_like_none(rooms, tmp_path) -> None:
    """--gradient_checkpointing --checkpoint_policy selective --checkpoint_fraction 0.5 changes memory, not
    the run: the same losses and weights as a run without checkpointing; the setting is recorded."""
    plain, ckpt = tmp_path / "plain", tmp_path / "ckpt"
    train(make_config(rooms, plain, max_train_steps=2, ssim_weight=0))
    train(make_config(rooms, ckpt, max_train_steps=2, ssim_weight=0, gradient_checkpointing=True,
                      checkpoint_policy="selective", checkpoint_fraction=0.5))  # fmt: skip
    for a, b in zip(metrics(plain), metrics(ckpt), strict=True):
        assert math.isclose(a["loss"], b["loss"], rel_tol=1e-6), (a["loss"], b["loss"])
    assert_same_weights(weights(ckpt, 2), weights(plain, 2), atol=1e-6)
    with pytest.raises(ValueError, match="checkpoint_fraction"):
        make_config(rooms, tmp_path / "bad", gradient_checkpointing=True, checkpoint_fraction=2.0)
    with pytest.warns(UserWarning, match="ignored without --gradient_checkpointing"):
        make_config(rooms, tmp_path / "ignored", checkpoint_policy="selective")


def test_float8_frozen_base_trains_lora_close_to_full_precision_and_resumes_exactly(rooms, tmp_path) -> None:
    """--fp8_base weight: the base's block linears are float8 (torchao), the adapters train on top; the
    first step's loss is the full-precision one to the quantisation's error, the checkpoints hold adapters
    only, and a resumed run replays the uninterrupted one exactly. Without LoRA the flag is refused."""
    plain, fp8, resumed = tmp_path / "plain", tmp_path / "fp8", tmp_path / "resumed"
    train(make_config(rooms, plain, max_train_steps=2, ssim_weight=0))
    train(make_config(rooms, fp8, max_train_steps=4, ssim_weight=0, fp8_base="weight"))
    first_plain, first_fp8 = metrics(plain)[0]["loss"], metrics(fp8)[0]["loss"]
    assert first_fp8 != first_plain  # the base really changed ...
    assert math.isclose(first_fp8, first_plain, rel_tol=0.05), (first_fp8, first_plain)  # ... by float8 only
    at2, at4 = weights(fp8, 2), weights(fp8, 4)
    streams = [k for k in at4 if k.startswith("lora_")]
    assert streams and all("lora" in k.split("/", 1)[1] for k in streams)  # nothing of the frozen base
    assert any(not torch.equal(at2[k], at4[k]) for k in streams)
    train(make_config(rooms, resumed, max_train_steps=2, ssim_weight=0, fp8_base="weight"))
    train(make_config(rooms, resumed, max_train_steps=4, ssim_weight=0, fp8_base="weight"))
    assert losses(resumed) == losses(fp8)
    assert_same_weights(weights(resumed, 4), at4)
    with pytest.raises(ValueError, match="only LoRA can adapt it"):
        make_config(rooms, tmp_path / "bad", fp8_base="weight", lora_rank=0)
