"""Wall-clock seconds of named phases (`panowan infer --timings_json`).

CUDA runs asynchronously: without a synchronisation the clock would stop when the work is queued, not when
it is done, and the time would land in whichever later phase waits first. So a timer bound to a CUDA device
synchronises it before each reading. A disabled timer measures nothing and costs nothing, so code can time
its phases unconditionally.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


class PhaseTimer:
    """Seconds per phase name, summed over repeated entries of the same phase."""

    def __init__(self, device: torch.device | str | None = None, *, enabled: bool = True) -> None:
        self.device = None if device is None else torch.device(device)
        self.enabled = enabled
        self.seconds: dict[str, float] = {}

    def now(self) -> float:
        """The clock after every queued kernel of the device has finished."""
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        start = self.now()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + self.now() - start


def disabled_timer() -> PhaseTimer:
    """A timer that records nothing (the default of functions that accept one)."""
    return PhaseTimer(enabled=False)


def memory_record(device) -> dict[str, Any]:
    """Peak CUDA memory of this process (GiB), or nothing off CUDA."""
    import torch

    if device.type != "cuda":
        return {}
    return {"peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30,
            "device_name": torch.cuda.get_device_name(device)}  # fmt: skip


def write_timings(path: str, record: dict[str, Any], groups, settings: dict[str, Any]) -> None:
    """Gather every rank's phase seconds (`record`); rank 0 writes them to `path` (JSON, seconds).

    Top level: the first rank's `load_model`, `infer` (from the command's start to the end of its rooms) and
    `peak_memory_gib` (the largest of any rank, on CUDA); `rooms` (each room as timed by the rank that wrote
    it); `ranks` (every rank's own record). Every rank must call this (a collective under torchrun)."""
    from panowan.utils.atomic import atomic_write_json

    records = [record]
    if groups is not None:
        import torch.distributed as dist

        records = [None] * groups.world_size
        dist.all_gather_object(records, record)
    if record["rank"] != 0:
        return
    first = records[0]
    out = {**settings, "world_size": len(records), "load_model": first["load_model"], "infer": first["infer"],
           "rooms": {k: v for r in records if r["writes"] for k, v in r["rooms"].items()}, "ranks": records}  # fmt: skip
    peaks = [r["peak_memory_gib"] for r in records if "peak_memory_gib" in r]
    if peaks:
        out["peak_memory_gib"] = max(peaks)
        out["device_name"] = first["device_name"]
    atomic_write_json(path, out)
