"""Training checkpoints: complete or invisible, verified before use, newest K kept, resumable bit for bit.

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
  COMPLETE                  completion marker and manifest (written last, rank 0):
                            {"step": N, "format": "panowan-checkpoint/2",
                             "files": {"weights/plucker_net.safetensors": {"size": B, "sha256": H}, ...}}
```
Protocol: every rank writes into `output_dir/.tmp-checkpoint-STEP/`; after the ranks agree that every write
succeeded, rank 0 hashes every file there (all ranks' files; `panowan.utils.manifest`), writes the marker
with that manifest and renames the folder to `checkpoint-STEP` (a rename is atomic), then deletes the
oldest complete checkpoints beyond the limit. A folder without the marker (or a leftover temporary folder
of a run killed while saving) is never resumed from. All files go through `panowan.utils.atomic`.
Multi-node runs need `output_dir` on a shared file system.

Verification (`verify_checkpoint`): before a resume (`resolve_resume`, and `load_checkpoint` for a folder
not verified yet in this process) and before `panowan infer --checkpoint_dir` reads weights, every file
of the manifest must exist with its size and sha256 (read at disk speed). A file that fails is named with
its problem (missing / size / hash) in a `ManifestError` (a ValueError). `latest` then falls back to the
newest checkpoint that verifies, with a warning naming the bad one; a folder named explicitly fails.
`--no-verify_checkpoints` (TrainConfig.verify_checkpoints) keeps the cheap checks (names, sizes) and
skips the hashes of huge checkpoints, with one warning. A marker without a manifest (the `{"step": N}`
or empty marker of runs before manifests existed) is accepted with a warning: such a checkpoint cannot
be verified.

Faults while saving (`save_checkpoint`): a full disk (ENOSPC), a quota or a read-only / unwritable
`output_dir` ends the save on every rank alike with an OSError naming the folder and the problem ("no
space left on the device", "read-only ..."); the temporary folder is removed (or, if even that fails, it
stays without a marker under its temporary name, which `latest` never picks), and the earlier
checkpoints and metrics.jsonl are untouched.

Mismatch (`check_compatible`): resuming a checkpoint written with another --preset or LoRA rank / alpha /
targets (or another given --interactions, --pixel_decoder_width, --interaction_interval) is refused with a
ValueError naming the checkpoint and the settings, before any weight is read.
"""

from __future__ import annotations

import errno
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
from panowan.utils.manifest import ManifestError, build_manifest, check_manifest

log = logging.getLogger(__name__)

PREFIX = "checkpoint-"
TMP_PREFIX = ".tmp-checkpoint-"
MARKER = "COMPLETE"
MARKER_FORMAT = "panowan-checkpoint/2"
"""Format of a marker that holds a manifest (older markers: `{"step": N}` or empty)."""
_NAME_RE = re.compile(r"^checkpoint-(\d+)$")

_checked: set[tuple[str, int]] = set()
"""(resolved folder, marker mtime) of checkpoints this process has verified (or decided to accept): a
resume verifies in `resolve_resume` and does not hash again in `load_checkpoint`."""
_warned_unhashed = False


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
    """(step, folder) of every complete `checkpoint-STEP` in `output_dir`, oldest first (not verified)."""
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


