"""Checkpoint integrity (issue 21, part A): the manifest in the COMPLETE marker catches flipped bytes, truncated
and missing files; `latest` falls back to the newest checkpoint that verifies and training resumes there; a full
disk or read-only folder while saving leaves the earlier checkpoints and the metrics intact; a checkpoint of
another preset or LoRA rank is refused by name."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from _harness import run_ranks
from test_checkpoint import _save, _setup
from test_trainer import make_config, metrics

from panowan.train import checkpoint as ckpt
from panowan.train.config import add_arguments, config_from_args
from panowan.train.trainer import train
from panowan.utils.manifest import ManifestError


def flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def loss_rows(records: list[dict]) -> list[tuple]:
    """Per-step loss terms (what a replay must reproduce; timings differ)."""
    return [(m["step"], *sorted((k, v) for k, v in m.items() if k.startswith("loss"))) for m in records]


@pytest.fixture(scope="module")
def run4(rooms, tmp_path_factory) -> Path:
    """A tiny run of 4 steps, checkpoints at 2 and 4 (copied by each test that damages it)."""
    out = tmp_path_factory.mktemp("run4") / "run"
    train(make_config(rooms, out, max_train_steps=4))
    return out


@pytest.fixture
def run_copy(run4, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run4, out)
    return out


# ------------------------------------------------------------------------------------------- detection
def test_marker_holds_a_manifest_of_every_file(run4) -> None:
    folder = run4 / "checkpoint-4"
    marker = json.loads((folder / ckpt.MARKER).read_text())
    on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert marker["step"] == 4 and marker["format"] == ckpt.MARKER_FORMAT
    assert sorted(marker["files"]) == [n for n in on_disk if n != ckpt.MARKER]
    assert (
        marker["files"]["weights/plucker_net.safetensors"]["size"]
        == (folder / "weights/plucker_net.safetensors").stat().st_size
    )
    assert ckpt.verify_checkpoint(folder) is True


def test_flipped_byte_is_named_and_training_resumes_from_the_previous_checkpoint(
    rooms, run_copy, caplog
) -> None:
    out = run_copy
    before = metrics(out)
    old_files = json.loads((out / "checkpoint-4" / ckpt.MARKER).read_text())["files"]
    flip_middle_byte(out / "checkpoint-4" / "weights" / "plucker_net.safetensors")
    with pytest.raises(
        ManifestError, match=r"checkpoint-4: weights/plucker_net.safetensors does not match its sha256"
    ) as err:
        ckpt.verify_checkpoint(out / "checkpoint-4")
    assert err.value.problem == "hash"
    with caplog.at_level(logging.WARNING):
        assert ckpt.resolve_resume(out, "latest") == out / "checkpoint-2"
    assert "skipping checkpoint-4" in caplog.text and "plucker_net.safetensors" in caplog.text
    # The explicit folder is refused, not replaced by another.
    with pytest.raises(ValueError, match=r"plucker_net\.safetensors"):
        ckpt.resolve_resume(out, str(out / "checkpoint-4"))

    caplog.clear()
    with caplog.at_level(logging.INFO):
        train(make_config(rooms, out, max_train_steps=4))
    assert f"resumed from {out / 'checkpoint-2'} at step 2" in caplog.text
    # Steps 3 and 4 were trained again from checkpoint-2 and replay the original run exactly, so the rewritten
    # checkpoint-4 holds the uncorrupted bytes again and verifies.
    assert loss_rows(metrics(out)) == loss_rows(before)
    assert ckpt.verify_checkpoint(out / "checkpoint-4")
    new_files = json.loads((out / "checkpoint-4" / ckpt.MARKER).read_text())["files"]
    assert {k: v for k, v in new_files.items() if k.startswith("weights/")} == {
        k: v for k, v in old_files.items() if k.startswith("weights/")
    }


def test_truncated_and_missing_files_are_named(run_copy, caplog) -> None:
    out = run_copy
    optimizer = out / "checkpoint-4" / "optimizer_rgb-depth.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:1000])
    with pytest.raises(
        ManifestError, match=r"optimizer_rgb-depth.pt has 1000 bytes, its manifest says \d+"
    ) as err:
        ckpt.verify_checkpoint(out / "checkpoint-4")
    assert err.value.problem == "size"
    (out / "checkpoint-2" / "rng_rank0.pt").unlink()
    with pytest.raises(ManifestError, match=r"checkpoint-2: rng_rank0.pt is missing") as err:
        ckpt.verify_checkpoint(out / "checkpoint-2")
    assert err.value.problem == "missing"
    # Nothing verifies: no silent fresh start over a run's damaged checkpoints.
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(ValueError, match="none of its 2 checkpoints verifies"),
    ):
        ckpt.resolve_resume(out, "latest")
    assert "skipping checkpoint-4" in caplog.text and "skipping checkpoint-2" in caplog.text


def test_skip_flag_checks_sizes_only_and_warns_once(run_copy, caplog) -> None:
    out = run_copy
    flip_middle_byte(out / "checkpoint-4" / "weights" / "plucker_net.safetensors")
    ckpt._warned_unhashed = False
    with caplog.at_level(logging.WARNING):
        assert ckpt.resolve_resume(out, "latest", verify=False) == out / "checkpoint-4"
        ckpt.resolve_resume(out, "latest", verify=False)
    assert caplog.text.count("not hashed (--no-verify_checkpoints)") == 1
    (out / "checkpoint-4" / "scheduler.pt").write_bytes(b"")  # a size change is still caught
    assert ckpt.resolve_resume(out, "latest", verify=False) == out / "checkpoint-2"
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--data_root", "d", "--output_dir", "o", "--preset", "tiny"]
    assert config_from_args(parser.parse_args(base)).verify_checkpoints is True
    assert config_from_args(parser.parse_args([*base, "--no-verify_checkpoints"])).verify_checkpoints is False


def test_trainer_passes_the_skip_flag(rooms, run_copy, caplog) -> None:
    out = run_copy
    flip_middle_byte(out / "checkpoint-4" / "weights" / "plucker_net.safetensors")
    ckpt._warned_unhashed = False
    with caplog.at_level(logging.INFO):  # max_train_steps 4: resumes at 4 and trains nothing
        train(make_config(rooms, out, max_train_steps=4, verify_checkpoints=False))
    assert f"resumed from {out / 'checkpoint-4'} at step 4" in caplog.text
    assert "not hashed (--no-verify_checkpoints)" in caplog.text


def _resolve_on_two_ranks(rank: int, out: Path) -> None:
    assert ckpt.resolve_resume(out / "one_bad", "latest") == out / "one_bad" / "checkpoint-2"
    assert ckpt._key(out / "one_bad" / "checkpoint-2") in ckpt._checked  # load_checkpoint will not hash again
    try:
        ckpt.resolve_resume(out / "all_bad", "latest")
    except ValueError as exc:  # rank 0's verdict, raised on every rank (no rank left waiting)
        assert "none of its 2 checkpoints verifies" in str(exc)
    else:
        raise AssertionError(f"rank {rank}: a run whose checkpoints all fail was resumed")


def test_ranks_resume_from_rank_0s_verdict(run4, tmp_path) -> None:
    for name in ("one_bad", "all_bad"):
        shutil.copytree(run4, tmp_path / name)
        flip_middle_byte(tmp_path / name / "checkpoint-4" / "weights" / "plucker_net.safetensors")
    (tmp_path / "all_bad" / "checkpoint-2" / "scheduler.pt").unlink()
    run_ranks(2, _resolve_on_two_ranks, tmp_path)


def test_marker_without_manifest_is_accepted_with_a_warning(tmp_path, caplog) -> None:
    model, opt, sched = _setup(0)
    folder = _save(tmp_path, 1, model, opt, sched)
    (folder / ckpt.MARKER).write_text(json.dumps({"step": 1}))  # the marker of runs before manifests
    flip_middle_byte(folder / "optimizer_rgb-depth.pt")  # undetectable without a manifest
    with caplog.at_level(logging.WARNING):
        assert ckpt.verify_checkpoint(folder) is False
        assert ckpt.resolve_resume(tmp_path, "latest") == folder
    assert caplog.text.count("holds no manifest") == 1
    (folder / ckpt.MARKER).write_text("{not json")
    with pytest.raises(ManifestError, match="marker is not valid JSON"):
        ckpt.verify_checkpoint(folder)


def test_load_checkpoint_verifies_a_folder_not_resolved_before(tmp_path) -> None:
    model, opt, sched = _setup(0)
    folder = _save(tmp_path, 1, model, opt, sched)
    flip_middle_byte(folder / "weights" / "w.safetensors")
    with pytest.raises(ManifestError, match=r"weights/w.safetensors does not match"):
        ckpt.load_checkpoint(folder, load_weights=lambda f: None, local_streams=("rgb", "depth"), optimizer=opt,
                             scheduler=sched, scaler=None)  # fmt: skip


# ------------------------------------------------------------------------------------------- faults while saving
def _assert_save_failed_cleanly(out: Path, exc: OSError, step: int, words: str) -> None:
    assert f"checkpoint-{step}" in str(exc) and words in str(exc), str(exc)
    assert [s for s, _ in ckpt.complete_checkpoints(out)] == [1]
    assert ckpt.verify_checkpoint(out / "checkpoint-1")
    assert ckpt.resolve_resume(out, "latest") == out / "checkpoint-1"
    assert not (out / f"checkpoint-{step}").exists()


def test_disk_full_while_saving_keeps_earlier_checkpoints(tmp_path) -> None:
    model, opt, sched = _setup(0)
    _save(tmp_path, 1, model, opt, sched)

    def full_disk(folder: Path) -> None:
        folder.mkdir(parents=True)
        (folder / "w.safetensors").write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError, match="no space left on the device") as err:
        ckpt.save_checkpoint(tmp_path, 2, save_weights=full_disk, local_streams=("rgb", "depth"), pair_index=0,
                             optimizer=opt, scheduler=sched, scaler=None, trainer_state={}, config={}, total_limit=1)  # fmt: skip
    assert err.value.errno == errno.ENOSPC
    _assert_save_failed_cleanly(tmp_path, err.value, 2, "no space left")
    assert not (tmp_path / f"{ckpt.TMP_PREFIX}2").exists()  # the partial folder is removed
    # total_limit=1 did not prune checkpoint-1 for a save that never completed.


def test_read_only_output_dir_while_saving_keeps_earlier_checkpoints(tmp_path, monkeypatch) -> None:
    model, opt, sched = _setup(0)
    _save(tmp_path, 1, model, opt, sched)
    if os.geteuid() != 0:
        tmp_path.chmod(stat.S_IRUSR | stat.S_IXUSR)  # a real read-only folder
        words, code = "read-only", errno.EACCES
    else:  # root ignores permission bits: inject the error a read-only file system raises
        real = ckpt.atomic_write_json

        def read_only(path, obj):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

        monkeypatch.setattr(ckpt, "atomic_write_json", read_only)
        words, code = "read-only file system", errno.EROFS
    try:
        with pytest.raises(OSError, match=words) as err:
            _save(tmp_path, 2, model, opt, sched, limit=1)
    finally:
        tmp_path.chmod(stat.S_IRWXU)
        if os.geteuid() == 0:
            monkeypatch.setattr(ckpt, "atomic_write_json", real)
    assert err.value.errno == code
    _assert_save_failed_cleanly(tmp_path, err.value, 2, words)


def test_disk_full_during_training_stops_with_the_run_intact(rooms, tmp_path, monkeypatch) -> None:
    from panowan.models import lora

    out = tmp_path / "run"
    real, calls = lora._save_tensors, []

    def fills_up(path, tensors):  # the second checkpoint's first weight file meets a full disk
        calls.append(path)
        if "checkpoint-2" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, tensors)

    monkeypatch.setattr(lora, "_save_tensors", fills_up)
    with pytest.raises(OSError, match=r"checkpoint-2: no space left on the device"):
        train(make_config(rooms, out, max_train_steps=2, checkpointing_steps=1))
    assert [s for s, _ in ckpt.complete_checkpoints(out)] == [1] and ckpt.verify_checkpoint(
        out / "checkpoint-1"
    )
    assert not (out / f"{ckpt.TMP_PREFIX}2").exists() and not (out / "checkpoint-2").exists()
    assert [m["step"] for m in metrics(out)] == [1, 2]  # every step trained is recorded, the file readable
    assert ckpt.resolve_resume(out, "latest") == out / "checkpoint-1"


def _one_rank_full(rank: int, out: Path) -> None:
    torch.manual_seed(0)
    model, opt, sched = _setup(0)
    _save(out, 1, model, opt, sched)

    def weights(folder: Path) -> None:
        if rank == 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        folder.mkdir(parents=True, exist_ok=True)

    try:
        ckpt.save_checkpoint(out, 2, save_weights=weights, local_streams=(("rgb", "depth")[rank],), pair_index=0,
                             optimizer=opt, scheduler=sched, scaler=None, trainer_state={}, config={}, total_limit=None)  # fmt: skip
    except OSError as exc:
        assert "(rank 1): no space left" in str(exc), str(exc)
    else:
        raise AssertionError(f"rank {rank}: the save did not fail")


def test_disk_full_on_one_rank_fails_every_rank_without_hanging(tmp_path) -> None:
    run_ranks(2, _one_rank_full, tmp_path)
    assert [s for s, _ in ckpt.complete_checkpoints(tmp_path)] == [1]
    assert not (tmp_path / f"{ckpt.TMP_PREFIX}2").exists()


# ------------------------------------------------------------------------------------------- mismatch
def test_resume_with_another_preset_or_lora_rank_is_refused(rooms, run_copy) -> None:
    run4 = run_copy
    with pytest.raises(ValueError, match=r"checkpoint-4 \(.*\) has LoRA rank 4 vs 8 in this run"):
        train(make_config(rooms, run4, max_train_steps=6, lora_rank=8))
    with pytest.raises(
        ValueError, match=r"checkpoint-4 \(.*\) was trained with --preset tiny, this run is --preset small"
    ):
        train(make_config(rooms, run4, max_train_steps=6, preset="small"))
    with pytest.raises(ValueError, match="LoRA alpha 4 vs 2"):
        ckpt.check_compatible(run4 / "checkpoint-4", make_config(rooms, run4, lora_alpha=2.0))
    ckpt.check_compatible(
        run4 / "checkpoint-4", make_config(rooms, run4, max_train_steps=9)
    )  # neutral change
