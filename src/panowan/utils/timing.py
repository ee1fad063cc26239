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
