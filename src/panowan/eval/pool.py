"""Evaluating several prediction folders at once (the model and each baseline): one process per folder at a time.

Why processes: evaluation is mostly reprojection (`metrics.pair_reprojections`), whose rasteriser is a chain of
small tensor ops that a second thread barely speeds up, so on a 2-core machine two single-threaded processes
finish the demo's six folders in about 45 s where one process with two threads takes 58 s. Workers are spawned
(not forked: a forked process inherits the parent's OpenMP state) and run `evaluate_dir` unchanged, each with
`torch.set_num_threads(cores // workers)`; the results are the same dicts, in the order of the folders.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any


def default_workers(folders: int) -> int:
    """Processes for `folders` folders: one per core, at most 4 (each holds a room's views in memory), and one
    (in this process) when there is a single folder or a single core."""
    return max(1, min(folders, os.cpu_count() or 1, 4))


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _evaluate(job: tuple) -> dict:
    from panowan.eval.metrics import evaluate_dir

    folder, data_root, rooms, consistency = job
    return evaluate_dir(folder, data_root, rooms, consistency=consistency)


def evaluate_dirs(
    folders: Sequence[Any], data_root, rooms: Sequence[str] | None, *, consistency: Sequence[bool] | bool = True,
    workers: int | None = None,
) -> list[dict]:  # fmt: skip
    """`evaluate_dir(folder, data_root, rooms, consistency=...)` of every folder, in order; `consistency` one flag
    for all or one per folder; `workers` processes (None: `default_workers`; 1: in this process)."""
    flags = [consistency] * len(folders) if isinstance(consistency, bool) else list(consistency)
    if len(flags) != len(folders):
        raise ValueError(f"evaluate_dirs: {len(folders)} folders but {len(flags)} consistency flags")
    workers = default_workers(len(folders)) if workers is None else workers
    if workers < 1:
        raise ValueError(f"evaluate_dirs: workers must be >= 1, got {workers}")
    jobs = [
        (str(f), str(data_root), None if rooms is None else list(rooms), c) for f, c in zip(folders, flags)
    ]
    if workers == 1 or len(jobs) == 1:
        return [_evaluate(job) for job in jobs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(threads,)) as pool:  # fmt: skip
        return list(pool.map(_evaluate, jobs))
