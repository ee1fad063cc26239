"""Run a function on a gloo world of forked CPU processes, initialised like torchrun (env://)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world_size: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size))  # fmt: skip
    torch.set_num_threads(1)
    from panowan.parallel.groups import init_distributed

    init_distributed(backend="gloo", timeout_s=120.0)  # a deadlock fails the test instead of hanging it
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


def run_ranks(world_size: int, fn: Callable, *args) -> None:
    """`fn(rank, *args)` in `world_size` forked processes (they inherit the parent's imports); re-raises a
    child's failure. The parent uses one intra-op thread (conftest), so no OpenMP pool crosses the fork."""
    mp.start_processes(_entry, args=(world_size, free_port(), fn, args), nprocs=world_size, join=True,
                       start_method="fork")  # fmt: skip
