"""What a training run records about itself: `Metrics` (metrics.jsonl, one JSON object per optimiser step,
and TensorBoard scalars), the peak memory it logs (`_peak_memory_mb`) and the run's settings
(`record_config`: output_dir/config.json, with a warning when a resume changes them)."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from panowan.train.checkpoint import check_compatible
from panowan.train.config import TrainConfig, changed_settings
from panowan.utils.atomic import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


def record_config(output_dir: Path, config: TrainConfig, rank: int, resume: Path | None) -> None:
    """Write the run's settings to output_dir/config.json (rank 0); warn when a resume changes them, refuse
    one whose weights cannot fit this run's model (another preset or LoRA: `checkpoint.check_compatible`)."""
    path = output_dir / "config.json"
    if resume is not None:
        check_compatible(resume, config)  # before any model is built: a clear error, not a shape mismatch
    if resume is not None and (resume / "config.json").is_file():
        saved = json.loads((resume / "config.json").read_text(encoding="utf-8"))
        diff = changed_settings(saved, config)
        if diff:
            log.warning("resuming %s with changed settings %s: the run will not replay exactly", resume, diff)
    if rank == 0:
        atomic_write_json(path, config.to_dict())


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Metrics:
    """metrics.jsonl (one JSON object per optimiser step, flushed) and TensorBoard scalars; rank 0 only."""

    def __init__(self, output_dir: Path, resume_step: int, tensorboard: bool) -> None:
        self.path = output_dir / "metrics.jsonl"
        kept = []
        if self.path.is_file():  # drop the steps after the checkpoint we resume from (they are redone)
            for line in self.path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    if json.loads(line)["step"] <= resume_step:
                        kept.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (an append stream, closed in close())
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(output_dir / "tensorboard"), purge_step=resume_step + 1)

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, int | float) and not isinstance(v, bool):
                    self.writer.add_scalar(k, v, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()
