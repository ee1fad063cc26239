"""TrainConfig: flag names, precedence defaults < --config file < flags, validation with clear errors."""

from __future__ import annotations

import argparse
import json

import pytest

from panowan.train.config import TrainConfig, add_arguments, changed_settings, config_from_args


def parse(*argv: str) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)))


def test_original_flag_names_exist() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {a for action in parser._actions for a in action.option_strings}
    for name in ("base_model_dir", "output_dir", "train_batch_size", "max_train_steps", "learning_rate", "lora_rank",
                 "lora_alpha", "mixed_precision", "gradient_checkpointing", "gradient_accumulation_steps",
                 "lr_scheduler", "lr_warmup_steps", "checkpointing_steps", "interaction_interval", "resolution",
                 "num_frames", "weighting_scheme", "data_root", "seed", "resume_from_checkpoint",
                 "checkpoints_total_limit", "preset", "config", "on_nonfinite", "max_skip_fraction",
                 "validation_steps"):  # fmt: skip
        assert f"--{name}" in flags, name


def test_precedence_defaults_file_flags(tmp_path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"preset": "tiny", "resolution": 64, "lora_rank": 8, "learning_rate": 0.5}))
    c = parse(
        "--config",
        str(cfg),
        "--data_root",
        "d",
        "--output_dir",
        "o",
        "--lora_rank",
        "4",
        "--gradient_checkpointing",
    )
    assert (c.resolution, c.width, c.lora_rank, c.learning_rate) == (64, 128, 4, 0.5)
    assert c.gradient_checkpointing and c.num_frames == 17  # default kept
    assert TrainConfig.from_dict(c.to_dict()) == c
    assert changed_settings(c.to_dict(), c) == []
    assert changed_settings({**c.to_dict(), "lora_rank": 2, "max_train_steps": 1}, c) == ["lora_rank"]


def test_validation_errors_name_the_problem(tmp_path) -> None:
    base = ("--data_root", "d", "--output_dir", "o")
    with pytest.raises(ValueError, match="base_model_dir is required"):
        parse(*base)  # the 14B preset needs pretrained files
    with pytest.raises(ValueError, match="resolution"):
        parse(*base, "--preset", "tiny", "--resolution", "40")
    with pytest.raises(ValueError, match="num_frames"):
        parse(*base, "--preset", "tiny", "--num_frames", "6")
    with pytest.raises(ValueError, match="data_root is required"):
        parse("--output_dir", "o", "--preset", "tiny")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"lora_rnak": 3}))
    with pytest.raises(ValueError, match=r"bad.json: unknown settings \['lora_rnak'\]"):
        parse(*base, "--preset", "tiny", "--config", str(bad))
    with pytest.raises(ValueError, match="no such file"):
        parse(*base, "--preset", "tiny", "--config", str(tmp_path / "missing.json"))
    with pytest.warns(UserWarning, match="ignored"):
        parse(*base, "--preset", "tiny", "--base_model_dir", "x")


def test_lora_rank_zero_means_full_finetuning_and_ignores_lora_settings() -> None:
    with pytest.raises(ValueError, match="--lora_rank must be >= 0"):
        TrainConfig(data_root="d", output_dir="o", preset="tiny", lora_rank=-1)
    with pytest.warns(UserWarning, match="--lora_alpha and --lora_targets are ignored"):
        TrainConfig(data_root="d", output_dir="o", preset="tiny", lora_rank=0, lora_targets=["to_q"])


def test_compile_defaults_to_on_for_cuda_only() -> None:
    """--compile_blocks is on by default where it is a win (a CUDA GPU), off on a CPU; either flag overrides."""
    import torch

    from panowan.train.build import compiles

    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    auto = TrainConfig(data_root="d", output_dir="o", preset="tiny")
    assert auto.compile_blocks is None and compiles(auto, cuda) and not compiles(auto, cpu)
    on, off = (
        TrainConfig(data_root="d", output_dir="o", preset="tiny", compile_blocks=v) for v in (True, False)
    )
    assert compiles(on, cpu) and not compiles(off, cuda)
    assert (
        parse(
            "--data_root", "d", "--output_dir", "o", "--preset", "tiny", "--no-compile_blocks"
        ).compile_blocks
        is False
    )
