"""A dead or stuck rank (issue 21, fault matrix part B): in a 2-rank gloo run on CPU, killing rank 1 (SIGKILL)
or freezing it (SIGSTOP) mid-run makes rank 0 fail within a bounded time with a `PeerFailure` that names
the problem, the collective timeout and the newest complete checkpoint, instead of hanging."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from _harness import free_port
from test_trainer import make_config

from panowan.train import checkpoint as ckpt

TIMEOUT_S = 3.0  # --nccl_timeout_s: what a silent (not dead) peer is waited for


def _rank(rank: int, port: int, data: Path, out: Path, fault: int) -> None:
    """One rank, initialised by the trainer itself (so --nccl_timeout_s is the process group's timeout)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")  # fmt: skip
    torch.set_num_threads(1)
    from panowan.train.trainer import PeerFailure, train

    def fault_at_step_2(step: int, r: int, loss: torch.Tensor) -> torch.Tensor:
        if r == 1 and step == 2:  # in the 3rd step, after checkpoint-2
            (out / "fault_at").write_text(str(time.time()))
            os.kill(os.getpid(), fault)
        return loss

    config = make_config(data, out, max_train_steps=50, checkpointing_steps=2, nccl_timeout_s=TIMEOUT_S)
    try:
        train(config, loss_hook=fault_at_step_2)
    except PeerFailure as e:  # train() has closed the process group too: the whole exit is timed
        (out / f"failure_rank{rank}.json").write_text(json.dumps({"time": time.time(), "message": str(e)}))
        os._exit(3)
    os._exit(0)


def _run_with_fault(data: Path, out: Path, fault: int) -> tuple[int | None, float, str]:
    """(rank 0's exit code, seconds from the fault to rank 0's failure, its message); rank 1 is killed after."""
    out.mkdir()
    ctx = mp.get_context("fork")  # the ranks inherit this process's imports: no start-up cost
    port = free_port()
    procs = [ctx.Process(target=_rank, args=(r, port, data, out, fault)) for r in (0, 1)]
    for p in procs:
        p.start()
    try:
        procs[0].join(timeout=60)
    finally:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
            p.join()
    failure = out / "failure_rank0.json"
    assert failure.is_file(), f"rank 0 exit code {procs[0].exitcode} without a PeerFailure"
    record = json.loads(failure.read_text())
    return procs[0].exitcode, record["time"] - float((out / "fault_at").read_text()), record["message"]


@pytest.mark.parametrize(
    "fault, bound",
    [
        (signal.SIGKILL, TIMEOUT_S),  # dead: gloo sees the closed connection at once, no timeout needed
        (signal.SIGSTOP, TIMEOUT_S + 10),  # alive but silent: the collective timeout ends the wait
    ],
    ids=["killed", "frozen"],
)
def test_rank0_fails_clearly_within_the_timeout_when_rank1_dies_or_freezes(
    rooms, tmp_path, fault, bound
) -> None:
    code, seconds, message = _run_with_fault(rooms, tmp_path / "run", fault)
    assert code == 3
    assert seconds < bound, seconds
    if fault == signal.SIGSTOP:
        assert seconds >= TIMEOUT_S - 0.5, seconds  # it did wait for the peer, as long as it was told
    assert message.startswith("rank 0 of 2: a collective with the other ranks failed at step 3")
    assert (
        f"--nccl_timeout_s {TIMEOUT_S:g} s" in message
        and "Checkpoints up to checkpoint-2 are complete" in message
    )
    assert "Cause: RuntimeError" in message
    assert [s for s, _ in ckpt.complete_checkpoints(tmp_path / "run")] == [2]  # what a restart resumes from
