"""See the system work end to end, offline, in a minute or two on a laptop CPU (87 s on 2 cores, 2026-12-07).

Synthesizes a few rooms the embedded model has never seen (seeds disjoint from its training rooms),
prepares them, completes them with the default model embedded in the package, evaluates the model against
classical baselines (OpenCV inpainting, harmonic, depth-steered and room-shell fills, input copy) and writes
OUT/report.html (images, metrics table, point clouds) plus OUT/metrics.json and OUT/metrics.md. If the package holds no trained default model,
the demo says so loudly and runs an untrained initialisation (its numbers are then meaningless).
"""

from __future__ import annotations

import argparse
import logging

HELP = "synthesize unseen rooms, complete them with the embedded model, compare with baselines, write report.html"
log = logging.getLogger(__name__)

DEMO_SEED = 900_002  # synthetic-room seed; the embedded model's training seeds are recorded and must differ


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", default="panowan_demo", help="output folder (data/, completions/, report.html)"
    )
    parser.add_argument("--rooms", type=int, default=3, help="number of synthetic rooms")
    parser.add_argument("--views", type=int, default=5, help="views per room (>= 5)")
    parser.add_argument("--difficulty", choices=["easy", "hard"], default="hard",
                        help="synthetic room type (panowan synth --difficulty): hard rooms (partitions, doorways, "
                        "large furniture; ~9%% of a view unseen from view 0) or the older easy ones (~3%%)")  # fmt: skip
    parser.add_argument(
        "--seed",
        type=int,
        default=DEMO_SEED,
        help="synthetic-room seed (must differ from the model's training seeds)",
    )
    parser.add_argument("--steps", type=int, default=None,
                        help="sampling steps (default: the model's recommended sampling, else 10)")  # fmt: skip
    parser.add_argument("--sampler", choices=["unipc", "euler"], default=None,
                        help="flow-matching solver (default: the model's recommended sampling, else unipc)")  # fmt: skip
    parser.add_argument("--resolution", type=int, default=None,
                        help="panorama height (default: the embedded model's training resolution)")  # fmt: skip
    parser.add_argument("--model_dir", default=None, help="folder of an exported model to evaluate instead of "
                        "the embedded one (as scripts/train_default_model.py --export writes)")  # fmt: skip
    from panowan.eval.baselines import BASELINES, DEFAULT_BASELINES

    parser.add_argument("--baselines", nargs="*", default=list(DEFAULT_BASELINES), choices=BASELINES,
                        help="baselines to compare with (the report states the model's margin against the best "
                        "classical fill per metric)")  # fmt: skip


def _training_seeds(train: dict) -> set[int]:
    """Synthetic-room seeds the embedded model was trained on (as recorded in its json)."""
    seeds = train.get("synth_seeds", [])
    return {int(s) for s in (seeds if isinstance(seeds, list) else [seeds])}


def _complete_rooms(source, data, pred, frames: int, height: int, steps: int, sampler: str) -> None:
    """Complete every room under `data` into `pred` with the Python API (`panowan.sample.completer`): the files
    `panowan infer --num_frames FRAMES --resolution HEIGHT` writes (seed 0, every view, in passes if needed)."""
    import warnings

    import torch

    from panowan.sample.completer import Completer
    from panowan.sample.rooms import open_rooms

    device = "cuda" if torch.cuda.is_available() else "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # already reported
        completer = Completer.from_pretrained(source, device=device, num_frames=frames, resolution=height)
    dataset, indices = open_rooms(str(data), None, frames, height, 0, source.model_config.condition_fills())
    for index in indices:
        room = completer.complete((dataset, index), steps=steps, sampler=sampler, seed=0, progress=True)
        log.info("wrote %s", room.save(pred))


def run(args: argparse.Namespace) -> int:
    import time
    import warnings
    from pathlib import Path

    from panowan.commands import eval as eval_cmd
    from panowan.commands import infer as infer_cmd
    from panowan.data.prepare import prepare_rooms
    from panowan.data.synth import synth_rooms
    from panowan.eval.report import write_report

    start = time.monotonic()
    out = Path(args.out)
    if args.views < 5:
        raise ValueError(f"--views must be >= 5 (the model needs 4k + 1 >= 5 views), got {args.views}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = infer_cmd.embedded_source(args.model_dir)
    warn_lines = [str(w.message) for w in caught]
    for line in warn_lines:
        log.warning("%s", line)
    if args.seed in _training_seeds(source.train_config):
        raise ValueError(f"--seed {args.seed} was used to train the embedded model; pick another")
    height = args.resolution or int(source.train_config.get("resolution", 32))
    frames = (args.views - 1) // 4 * 4 + 1
    data, pred = out / "data", out / "completions"
    synth_rooms(data, args.rooms, args.views, height, 2 * height, seed=args.seed, difficulty=args.difficulty)
    summary = prepare_rooms(data, overwrite=True, progress=False)
    if summary.failed:
        raise ValueError(f"preparing the demo rooms failed: {summary.failed}")
    steps, sampler = infer_cmd.sampling_settings(source, args.steps, args.sampler, default_steps=10)
    _complete_rooms(source, data, pred, frames, height, steps, sampler)
    results = eval_cmd.evaluate_with_baselines(pred, data, None, args.baselines, out / "baselines")
    json_path, md_path = eval_cmd.write_results(results, out / "metrics.json")
    passes = "" if frames == args.views else f" (completed in passes of {frames} frames)"
    notes = [f"{args.rooms} {args.difficulty} synthetic rooms (seed {args.seed}, never used in training), {args.views} views each"
             f"{passes} at {height}x{2 * height}; model: {source.description}; {steps} steps of the {sampler} sampler; "
             f"ran in {time.monotonic() - start:.0f} s."]  # fmt: skip
    report = write_report(out / "report.html", data, pred, results, title="panowan demo", notes=notes,
                          warnings_=warn_lines)  # fmt: skip
    print(md_path.read_text(encoding="utf-8"))
    for line in warn_lines:
        print(f"WARNING: {line}")
    print(f"report: {report}\nmetrics: {json_path}")
    return 0
