"""Inference verifies the weights it reads (issue 21, part A): `infer --checkpoint_dir` against the checkpoint's
manifest (falling back to the newest checkpoint that verifies), `--model_dir` / the embedded default against the
export's manifest; `--no_verify` keeps the size checks only; another preset or LoRA rank is refused by name."""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch

from panowan.commands import infer as infer_cmd
from panowan.models.exported import EMBEDDED_CONFIG, EMBEDDED_WEIGHTS, init_from_exported, verify_exported
from panowan.sample import model_source
from panowan.sample.model_source import ASSETS, resolve_source
from panowan.train import checkpoint as ckpt
from panowan.utils.manifest import ManifestError


def flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _save_step(root: Path, step: int) -> None:
    from panowan.models.lora import add_lora, save_trainable
    from panowan.models.replicas import tiny_dual_stream

    model, _ = tiny_dual_stream(seed=step)
    add_lora(model, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    config = {"preset": "tiny", "lora_rank": 4, "num_frames": 5, "resolution": 32, "flow_shift": 3.0}
    ckpt.save_checkpoint(root, step, save_weights=lambda f: save_trainable(model, f), local_streams=("rgb", "depth"),
                         pair_index=0, optimizer=opt, scheduler=sched, scaler=None, trainer_state={}, config=config,
                         total_limit=None)  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A training output folder with checkpoint-2 and checkpoint-4 (tiny model, LoRA rank 4)."""
    root = tmp_path_factory.mktemp("infer_run") / "run"
    for step in (2, 4):
        _save_step(root, step)
    return root


@pytest.fixture
def run(run_dir, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    from panowan.models.replicas import tiny_dual_stream

    folder = tmp_path_factory.mktemp("exported") / "model"
    infer_cmd.export_embedded(
        tiny_dual_stream(seed=3)[0], {"resolution": 32, "num_frames": 5}, folder, compact=False
    )
    return folder


def _args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    infer_cmd.add_arguments(parser)
    return parser.parse_args(["--data_root", "d", "--output_dir", "o", *extra])


# ------------------------------------------------------------------------------------------- checkpoints
def test_flipped_weight_byte_falls_back_to_the_previous_checkpoint(run, caplog) -> None:
    flip_middle_byte(run / "checkpoint-4" / "weights" / "plucker_net.safetensors")
    with caplog.at_level(logging.WARNING):
        source = resolve_source(checkpoint_dir=run)
    assert source.weights == run / "checkpoint-2" / "weights"
    assert (
        "skipping checkpoint-4" in caplog.text
        and "weights/plucker_net.safetensors does not match" in caplog.text
    )
    with pytest.raises(ManifestError, match=r"checkpoint-4: weights/plucker_net\.safetensors does not match"):
        resolve_source(checkpoint_dir=run, checkpoint_step=4)  # a step named explicitly is refused
    with pytest.raises(ManifestError, match=r"plucker_net\.safetensors does not match"):
        resolve_source(checkpoint_dir=run / "checkpoint-4")
    # The model built from the fallback holds checkpoint-2's weights.
    model, _, _ = infer_cmd.build_model(source, None, torch.device("cpu"), torch.float32)
    from safetensors.torch import load_file

    saved = load_file(run / "checkpoint-2" / "weights" / "plucker_net.safetensors")
    assert all(torch.equal(model.plucker_net.state_dict()[k], v) for k, v in saved.items())


def test_inference_checks_only_the_files_it_reads(run) -> None:
    flip_middle_byte(
        run / "checkpoint-4" / "optimizer_rgb-depth.pt"
    )  # training state: inference never reads it
    assert resolve_source(checkpoint_dir=run).weights == run / "checkpoint-4" / "weights"
    with pytest.raises(ManifestError, match=r"optimizer_rgb-depth\.pt does not match"):
        ckpt.verify_checkpoint(run / "checkpoint-4")  # a resume would refuse it


def test_truncated_and_missing_weight_files_are_named(run) -> None:
    config = run / "checkpoint-4" / "weights" / "trainable_config.json"
    config.write_text(config.read_text()[:-10])
    with pytest.raises(
        ManifestError, match=r"weights/trainable_config\.json has \d+ bytes, its manifest says"
    ):
        resolve_source(checkpoint_dir=run, checkpoint_step=4)
    (run / "checkpoint-2" / "weights" / "lora_rgb.safetensors").unlink()
    with pytest.raises(ManifestError, match=r"checkpoint-2: weights/lora_rgb\.safetensors is missing"):
        resolve_source(checkpoint_dir=run, checkpoint_step=2)
    with pytest.raises(ValueError, match="none of its 2 checkpoints verifies"):
        resolve_source(checkpoint_dir=run)


def test_no_verify_flag_skips_hashes_but_not_sizes(run, monkeypatch) -> None:
    monkeypatch.setattr(model_source, "_warned_unverified", False)
    flip_middle_byte(run / "checkpoint-4" / "weights" / "plucker_net.safetensors")
    assert _args("--checkpoint_dir", str(run)).no_verify is False
    with pytest.warns(UserWarning, match=r"not hashed \(--no_verify\)"):
        source = infer_cmd.resolve_model(_args("--checkpoint_dir", str(run), "--no_verify"))
    assert source.weights == run / "checkpoint-4" / "weights"
    (run / "checkpoint-4" / "weights" / "lora_depth.safetensors").write_bytes(b"")
    assert infer_cmd.resolve_model(
        _args("--checkpoint_dir", str(run), "--no_verify")
    ).weights.parent.name == ("checkpoint-2")


def test_checkpoint_of_another_preset_or_rank_is_refused(run) -> None:
    with pytest.raises(ValueError, match=r"checkpoint .*checkpoint-4 has LoRA rank 4, but --lora_rank is 8"):
        resolve_source(checkpoint_dir=run, lora_rank=8)
    with pytest.raises(
        ValueError, match=r"checkpoint-4 was trained with another model configuration than preset 'small'"
    ):
        resolve_source(checkpoint_dir=run, preset="small")
    assert (
        resolve_source(checkpoint_dir=run, lora_rank=4, preset="tiny").weights.parent.name == "checkpoint-4"
    )


# ------------------------------------------------------------------------------------------- exported models
def test_export_writes_a_manifest_that_loading_verifies(exported, tmp_path) -> None:
    meta = json.loads((exported / EMBEDDED_CONFIG).read_text())
    assert meta["manifest"][EMBEDDED_WEIGHTS]["size"] == (exported / EMBEDDED_WEIGHTS).stat().st_size
    assert verify_exported(exported) is True
    bad = tmp_path / "bad"
    shutil.copytree(exported, bad)
    flip_middle_byte(bad / EMBEDDED_WEIGHTS)
    pattern = (
        rf"exported model {re.escape(str(bad))}: {re.escape(EMBEDDED_WEIGHTS)} does not match its sha256"
    )
    with pytest.raises(ValueError, match=pattern):
        resolve_source(model_dir=bad)
    with pytest.raises(ValueError, match=pattern):
        infer_cmd.resolve_model(_args("--model_dir", str(bad)))
    from panowan.models.replicas import tiny_dual_stream

    with pytest.raises(ValueError, match=pattern):
        init_from_exported(tiny_dual_stream(seed=0)[0], bad)  # `panowan train --init_from`
    with pytest.warns(UserWarning, match="not hashed"):
        resolve_source(model_dir=bad, verify=False)  # same size: only the hash would tell
    (bad / EMBEDDED_WEIGHTS).write_bytes((bad / EMBEDDED_WEIGHTS).read_bytes()[:-100])
    with pytest.raises(ValueError, match=rf"{EMBEDDED_WEIGHTS} has \d+ bytes, its manifest says"):
        resolve_source(model_dir=bad, verify=False)


def test_export_without_manifest_loads_with_a_warning(exported, tmp_path) -> None:
    old = tmp_path / "old"
    shutil.copytree(exported, old)
    meta = json.loads((old / EMBEDDED_CONFIG).read_text())
    del meta["manifest"]  # as exported before manifests existed
    (old / EMBEDDED_CONFIG).write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="no manifest"):
        source = resolve_source(model_dir=old)
    assert source.weights == old / EMBEDDED_WEIGHTS


def test_embedded_default_model_verifies_against_its_shipped_bytes() -> None:
    assert (ASSETS / EMBEDDED_WEIGHTS).is_file()  # the package ships its default model
    assert verify_exported(ASSETS) is True
    assert resolve_source().kind == "embedded"