# ------------------------------------------------------------------------------------------- verify
def read_marker(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The marker's JSON, or None for a marker of the format before manifests (empty, or without "files").
    ManifestError if it is unreadable (a damaged marker is not an old one)."""
    path = Path(folder) / MARKER
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        return None
    try:
        marker = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"checkpoint {folder}: its {MARKER} marker is not valid JSON ({exc})", path,
                            "manifest") from None  # fmt: skip
    if not isinstance(marker, dict) or not isinstance(marker.get("files", {}), dict):
        raise ManifestError(f"checkpoint {folder}: its {MARKER} marker is malformed", path, "manifest")
    return marker if "files" in marker else None


def _key(folder: Path) -> tuple[str, int]:
    return str(folder.resolve()), (folder / MARKER).stat().st_mtime_ns


def _warn_unhashed() -> None:
    global _warned_unhashed
    if not _warned_unhashed:
        _warned_unhashed = True
        log.warning("checkpoint files are checked by name and size only, not hashed (--no-verify_checkpoints): "
                    "a corrupted byte would go unnoticed")  # fmt: skip


def verify_checkpoint(
    folder: str | os.PathLike, *, hashes: bool = True, files: Callable[[str], bool] | None = None
) -> bool:
    """Check a complete checkpoint against the manifest in its marker: True when verified, False for an
    older marker without a manifest (accepted, with a warning once per folder). ManifestError (a ValueError)
    naming the checkpoint and the first missing, resized or (with `hashes`) changed file otherwise.
    `files` restricts the check to the manifest names it accepts (inference reads only the weights)."""
    folder = Path(folder)
    if not is_complete(folder):
        raise ValueError(f"{folder}: not a complete checkpoint (no {MARKER} marker)")
    marker = read_marker(folder)
    if marker is None:
        if _key(folder) not in _checked:
            log.warning("%s: its %s marker holds no manifest (written before checkpoints carried one); it is "
                        "used unverified", folder, MARKER)  # fmt: skip
        _checked.add(_key(folder))
        return False
    if not hashes:
        _warn_unhashed()
    only = None if files is None else [n for n in marker["files"] if files(n)]
    check_manifest(folder, marker["files"], hashes=hashes, only=only, what=f"checkpoint {folder}")
    if files is None:
        _checked.add(_key(folder))
    return True


def newest_verified(
    output_dir: str | os.PathLike, *, hashes: bool = True, files: Callable[[str], bool] | None = None
) -> Path | None:
    """The newest complete checkpoint of `output_dir` that verifies (None if there is none at all). Each newer
    one that fails is logged as a warning naming it and its bad file; ValueError if every one fails."""
    bad = []
    done = complete_checkpoints(output_dir)
    for _, folder in reversed(done):
        try:
            verify_checkpoint(folder, hashes=hashes, files=files)
            return folder
        except ManifestError as exc:
            log.warning("skipping %s, it fails verification: %s; falling back to the previous checkpoint",
                        folder.name, exc)  # fmt: skip
            bad.append(str(exc))
    if done:
        raise ValueError(
            f"{output_dir}: none of its {len(done)} checkpoints verifies ({'; '.join(bad)}); start another "
            "--output_dir (or skip the hashes: train --no-verify_checkpoints, infer --no_verify)"
        )
    return None


# ------------------------------------------------------------------------------------------- resume
def _pick(output_dir: str | os.PathLike, resume: str, hashes: bool) -> Path | None:
    if resume == "latest":
        return newest_verified(output_dir, hashes=hashes)
    folder = Path(resume)
    if not folder.is_dir():
        raise ValueError(f"--resume_from_checkpoint {resume}: no such folder")
    if not is_complete(folder):
        raise ValueError(f"--resume_from_checkpoint {resume}: incomplete checkpoint (no {MARKER} marker)")
    verify_checkpoint(folder, hashes=hashes)
    return folder


def _rank0_decides(decide: Callable[[], Path | None]) -> Path | None:
    """`decide()` on rank 0 only (one reading of the files, one answer); its result or error on every rank."""
    if not _distributed():
        return decide()
    answer: list[Any] = [None]
    if _rank() == 0:
        try:
            answer = [("ok", decide())]
        except ValueError as exc:
            answer = [("error", str(exc))]
    dist.broadcast_object_list(answer, src=0)
    kind, value = answer[0]
    if kind == "error":
        raise ValueError(value)
    if value is not None:
        _checked.add(_key(Path(value)))  # rank 0 verified it: load_checkpoint need not hash it again
    return value


def resolve_resume(
    output_dir: str | os.PathLike, resume: str, config: Any = None, *, verify: bool | None = None
) -> Path | None:
    """The checkpoint to resume from: `latest` -> the newest complete one in `output_dir` that verifies
    (None if there is none: a fresh run), `none` -> None, else the given folder, which must be a complete
    checkpoint that verifies. `verify` False checks names and sizes only (default: `config.verify_checkpoints`
    when a TrainConfig is given, else True). With `config`, a checkpoint of another preset or LoRA setting is
    refused (`check_compatible`). Under torchrun rank 0 reads and decides, every rank gets its answer."""
    if resume == "none":
        return None
    if verify is None:
        verify = bool(getattr(config, "verify_checkpoints", True))
    folder = _rank0_decides(lambda: _pick(output_dir, resume, verify))
    if folder is not None and config is not None:
        check_compatible(folder, config)
    return folder


ARCHITECTURE_FLAGS = (
    "interactions",
    "pixel_decoder_width",
    "pixel_decoder_levels",
    "pixel_decoder_rays",
    "interaction_interval",
)
"""Settings compared when both runs set them (None means "the preset's / --init_from's")."""


def check_compatible(folder: str | os.PathLike, config: Any) -> None:
    """ValueError naming the checkpoint and every setting of `config` (a TrainConfig) that makes its weights
    unloadable: the preset, the LoRA rank (and, with LoRA, alpha and targets) and the architecture flags
    both runs set. Reads only the checkpoint's config.json (nothing to compare without one)."""
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    now = config.to_dict()
    problems = []
    if "preset" in saved and saved["preset"] != now["preset"]:
        problems.append(f"was trained with --preset {saved['preset']}, this run is --preset {now['preset']}")
    if "lora_rank" in saved and saved["lora_rank"] != now["lora_rank"]:
        problems.append(f"has LoRA rank {saved['lora_rank']} vs {now['lora_rank']} in this run (--lora_rank)")
    elif now["lora_rank"]:
        alpha = (saved.get("lora_alpha") or now["lora_rank"], now["lora_alpha"] or now["lora_rank"])
        if "lora_alpha" in saved and alpha[0] != alpha[1]:
            problems.append(f"has LoRA alpha {alpha[0]} vs {alpha[1]} in this run (--lora_alpha)")
        if "lora_targets" in saved and list(saved["lora_targets"]) != list(now["lora_targets"]):
            problems.append(
                f"has LoRA targets {saved['lora_targets']} vs {now['lora_targets']} (--lora_targets)"
            )
    for name in ARCHITECTURE_FLAGS:
        if saved.get(name) is not None and now[name] is not None and saved[name] != now[name]:
            problems.append(f"was trained with --{name} {saved[name]}, this run has {now[name]}")
    if problems:
        raise ValueError(f"{folder.name} ({folder}) {'; '.join(problems)}: its weights do not fit this model; "
                         "resume with the checkpoint's settings, or start another --output_dir")  # fmt: skip


# ------------------------------------------------------------------------------------------- state
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


# ------------------------------------------------------------------------------------------- save
_PROBLEMS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied (a read-only folder?)",
    errno.EPERM: "operation not permitted (a read-only folder?)",
}


