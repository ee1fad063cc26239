"""Graceful stops of `panowan train` (issue 21, fault matrix part B): SIGTERM to a running CLI process
checkpoints the step it stops at, exits 0 and the same command resumes bit for bit; SIGINT in process;
a signal seen by one of two gloo ranks stops both at the same step; a second signal kills at once (a bare
`StopRequest`, and `panowan train`, whose run then still resumes)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import torch
from _harness import run_ranks
from test_trainer import assert_same_weights, losses, make_config, metrics, weights

from panowan.train import checkpoint as ckpt
from panowan.train.config import TrainConfig
from panowan.train.trainer import train

# Checkpoints only at the end: a stop's checkpoint is then the one the signal forced.
SETTINGS = dict(max_train_steps=8, checkpointing_steps=100)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def cli_flags(data: Path, out: Path) -> list[str]:
    """The `panowan train` flags of `make_config(data, out, **SETTINGS)` (the same run, from a shell)."""
    config = make_config(data, out, **SETTINGS).to_dict()
    defaults = {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(TrainConfig)}  # fmt: skip
    flags = []
    for name, value in config.items():
        if value == defaults[name] and name not in ("data_root", "output_dir"):
            continue
        assert value is not None, name  # a flag cannot say None
        if isinstance(value, bool):
            flags.append(f"--{name}" if value else f"--no-{name}")
        elif isinstance(value, list):
            flags += [f"--{name}", *map(str, value)]
        else:
            flags += [f"--{name}", str(value)]
    return ["train", *flags]


def start_cli(data: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "panowan", *cli_flags(data, out)]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_step(proc: subprocess.Popen, out: Path, step: int, timeout: float = 60.0) -> None:
    """Until metrics.jsonl holds `step` (the process has finished that many optimiser steps)."""
    path = out / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().count("\n") >= step:
            return
        assert proc.poll() is None, f"exited early ({proc.returncode}): {proc.stdout.read()[-3000:]}"
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"no step {step} within {timeout} s")


def test_sigterm_checkpoints_the_step_it_stops_at_and_the_rerun_replays_exactly(rooms, tmp_path) -> None:
    out = tmp_path / "stopped"
    proc = start_cli(rooms, out)
    # The uninterrupted run, while the process imports (a thread: its handlers stay the default ones).
    straight = tmp_path / "straight"
    reference = threading.Thread(target=train, args=(make_config(rooms, straight, **SETTINGS),))
    reference.start()
    wait_for_step(proc, out, 1)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=60)
    reference.join()
    assert proc.returncode == 0, log[-3000:]
    stopped = metrics(out)[-1]["step"]
    assert 2 <= stopped < SETTINGS["max_train_steps"], log[-3000:]  # the step in flight was finished
    assert [s for s, _ in ckpt.complete_checkpoints(out)] == [stopped]  # off the interval: forced by the stop
    assert f"received SIGTERM: saved checkpoint-{stopped}, exiting; rerun the same command to resume" in log
    assert "trained to step" not in log
    # The same command again (in this process: same settings, same threads) resumes and finishes.
    from panowan.cli import main

    assert main(cli_flags(rooms, out)) == 0
    assert losses(out) == losses(straight)
    last = SETTINGS["max_train_steps"]
    assert_same_weights(weights(out, last), weights(straight, last))


def _interrupt_at_step_1(step: int, rank: int, loss: torch.Tensor) -> torch.Tensor:
    if step == 1:  # inside the 2nd optimiser step, as a Ctrl-C would land
        os.kill(os.getpid(), signal.SIGINT)
    return loss


def test_sigint_in_process_stops_after_the_step_and_restores_the_handlers(rooms, tmp_path) -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    result = train(make_config(rooms, tmp_path, **SETTINGS), loss_hook=_interrupt_at_step_1)
    assert result.stopped_by == "SIGINT" and result.step == 2
    assert [s for s, _ in ckpt.complete_checkpoints(tmp_path)] == [2]
    assert [m["step"] for m in metrics(tmp_path)] == [1, 2]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def _term_rank1_at_step_1(step: int, rank: int, loss: torch.Tensor) -> torch.Tensor:
    if rank == 1 and step == 1:  # only the depth rank sees it, mid-step (a signal is not instantaneous)
        os.kill(os.getpid(), signal.SIGTERM)
    return loss


def _stop_one_rank_worker(rank: int, data: Path, root: Path) -> None:
    stopped = train(make_config(data, root / "run", **SETTINGS), loss_hook=_term_rank1_at_step_1)
    (root / f"stopped_rank{rank}.json").write_text(json.dumps([stopped.step, stopped.stopped_by]))
    resumed = train(make_config(data, root / "run", **SETTINGS))
    (root / f"resumed_rank{rank}.json").write_text(json.dumps([resumed.step, resumed.stopped_by]))


def test_a_signal_on_one_gloo_rank_stops_both_at_the_same_step(rooms, tmp_path) -> None:
    run_ranks(2, _stop_one_rank_worker, rooms, tmp_path)
    for rank in (0, 1):  # rank 0 never got the signal: it stops because its peer did
        assert json.loads((tmp_path / f"stopped_rank{rank}.json").read_text()) == [2, "SIGTERM"]
        assert json.loads((tmp_path / f"resumed_rank{rank}.json").read_text()) == [8, None]
    assert [m["step"] for m in metrics(tmp_path / "run")] == list(range(1, 9))
    # checkpoint-2 held both ranks' state (the resume read it); the run ended with checkpoint-8.
    assert [s for s, _ in ckpt.complete_checkpoints(tmp_path / "run")] == [2, 8]
    names = {p.name for p in (tmp_path / "run" / "checkpoint-2").iterdir()}
    assert {"optimizer_rgb.pt", "optimizer_depth.pt", "rng_rank0.pt", "rng_rank1.pt"} <= names


WAITER = textwrap.dedent(
    """
    import signal, sys, time
    from panowan.utils.signals import StopRequest
    with StopRequest() as stop:
        print("ready", flush=True)
        while not stop.requested:
            time.sleep(0.01)
        print("stopping", stop.signal_name, flush=True)
        time.sleep(60)  # a long clean-up: only a second signal ends it early
    """
)


def test_a_second_signal_kills_at_once(tmp_path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", WAITER], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.readline().strip() == "stopping SIGTERM"  # the first one only asked
    assert proc.poll() is None
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)  # the other kind counts as a second signal too
    assert proc.wait(timeout=10) == -signal.SIGINT  # killed by it: the shell reports 130
    assert time.monotonic() - start < 5


def test_a_second_sigterm_kills_train_at_once_and_the_run_still_resumes(rooms, tmp_path) -> None:
    out = tmp_path / "killed"
    proc = start_cli(rooms, out)
    wait_for_step(proc, out, 1)
    proc.send_signal(signal.SIGTERM)
    for line in proc.stdout:  # the first one is only noted ...
        if "received SIGTERM: stopping at the next safe point" in line:
            break
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)  # ... the second one ends it, wherever it is (a step, a save)
    assert proc.wait(timeout=10) == -signal.SIGTERM
    assert time.monotonic() - start < 2
    proc.stdout.close()
    # Whatever it left is whole or invisible (a checkpoint it was writing has no marker): the rerun goes on.
    result = train(make_config(rooms, out, **SETTINGS))
    assert result.step == SETTINGS["max_train_steps"] and result.stopped_by is None
    assert [m["step"] for m in metrics(out)] == list(range(1, result.step + 1))
