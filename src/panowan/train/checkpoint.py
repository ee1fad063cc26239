"""Training checkpoints: complete or invisible, newest K kept, resumable bit for bit.

Layout of `output_dir/checkpoint-STEP/`:
```
  weights/                  trainable parameters (safetensors, written by `models.lora.save_trainable`
                            on the ranks of pair 0; each rank its own streams, so the folder holds all)
  optimizer_STREAMS.pt      AdamW state of the parameters a rank of pair 0 owns ("rgb-depth" for one
                            process; "rgb" / "depth" for pairs), plus the GradScaler state
  scheduler.pt              LR scheduler state (identical on every rank; rank 0)
  rng_rank{R}.pt            torch, CUDA, numpy and python RNG states of every rank
  trainer_state.json        step, data-loader position, fault counters (rank 0)
  config.json               the resolved TrainConfig (rank 0)
  COMPLETE                  completion marker (written last, rank 0)
```
Protocol: every rank writes into `output_dir/.tmp-checkpoint-STEP/`; after a barrier rank 0 writes the
marker and renames the folder to `checkpoint-STEP` (a rename is atomic), then deletes the oldest complete
checkpoints beyond the limit. A folder without the marker (or a leftover temporary folder of a run
killed while saving) is never resumed from. All files go through `panowan.utils.atomic`. Multi-node runs
need `output_dir` on a shared file system.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from panowan.utils.atomic import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

PREFIX = "checkpoint-"
TMP_PREFIX = ".tmp-checkpoint-"
MARKER = "COMPLETE"
_NAME_RE = re.compile(r"^checkpoint-(\d+)$")


def _distributed() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def _rank() -> int:
    return dist.get_rank() if _distributed() else 0


def _barrier() -> None:
    if _distributed():
        dist.barrier()


def is_complete(folder: str | os.PathLike) -> bool:
    """A checkpoint folder counts only with its completion marker."""
    return (Path(folder) / MARKER).is_file()


def complete_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, folder) of every complete `checkpoint-STEP` in `output_dir`, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        m = _NAME_RE.match(entry.name)
        if not m or not entry.is_dir():
            continue
        if is_complete(entry):
            found.append((int(m.group(1)), entry))
        else:
            log.warning("ignoring %s: it has no %s marker (a run stopped while writing it?)", entry, MARKER)
    return sorted(found)


def resolve_resume(output_dir: str | os.PathLike, resume: str) -> Path | None:
    """The checkpoint to resume from: `latest` -> newest complete one in `output_dir` (None if there is
    none: a fresh run), `none` -> None, else the given folder, which must be a complete checkpoint."""
    if resume == "none":
        return None
    if resume == "latest":
        done = complete_checkpoints(output_dir)
        return done[-1][1] if done else None
    folder = Path(resume)
    if not folder.is_dir():
        raise ValueError(f"--resume_from_checkpoint {resume}: no such folder")
    if not is_complete(folder):
        raise ValueError(f"--resume_from_checkpoint {resume}: incomplete checkpoint (no {MARKER} marker)")
    return folder


def rng_state() -> dict[str, Any]:
    """Every RNG this process uses: torch (CPU), CUDA (all devices), numpy, python."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _torch_load(path: Path) -> Any:
    if not path.is_file():
        raise ValueError(
            f"{path}: missing from the checkpoint; resume with the same placement (world size) that wrote it"
        )
    # Our own files (numpy RNG state and python tuples need the full unpickler).
    return torch.load(path, map_location="cpu", weights_only=False)


def streams_tag(local_streams: tuple[str, ...]) -> str:
    return "-".join(local_streams)


def save_checkpoint(
    output_dir: str | os.PathLike,
    step: int,
    *,
    save_weights: Callable[[Path], None],
    local_streams: tuple[str, ...],
    pair_index: int,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None,
    trainer_state: dict[str, Any],
    config: dict[str, Any],
    total_limit: int | None,
) -> Path:
    """Write `checkpoint-STEP` collectively (every rank calls this at the same step); returns its path."""
    root = Path(output_dir)
    tmp = root / f"{TMP_PREFIX}{step}"
    final = root / f"{PREFIX}{step}"
    rank = _rank()
    if rank == 0:
        if tmp.exists():  # left by a run killed while saving this step
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    _barrier()
    if pair_index == 0:
        save_weights(tmp / "weights")
        opt = {"optimizer": optimizer.state_dict(), "scaler": None if scaler is None else scaler.state_dict()}
        _torch_save(opt, tmp / f"optimizer_{streams_tag(local_streams)}.pt")
    _torch_save(rng_state(), tmp / f"rng_rank{rank}.pt")
    if rank == 0:
        _torch_save(scheduler.state_dict(), tmp / "scheduler.pt")
        atomic_write_json(tmp / "trainer_state.json", {"step": step, **trainer_state})
        atomic_write_json(tmp / "config.json", config)
    _barrier()
    if rank == 0:
        atomic_write_json(tmp / MARKER, {"step": step})
        if final.exists():  # an older run's folder of the same step (resumed from an earlier one)
            shutil.rmtree(final)
        os.replace(tmp, final)
        prune_checkpoints(root, total_limit)
    _barrier()
    return final


def prune_checkpoints(output_dir: str | os.PathLike, total_limit: int | None) -> list[Path]:
    """Delete the oldest complete checkpoints so that at most `total_limit` remain (None: keep all).
    Only called after a newer checkpoint is complete, so a crash never leaves fewer than one."""
    if total_limit is None:
        return []
    done = complete_checkpoints(output_dir)
    removed = []
    for _, folder in done[: max(0, len(done) - total_limit)]:
        shutil.rmtree(folder)
        removed.append(folder)
        log.info("removed old checkpoint %s (limit %d)", folder, total_limit)
    return removed


def load_checkpoint(
    folder: str | os.PathLike,
    *,
    load_weights: Callable[[Path], None],
    local_streams: tuple[str, ...],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None,
) -> dict[str, Any]:
    """Restore everything `save_checkpoint` wrote for this rank; returns the trainer state (with "step")."""
    folder = Path(folder)
    if not is_complete(folder):
        raise ValueError(f"{folder}: not a complete checkpoint (no {MARKER} marker)")
    load_weights(folder / "weights")
    opt = _torch_load(folder / f"optimizer_{streams_tag(local_streams)}.pt")
    optimizer.load_state_dict(opt["optimizer"])
    if scaler is not None and opt["scaler"] is not None:
        scaler.load_state_dict(opt["scaler"])
    scheduler.load_state_dict(_torch_load(folder / "scheduler.pt"))
    set_rng_state(_torch_load(folder / f"rng_rank{_rank()}.pt"))
    return json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