def _describe(exc: OSError) -> str:
    return _PROBLEMS.get(exc.errno or -1, exc.strerror or type(exc).__name__)


def _fail_together(error: OSError | None, root: Path, tmp: Path, final: Path) -> None:
    """Every rank learns whether any rank's write failed; then all raise the same OSError (a rank that went on
    alone would wait for the others at the next barrier until the collective timeout). Rank 0 removes the
    temporary folder first, so nothing half-written is left beside the complete checkpoints."""
    mine = None if error is None else (_rank(), error.errno, _describe(error), str(error))
    failures = [mine]
    if _distributed():
        failures = [None] * dist.get_world_size()
        dist.all_gather_object(failures, mine)
    failed = [f for f in failures if f is not None]
    if not failed:
        return
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # may fail on a read-only folder: unmarked, never resumed
    rank, code, problem, detail = failed[0]
    where = f" (rank {rank})" if _distributed() else ""
    message = (
        f"could not write checkpoint {final}{where}: {problem} ({detail}); the earlier checkpoints in {root} "
        "are intact and no partial checkpoint is left to resume from; free space (or make the folder "
        "writable) and resume with --resume_from_checkpoint latest"
    )
    raise OSError(code, message) from error


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
    """Write `checkpoint-STEP` collectively (every rank calls this at the same step); returns its path.
    An OSError while writing (full disk, read-only folder) is raised on every rank (see the module docs)."""
    root = Path(output_dir)
    tmp = root / f"{TMP_PREFIX}{step}"
    final = root / f"{PREFIX}{step}"
    rank = _rank()
    error: OSError | None = None
    try:
        if rank == 0:
            if tmp.exists():  # left by a run killed while saving this step
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
    except OSError as exc:
        error = exc
    _fail_together(error, root, tmp, final)
    try:
        if pair_index == 0:
            save_weights(tmp / "weights")
            opt = {
                "optimizer": optimizer.state_dict(),
                "scaler": None if scaler is None else scaler.state_dict(),
            }
            _torch_save(opt, tmp / f"optimizer_{streams_tag(local_streams)}.pt")
        _torch_save(rng_state(), tmp / f"rng_rank{rank}.pt")
        if rank == 0:
            _torch_save(scheduler.state_dict(), tmp / "scheduler.pt")
            atomic_write_json(tmp / "trainer_state.json", {"step": step, **trainer_state})
            atomic_write_json(tmp / "config.json", config)
    except OSError as exc:
        error = exc
    _fail_together(error, root, tmp, final)
    try:
        if rank == 0:
            # Every rank's files are in tmp now (the ranks agreed above): one manifest of them all.
            manifest = build_manifest(tmp, exclude=(MARKER,))
            atomic_write_json(tmp / MARKER, {"step": step, "format": MARKER_FORMAT, "files": manifest})
            if final.exists():  # an older run's folder of the same step (resumed from an earlier one)
                shutil.rmtree(final)
            os.replace(tmp, final)
    except OSError as exc:
        error = exc
    _fail_together(error, root, tmp, final)
    if rank == 0:
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
    verify: bool = True,
) -> dict[str, Any]:
    """Restore everything `save_checkpoint` wrote for this rank; returns the trainer state (with "step").
    The folder is verified first unless `resolve_resume` already did in this process (`verify` False:
    names and sizes only)."""
    folder = Path(folder)
    if not is_complete(folder):
        raise ValueError(f"{folder}: not a complete checkpoint (no {MARKER} marker)")
    if _key(folder) not in _checked:
        verify_checkpoint(folder, hashes=verify)
    load_weights(folder / "weights")
    opt = _torch_load(folder / f"optimizer_{streams_tag(local_streams)}.pt")
    optimizer.load_state_dict(opt["optimizer"])
    if scaler is not None and opt["scaler"] is not None:
        scaler.load_state_dict(opt["scaler"])
    scheduler.load_state_dict(_torch_load(folder / "scheduler.pt"))
    set_rng_state(_torch_load(folder / f"rng_rank{_rank()}.pt"))
    return json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
