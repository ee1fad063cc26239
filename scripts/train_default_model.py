"""The recipe of the embedded default model (panowan/assets/default_model.*), end to end.

    python scripts/train_default_model.py --work runs/default_model --steps 3500

1. `panowan synth`: training rooms (seed --train_seed) at --resolution x 2*resolution, 9 views each;
2. `panowan prepare`;
3. `panowan train --preset small` with LoRA on every linear layer of the (seeded random) Wan base,
   interaction layers and PluckerNet in full (the flags are printed and saved in the run's config.json);
4. export of the last complete checkpoint as the embedded default (`--export`, default the package's assets);
5. `panowan demo`-style evaluation on --eval_rooms unseen rooms against OpenCV inpainting and the copied input.
A `--time_limit` (seconds) stops training at the last checkpoint before it, so the run fits a lease.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "add_v_proj",
                "ffn.net.0.proj", "ffn.net.2", "proj_out", "patch_embedding"]  # fmt: skip


def sh(*cmd: str, timeout: float | None = None) -> int:
    print("+", " ".join(cmd), flush=True)
    try:
        return subprocess.run(cmd, check=False, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        print(f"(stopped after {timeout:.0f} s; continuing from the last complete checkpoint)", flush=True)
        return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/default_model", help="work folder (data, run, evaluation)")
    p.add_argument("--rooms", type=int, default=96, help="training rooms")
    p.add_argument("--train_seed", type=int, default=0, help="synth seed of the training rooms")
    p.add_argument("--resolution", type=int, default=64, help="panorama height (width 2x)")
    p.add_argument("--num_frames", type=int, default=5, help="views per training sample")
    p.add_argument("--steps", type=int, default=3500, help="optimiser steps")
    p.add_argument("--batch", type=int, default=8, help="rooms per step")
    p.add_argument(
        "--lr", type=float, default=1e-3, help="peak learning rate (cosine schedule, 100 warm-up steps)"
    )
    p.add_argument("--time_limit", type=float, default=0, help="seconds of training at most (0: no limit)")
    p.add_argument(
        "--mixed_precision", default="no", choices=["no", "bf16"], help="bf16 on a GPU; no on a CPU"
    )
    p.add_argument("--export", default=str(Path(__file__).resolve().parents[1] / "src/panowan/assets"),
                   help="folder the embedded model is written to")  # fmt: skip
    p.add_argument("--eval_rooms", type=int, default=8, help="unseen rooms for the evaluation")
    p.add_argument("--eval_steps", type=int, default=10, help="sampling steps of the evaluation")
    args = p.parse_args()
    work = Path(args.work)
    data, run = work / "data", work / "run"
    exe = [sys.executable, "-m", "panowan"]
    t0 = time.monotonic()
    sh(*exe, "synth", "--out", str(data), "--rooms", str(args.rooms), "--views", "9", "--height",
       str(args.resolution), "--width", str(2 * args.resolution), "--seed", str(args.train_seed), "--workers", "8")  # fmt: skip
    sh(*exe, "prepare", "--data_root", str(data), "--workers", "8")
    print(f"data ready in {time.monotonic() - t0:.0f} s", flush=True)
    train_cmd = [*exe, "train", "--preset", "small", "--data_root", str(data), "--output_dir", str(run),
                 "--resolution", str(args.resolution), "--num_frames", str(args.num_frames),
                 "--train_batch_size", str(args.batch), "--max_train_steps", str(args.steps),
                 "--learning_rate", str(args.lr), "--lr_scheduler", "cosine", "--lr_warmup_steps", "100",
                 "--lora_rank", "32", "--lora_targets", *LORA_TARGETS, "--checkpointing_steps", "250",
                 "--checkpoints_total_limit", "3", "--mixed_precision", args.mixed_precision,
                 "--seed", str(args.train_seed)]  # fmt: skip
    sh(*train_cmd, timeout=args.time_limit or None)
    t1 = time.monotonic()

    from panowan.commands import infer as infer_cmd

    parser = argparse.ArgumentParser()
    infer_cmd.add_arguments(parser)
    source = infer_cmd.resolve_model(parser.parse_args(["--checkpoint_dir", str(run), "--data_root", str(data),
                                                        "--output_dir", str(work / "unused")]))  # fmt: skip
    model, _, _ = infer_cmd.build_model(source, None, "cpu", __import__("torch").float32)
    step = (
        int(Path(source.weights).parent.name.split("-")[-1]) if "checkpoint-" in str(source.weights) else None
    )
    info = {"synth_seeds": [args.train_seed], "rooms": args.rooms, "resolution": args.resolution,
            "num_frames": args.num_frames, "flow_shift": 3.0, "steps": step, "train_seconds": round(t1 - t0),
            "recipe": "python scripts/train_default_model.py " + " ".join(sys.argv[1:]),
            "train_command": " ".join(train_cmd[2:])}  # fmt: skip
    written = infer_cmd.export_embedded(model, info, args.export)
    print("exported", [str(w) for w in written], json.dumps(info), flush=True)
    if args.eval_rooms:
        sh(
            *exe,
            "demo",
            "--out",
            str(work / "eval"),
            "--rooms",
            str(args.eval_rooms),
            "--steps",
            str(args.eval_steps),
        )


if __name__ == "__main__":
    main()
