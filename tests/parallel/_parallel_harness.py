"""Run a function on a gloo world of CPU processes, the way torchrun would (env:// initialisation)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from panowan.parallel.groups import init_distributed

RANK_TIMEOUT_S = 60.0  # a deadlock fails the test instead of hanging it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world_size: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )
    torch.set_num_threads(1)  # 2 shared cores: do not oversubscribe
    init_distributed(backend="gloo", timeout_s=RANK_TIMEOUT_S)
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


def run_ranks(world_size: int, fn: Callable, *args) -> None:
    """Run `fn(rank, *args)` in `world_size` processes; re-raises a child's failure.

    Forked rather than spawned: the children inherit the parent's imports (diffusers alone takes seconds
    per process on the 2 shared cores). Safe here because each child sets one intra-op thread before any
    torch work, so no OpenMP pool crosses the fork."""
    mp.start_processes(
        _entry, args=(world_size, free_port(), fn, args), nprocs=world_size, join=True, start_method="fork"
    )


def load_results(folder: Path, world_size: int) -> list[dict]:
    return [torch.load(folder / f"rank{r}.pt") for r in range(world_size)]
