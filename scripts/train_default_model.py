r"""The recipe of the embedded default model (panowan/assets/default_model.*), end to end.

    # the shipped model (v3) is v2, below, plus three runs on hard rooms with pixel decoders and harmonic
    # condition fills, on one H100 (benchmarks/quality_gpu.sh stages 1-3; each stopped by --stop_after at its
    # last checkpoint: 200, 650 and 200 steps; the first beside the ablation's ten runs):
    H=(--difficulty hard --resolution 256 --batch 16 --hole_weight 3 --rgb_condition_fill harmonic \
       --depth_condition_fill harmonic --pixel_decoder_width 16 --mixed_precision bf16 --rooms 80 --eval_rooms 0)
    python scripts/train_default_model.py --work runs/v3a --export runs/v3a/export --init_from V2 --train_seed 0 \
        --steps 3000 --stop_after 340 --lr 5e-4 "${H[@]}"
    python scripts/train_default_model.py --work runs/v3b --export runs/v3b/export --init_from runs/v3a/export \
        --train_seed 1 --steps 3000 --stop_after 400 --lr 3e-4 "${H[@]}"
    python scripts/train_default_model.py --work runs/v3 --export runs/v3/export --init_from runs/v3b/export \
        --train_seed 2 --steps 3000 --stop_after 230 --lr 2e-4 --sampling_steps 2 --sampler euler "${H[@]}"
    # v2 (V2 above), in five diffusion runs on easy rooms (each line with --difficulty easy): 64x128 (40 min on 2 CPU cores), then four at
    # 256x512 (5-9 min each on one GPU): the second with the Telea-filled RGB condition, the third with the
    # Navier-Stokes-filled depth condition (the last two ran the code of commit 4913656; BENCHMARKS.md), the
    # recommended sampling recorded
    python scripts/train_default_model.py --work runs/dm64 --export runs/dm64/export
    python scripts/train_default_model.py --work runs/dm256 --export runs/dm256/export --resolution 256 \
        --batch 32 --steps 364 --hole_weight 3 --compile --init_from runs/dm64/export
    python scripts/train_default_model.py --work runs/dm_fill --export runs/dm_fill/export --resolution 256 \
        --batch 32 --steps 360 --hole_weight 3 --rgb_condition_fill telea --compile --init_from runs/dm256/export
    python scripts/train_default_model.py --work runs/dm_depth --export runs/dm_depth/export --resolution 256 \
        --batch 32 --steps 500 --hole_weight 8 --depth_condition_fill ns --compile --init_from runs/dm_fill/export
    python scripts/train_default_model.py --work runs/dm_depth2 --export runs/dm_depth2/export --resolution 256 \
        --batch 32 --steps 450 --hole_weight 8 --compile --init_from runs/dm_depth/export --sampling_steps 2 \
        --sampler euler
    # a run of its own: as many steps as fit 7 minutes
    python scripts/train_default_model.py --work /tmp/dm --time_budget 420 --batch 32

1. `panowan synth`: training rooms (seed --train_seed) at --resolution x 2*resolution, 9 views each, into
   --data (default WORK/data); skipped when an earlier run finished that folder, so that runs side by side share it;
2. `panowan prepare`;
3. `panowan train --preset small` (--preset) training every weight of the (seeded random) Wan base
   (`--lora_rank 0`; with --lora_rank R, LoRA on every linear layer instead), interaction layers and PluckerNet
   (the flags are printed and saved in the run's config.json).
   With --time_budget, a short probe run first measures seconds per step on this machine, and the run
   gets as many steps as fit the budget, so its cosine schedule ends where the time does;
4. export of the last complete checkpoint as the embedded default (`--export`, default the package's
   assets): float16 parameters, LoRA (if any) folded into the base (under 20 MB);
5. `panowan demo`-style evaluation on --eval_rooms unseen rooms (seed --eval_seed) against OpenCV
   inpainting and the copied input.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from panowan.models.exported import read_exported
from panowan.models.lora import EVERY_LINEAR_TARGET
from panowan.models.presets import CONDITION_FILLS, INTERACTIONS

LORA_TARGETS = list(EVERY_LINEAR_TARGET)
PROBE_STEPS = 40


def sh(*cmd: str, timeout: float | None = None) -> int:
    print("+", " ".join(cmd), flush=True)
    try:
        return subprocess.run(cmd, check=False, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        print(f"(stopped after {timeout:.0f} s; continuing from the last complete checkpoint)", flush=True)
        return 0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/default_model", help="work folder (data, run, evaluation)")
    p.add_argument("--data", default=None,
                   help="folder of the prepared training rooms (default WORK/data); made there by the recipe's synth and "
                        "prepare unless an earlier run finished it, so runs side by side share one copy")  # fmt: skip
    p.add_argument("--rooms", type=int, default=96, help="training rooms")
    p.add_argument("--data_workers", type=int, default=8, help="processes of panowan synth and prepare")
    p.add_argument("--train_seed", type=int, default=0, help="synth seed of the training rooms")
    p.add_argument("--difficulty", default="hard", choices=["easy", "hard"],
                   help="synth room type of the training rooms (panowan synth --difficulty; v2's runs used easy "
                        "rooms)")  # fmt: skip
    p.add_argument("--seed", type=int, default=None,
                   help="training seed (initialisation, noise, data order); default: --train_seed")  # fmt: skip
    p.add_argument("--interactions", default=None, choices=INTERACTIONS,
                   help="exchanges of the model (panowan train --interactions; the ablations); default: the "
                        "--init_from model's, else pose+cross")  # fmt: skip
    p.add_argument("--pixel_decoder_width", type=int, default=None,
                   help="width of each stream's learnt full-resolution decoder (panowan train "
                        "--pixel_decoder_width); default: the --init_from model's, else 0 (none)")  # fmt: skip
    p.add_argument("--pixel_decoder_levels", type=int, default=None,
                   help="U-Net levels of the pixel decoders (panowan train --pixel_decoder_levels)")  # fmt: skip
    p.add_argument("--pixel_decoder_rays", action=argparse.BooleanOptionalAction, default=None,
                   help="pixel decoders read camera-frame ray directions (panowan train --pixel_decoder_rays)")  # fmt: skip
    p.add_argument("--pixel_weight", type=float, default=1.0, help="weight of the pixel decoders' loss")
    p.add_argument("--pixel_frames", type=int, default=1,
                   help="target views per sample decoded at full resolution for the pixel loss")  # fmt: skip
    p.add_argument("--max_grad_norm", type=float, default=1.0,
                   help="gradient clipping over all trainable weights (0: none; with --interactions none the two "
                        "streams then train exactly as if each were trained alone)")  # fmt: skip
    p.add_argument("--resolution", type=int, default=64, help="panorama height (width 2x)")
    p.add_argument("--num_frames", type=int, default=5, help="views per training sample")
    p.add_argument("--steps", type=int, default=1800, help="optimiser steps (ignored with --time_budget)")
    p.add_argument("--time_budget", type=float, default=0,
                   help="seconds for probe + training; sets --steps from a measured step time (0: off)")  # fmt: skip
    p.add_argument("--stop_after", type=float, default=0,
                   help="seconds after which the training run is stopped and its last complete checkpoint exported "
                        "(a safety net for a fixed --steps; 0: none; ignored with --time_budget)")  # fmt: skip
    p.add_argument("--batch", type=int, default=8, help="rooms per step")
    p.add_argument(
        "--lr", type=float, default=1e-3, help="peak learning rate (cosine schedule, 100 warm-up steps)"
    )
    p.add_argument(
        "--preset",
        default="small",
        help="model preset (small: the shipped model; small-p4: pool 4, width 192; small-w192: pool 8, width 192; see "
        "BENCHMARKS.md)",
    )
    p.add_argument("--lora_rank", type=int, default=0,
                   help="LoRA rank of every adapted layer; 0: train every weight (full fine-tuning, the shipped model)")  # fmt: skip
    p.add_argument("--init_from", default=None,
                   help="exported model folder to start from (chains runs; see panowan train --init_from)")  # fmt: skip
    p.add_argument("--hole_weight", type=float, default=0.0, help="extra MSE weight of the holes")
    p.add_argument("--rgb_condition_fill", default=None, choices=CONDITION_FILLS,
                   help="what the RGB condition holds in its holes (panowan train --rgb_condition_fill); default: "
                        "the --init_from model's, else zero")  # fmt: skip
    p.add_argument("--depth_condition_fill", default=None, choices=CONDITION_FILLS,
                   help="the same for the depth condition (panowan train --depth_condition_fill)")  # fmt: skip
    p.add_argument("--workers", type=int, default=4, help="data-loading threads (--dataloader_workers)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="--compile_blocks / --no-compile_blocks (default: panowan train's, on for a CUDA GPU)")  # fmt: skip
    p.add_argument(
        "--mixed_precision", default="no", choices=["no", "bf16"], help="bf16 on a GPU; no on a CPU"
    )
    p.add_argument("--export", default=str(Path(__file__).resolve().parents[1] / "src/panowan/assets"),
                   help="folder the embedded model is written to")  # fmt: skip
    p.add_argument("--sampling_steps", type=int, default=None,
                   help="recommended sampling steps recorded in the export (panowan infer and demo use them unless "
                        "told otherwise); choose them on validation rooms, not the demo's")  # fmt: skip
    p.add_argument("--sampler", default=None, choices=["unipc", "euler"],
                   help="recommended sampler recorded in the export (with --sampling_steps)")  # fmt: skip
    p.add_argument("--eval_rooms", type=int, default=8, help="unseen rooms for the evaluation")
    p.add_argument("--eval_steps", type=int, default=None,
                   help="sampling steps of the evaluation (default: the recommended sampling, else 10)")  # fmt: skip
    p.add_argument("--eval_seed", type=int, default=900_002,
                   help="synth seed of the evaluation rooms (the demo's; pick another to select settings)")  # fmt: skip
    return p.parse_args()


def train_command(args: argparse.Namespace, data: Path, run: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "panowan", "train", "--preset", args.preset, "--data_root", str(data),
            "--output_dir", str(run), "--resolution", str(args.resolution), "--num_frames", str(args.num_frames),
            "--train_batch_size", str(args.batch), "--max_train_steps", str(steps), "--learning_rate", str(args.lr),
            "--lr_scheduler", "cosine", "--lr_warmup_steps", str(min(100, steps // 10)),
            "--lora_rank", str(args.lora_rank), *(["--lora_targets", *LORA_TARGETS] if args.lora_rank else []),
            "--hole_weight", str(args.hole_weight),
            "--checkpointing_steps", str(50 if args.stop_after else max(50, steps // 8)), "--checkpoints_total_limit", "2",
            "--dataloader_workers", str(args.workers), "--cache_files", "--mixed_precision", args.mixed_precision,
            "--seed", str(args.train_seed if args.seed is None else args.seed), "--no-progress", "--no-tensorboard",
            "--max_grad_norm", str(args.max_grad_norm), "--pixel_weight", str(args.pixel_weight),
            "--pixel_frames", str(args.pixel_frames),
            *(["--interactions", args.interactions] if args.interactions else []),
            *(["--pixel_decoder_width", str(args.pixel_decoder_width)] if args.pixel_decoder_width is not None else []),
            *(["--pixel_decoder_levels", str(args.pixel_decoder_levels)] if args.pixel_decoder_levels is not None else []),
            *({True: ["--pixel_decoder_rays"], False: ["--no-pixel_decoder_rays"]}.get(args.pixel_decoder_rays, [])),
            *(["--init_from", args.init_from] if args.init_from else []),
            *(["--rgb_condition_fill", args.rgb_condition_fill] if args.rgb_condition_fill else []),
            *(["--depth_condition_fill", args.depth_condition_fill] if args.depth_condition_fill else []),
            *({True: ["--compile_blocks"], False: ["--no-compile_blocks"]}.get(args.compile, []))]  # fmt: skip


def steps_for_budget(args: argparse.Namespace, data: Path, work: Path) -> tuple[int, dict]:
    """Run PROBE_STEPS steps, then the steps that fit what is left of the budget at the measured pace
    (the median step after warm-up; the probe's start-up and slow first steps are paid again)."""
    probe = work / "probe"
    shutil.rmtree(probe, ignore_errors=True)
    t0 = time.monotonic()
    if sh(*train_command(args, data, probe, PROBE_STEPS)):
        raise SystemExit("the probe run failed (its error is above)")
    wall = time.monotonic() - t0
    records = [json.loads(x) for x in (probe / "metrics.jsonl").read_text().splitlines()]
    paces = sorted(r["seconds_per_step"] for r in records[PROBE_STEPS // 2 :])
    pace = paces[len(paces) // 2]
    overhead = max(wall - PROBE_STEPS * pace, 0.0)  # start-up and first (slow) steps, paid again
    left = args.time_budget - wall - overhead - 30  # 30 s for the last checkpoint and the export
    steps = int(left / pace)
    if steps < 100:
        raise SystemExit(f"--time_budget {args.time_budget:.0f} s leaves {steps} steps after the probe "
                         f"({pace:.2f} s a step, {overhead:.0f} s start-up): give more time")  # fmt: skip
    shutil.rmtree(probe, ignore_errors=True)
    return steps, {"probe_seconds_per_step": round(pace, 4), "probe_overhead_seconds": round(overhead, 1)}


def machine(mixed_precision: str = "no") -> str:
    import torch

    precision = "float32" if mixed_precision == "no" else f"{mixed_precision} autocast"
    if torch.cuda.is_available():
        return f"1x {torch.cuda.get_device_name()}, {precision}"
    return f"{torch.get_num_threads()} CPU threads, {precision}"


def export(args: argparse.Namespace, work: Path, run: Path, info: dict) -> None:
    from panowan.commands import infer as infer_cmd

    parser = argparse.ArgumentParser()
    infer_cmd.add_arguments(parser)
    source = infer_cmd.resolve_model(parser.parse_args(["--checkpoint_dir", str(run), "--data_root", str(work),
                                                        "--output_dir", str(work / "unused")]))  # fmt: skip
    model, _, _ = infer_cmd.build_model(source, None, "cpu", __import__("torch").float32)
    info["steps"] = int(Path(source.weights).parent.name.split("-")[-1])
    start = info.get("init_from", {})  # the chain: steps of the starting model, then this run's
    info["total_steps"] = int(start.get("total_steps", start.get("steps", 0))) + info["steps"]
    # What is left out falls back where it is used (panowan infer / demo), not here.
    given = {"num_inference_steps": args.sampling_steps, "sampler": args.sampler}
    sampling = {k: v for k, v in given.items() if v is not None} or None
    written = infer_cmd.export_embedded(model, info, args.export, sampling=sampling)
    print(
        "exported", [f"{w} ({w.stat().st_size / 1e6:.1f} MB)" for w in written], json.dumps(info), flush=True
    )


def data_commands(args: argparse.Namespace, data: str) -> list[list[str]]:
    """The `panowan synth` and `panowan prepare` arguments that make the training rooms in `data` (what is run,
    and, with DATA for the folder, what the export records)."""
    return [["synth", "--out", data, "--rooms", str(args.rooms), "--views", "9", "--height", str(args.resolution),
             "--width", str(2 * args.resolution), "--seed", str(args.train_seed), "--difficulty", args.difficulty],
            ["prepare", "--data_root", data]]  # fmt: skip


def describe_data(args: argparse.Namespace) -> str:
    return "; ".join("panowan " + " ".join(cmd) for cmd in data_commands(args, "DATA"))


def make_data(args: argparse.Namespace, data: Path, exe: list[str]) -> None:
    """Synthesize and prepare the training rooms into `data`, unless a finished copy is there.

    A lock file beside `data` makes concurrent runs wait for the one that builds it; a marker written last
    (the data commands) tells a finished copy from one cut short, which is rebuilt from scratch.
    """
    import fcntl

    data.parent.mkdir(parents=True, exist_ok=True)
    marker, spec = data / ".panowan_data_ready", describe_data(args)
    with open(data.parent / f".{data.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():
            if marker.read_text() != spec:
                raise SystemExit(f"--data {data} holds other rooms ({marker.read_text()}), not {spec}")
            return
        shutil.rmtree(data, ignore_errors=True)
        for cmd in data_commands(args, str(data)):
            if sh(*exe, *cmd, "--workers", str(args.data_workers)):
                raise SystemExit(f"panowan {cmd[0]} of {data} failed (the error is above)")
        marker.write_text(spec)


def main() -> None:
    args = parse_args()
    if args.rooms < args.batch:
        raise SystemExit(
            f"--rooms {args.rooms} < --batch {args.batch}: a step needs that many distinct rooms"
        )
    work = Path(args.work)
    data, run = Path(args.data) if args.data else work / "data", work / "run"
    exe = [sys.executable, "-m", "panowan"]
    t0 = time.monotonic()
    make_data(args, data, exe)
    print(f"data ready in {time.monotonic() - t0:.0f} s", flush=True)
    info: dict = {"synth_seeds": [args.train_seed], "rooms": args.rooms, "resolution": args.resolution,
                  "num_frames": args.num_frames, "flow_shift": 3.0, "machine": machine(args.mixed_precision),
                  "data_commands": describe_data(args),
                  "recipe": "python scripts/train_default_model.py " + " ".join(sys.argv[1:])}  # fmt: skip
    if args.init_from:  # what the starting model was trained with
        info["init_from"] = read_exported(args.init_from)[0]["train"]
    steps, t_train = args.steps, time.monotonic()
    if args.time_budget:
        steps, probe = steps_for_budget(args, data, work)
        info.update(probe)
    cmd = train_command(args, data, run, steps)
    left = args.time_budget - (time.monotonic() - t_train) if args.time_budget else (args.stop_after or None)
    sh(*cmd, timeout=left)
    info.update({"train_seconds": round(time.monotonic() - t_train),
                 "train_command": " ".join(cmd[2:]).replace(str(data), "DATA").replace(str(run), "RUN")
                                  .replace(args.init_from or "\0", "INIT")})  # fmt: skip
    export(args, work, run, info)
    if args.eval_rooms:
        steps = ["--steps", str(args.eval_steps)] if args.eval_steps else []
        sh(*exe, "demo", "--out", str(work / "eval"), "--rooms", str(args.eval_rooms), *steps,
           "--seed", str(args.eval_seed), "--model_dir", args.export)  # fmt: skip


if __name__ == "__main__":
    main()
