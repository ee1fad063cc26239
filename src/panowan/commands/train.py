"""Train the dual-stream model (LoRA on both Wan streams, interaction layers, PluckerNet).

One process holds both streams: `panowan train ...`. One stream per GPU:
`torchrun --nproc_per_node=2 -m panowan train ...`; 2N processes run N data-parallel pairs.
Settings come from the dataclass defaults, then `--config FILE` (JSON), then the flags given here.
Restarting with the same arguments resumes from the newest complete checkpoint in --output_dir.
SIGTERM or SIGINT (a cluster's preemption, Ctrl-C) finishes the current optimiser step, writes
checkpoint-STEP and exits 0, so the same command resumes; a second signal kills at once (exit 128 + signum),
as does a signal during start-up (nothing trained yet).
Writes output_dir/config.json, metrics.jsonl, tensorboard/, checkpoint-STEP/ and validation/.
"""

from __future__ import annotations

import argparse

HELP = "train the dual-stream model (one process, or torchrun with 2N ranks = N stream pairs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from panowan.train.config import add_arguments as add_config_arguments

    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import logging

    from panowan.train.config import config_from_args
    from panowan.train.trainer import train

    config = config_from_args(args)
    result = train(config)
    if result.stopped_by is not None:  # the trainer logged what it saved; 0: nothing failed, rerun resumes
        return 0
    logging.getLogger(__name__).info(
        "trained to step %d (%d steps skipped, %d rooms skipped); outputs in %s",
        result.step, result.skipped_steps, result.skipped_rooms, result.output_dir,
    )  # fmt: skip
    return 0
