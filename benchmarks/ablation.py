r"""The interaction ablation of the dual-stream model: the same recipe and budget for each variant and seed, run side by
side on one machine, then every export evaluated on the same held-out rooms against the classical fills.

    # the table of BENCHMARKS.md ("Ablation"): 2 seeds x 5 variants at 128x256 on one H100, 10 runs side by side
    python benchmarks/ablation.py --work runs/ablation --seeds 0 1 --resolution 128 --rooms 96 --steps 600 \
        --batch 16 --stop_after 400 --device cuda --mixed_precision bf16 --json benchmarks/results/ablation.json

Variants (`VARIANTS`), each `scripts/train_default_model.py` from scratch with `--interactions`:
- full: pose cross-attention and cross-stream attention (the method);
- no-cross: pose only (the RGB and depth streams never see each other, nor do their pixel decoders);
- no-pose: cross-stream only (no Plücker features enter);
- none: two independent streams under one gradient-norm clip;
- alone: `none` without the clip (`--max_grad_norm 0`): each stream's loss, gradients and Adam state then depend on
  that stream alone, which is exactly training each stream by itself on the same samples.
Every run gets the same number of optimiser steps (`--steps`); `--stop_after` stops a run that is slower than
planned at its last checkpoint, and the results say how many steps each reached (so an unequal budget shows).

Evaluation (`evaluate`): `panowan infer` of every export on held-out hard rooms of a seed never used in training
(`--eval_seed`), then `panowan eval` of each with the classical baselines (Telea, Navier-Stokes, harmonic) on the
same rooms; the JSON holds per variant and seed the hole / known metrics and the hole consistency, and the mean and
spread over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "full": ["--interactions", "pose+cross"],
    "no-cross": ["--interactions", "pose"],
    "no-pose": ["--interactions", "cross"],
    "none": ["--interactions", "none"],
    "alone": ["--interactions", "none", "--max_grad_norm", "0"],
}
HEADLINE = (("hole", "psnr"), ("hole", "ssim"), ("hole", "absrel"), ("known", "psnr"),
            ("hole_consistency", "rgb_l1"), ("hole_consistency", "depth_rel"))  # fmt: skip
"""(group, metric) pairs summarised over seeds."""


def sh(cmd: list[str], log: Path | None = None, timeout: float | None = None) -> int:
    print("+", " ".join(cmd), flush=True)
    out = open(log, "w") if log else None  # noqa: SIM115 (closed below)
    try:
        return subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT if out else None, timeout=timeout,
                              check=False).returncode  # fmt: skip
    except subprocess.TimeoutExpired:
        return 124
    finally:
        if out:
            out.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="work folder (data, runs, predictions)")
    p.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="variants to run"
    )
    p.add_argument(
        "--seeds", nargs="+", type=int, default=[0, 1], help="training seeds (one run per variant each)"
    )
    p.add_argument("--preset", default="small", help="model preset of every run")
    p.add_argument("--resolution", type=int, default=128, help="panorama height of training and evaluation")
    p.add_argument("--rooms", type=int, default=96, help="training rooms (hard, synth seed --train_seed)")
    p.add_argument("--train_seed", type=int, default=0, help="synth seed of the training rooms")
    p.add_argument("--steps", type=int, default=600, help="optimiser steps of every run")
    p.add_argument("--batch", type=int, default=16, help="rooms per step")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--pixel_decoder_width", type=int, default=16, help="pixel decoder width of every variant")
    p.add_argument(
        "--fill", default="harmonic", help="condition fill of both streams (panowan train --*_condition_fill)"
    )
    p.add_argument("--hole_weight", type=float, default=3.0, help="extra MSE weight of the holes")
    p.add_argument("--stop_after", type=float, default=0,
                   help="seconds after which a run still training is stopped at its last checkpoint (0: none)")  # fmt: skip
    p.add_argument("--mixed_precision", default="no", choices=["no", "bf16"], help="bf16 on a GPU")
    p.add_argument("--compile", action="store_true", help="--compile_blocks")
    p.add_argument("--workers", type=int, default=2, help="data-loading threads per run")
    p.add_argument(
        "--data_workers", type=int, default=os.cpu_count() or 1, help="processes of synth and prepare"
    )
    p.add_argument("--eval_rooms", type=int, default=8, help="held-out rooms (hard, synth seed --eval_seed)")
    p.add_argument("--eval_views", type=int, default=5, help="views of each held-out room")
    p.add_argument("--eval_seed", type=int, default=910_001, help="synth seed of the held-out rooms")
    p.add_argument("--eval_steps", type=int, default=2, help="sampling steps of the evaluation")
    p.add_argument("--sampler", default="euler", choices=["euler", "unipc"], help="sampler of the evaluation")
    p.add_argument("--device", default="cpu", help="device of the evaluation's inference")
    p.add_argument("--json", default=None, help="results JSON (default WORK/ablation.json)")
    return p.parse_args(argv)


def run_variant(args: argparse.Namespace, name: str, seed: int, data: Path) -> dict:
    """Train one variant with one seed (scripts/train_default_model.py), export it; its record."""
    work = Path(args.work) / "runs" / f"{name}-s{seed}"
    cmd = [sys.executable, str(ROOT / "scripts" / "train_default_model.py"), "--work", str(work),
           "--data", str(data), "--rooms", str(args.rooms), "--train_seed", str(args.train_seed),
           "--difficulty", "hard", "--seed", str(seed), "--resolution", str(args.resolution),
           "--steps", str(args.steps), "--batch", str(args.batch), "--lr", str(args.lr), "--preset", args.preset,
           "--hole_weight", str(args.hole_weight), "--rgb_condition_fill", args.fill,
           "--depth_condition_fill", args.fill, "--pixel_decoder_width", str(args.pixel_decoder_width),
           "--workers", str(args.workers), "--mixed_precision", args.mixed_precision,
           "--data_workers", str(args.data_workers), "--eval_rooms", "0",
           "--export", str(work / "export"), "--stop_after", str(args.stop_after), *VARIANTS[name],
           *(["--compile"] if args.compile else [])]  # fmt: skip
    t0 = time.monotonic()
    work.parent.mkdir(parents=True, exist_ok=True)
    code = sh(cmd, work.with_suffix(".log"))
    record = {"variant": name, "seed": seed, "exit_code": code, "seconds": round(time.monotonic() - t0),
              "export": str(work / "export")}  # fmt: skip
    meta = work / "export" / "default_model.json"
    if meta.is_file():
        record["steps"] = json.loads(meta.read_text())["train"].get("steps")
    return record


def make_eval_rooms(args: argparse.Namespace, root: Path) -> Path:
    data = root / "eval_data"
    if not (data / ".ready").is_file():
        exe = [sys.executable, "-m", "panowan"]
        h = str(args.resolution)
        assert sh([*exe, "synth", "--out", str(data), "--rooms", str(args.eval_rooms), "--views", str(args.eval_views),
                   "--height", h, "--width", str(2 * args.resolution), "--seed", str(args.eval_seed),
                   "--difficulty", "hard", "--workers", str(args.data_workers)]) == 0  # fmt: skip
        assert sh([*exe, "prepare", "--data_root", str(data), "--workers", str(args.data_workers)]) == 0
        (data / ".ready").write_text("")
    return data


def evaluate(args: argparse.Namespace, records: list[dict], eval_data: Path) -> dict:
    """Infer every export on the held-out rooms, then `panowan eval` each (the baselines with the first)."""
    exe = [sys.executable, "-m", "panowan"]
    root = Path(args.work) / "eval"
    root.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    done = [r for r in records if Path(r["export"], "default_model.json").is_file()]

    def infer(r: dict) -> int:
        pred = root / f"{r['variant']}-s{r['seed']}"
        return sh([*exe, "infer", "--model_dir", r["export"], "--data_root", str(eval_data), "--output_dir", str(pred),
                   "--num_inference_steps", str(args.eval_steps), "--sampler", args.sampler,
                   "--device", args.device], pred.with_suffix(".infer.log"))  # fmt: skip

    def score(job: tuple[int, dict]) -> None:
        i, r = job
        pred = root / f"{r['variant']}-s{r['seed']}"
        if infer(r):
            r["eval_error"] = f"infer failed (see {pred}.infer.log)"
            return
        metrics = pred / "metrics.json"
        extra = ["--baselines", "--baseline_dir", str(root / "baselines")] if i == 0 else []
        if sh([*exe, "eval", "--pred_dir", str(pred), "--data_root", str(eval_data), "--out", str(metrics), *extra],
              pred.with_suffix(".eval.log")):  # fmt: skip
            r["eval_error"] = f"eval failed (see {pred}.eval.log)"
            return
        methods = json.loads(metrics.read_text())
        if i == 0:
            results["baselines"] = {m: v["mean"] for m, v in methods.items() if m != "model"}
        r["metrics"] = methods["model"]["mean"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(score, enumerate(done)))
    return results


def summarise(records: list[dict], variants: list[str]) -> dict:
    """Mean and spread (population standard deviation) over seeds of the headline metrics, per variant."""
    table = {}
    for name in variants:
        rows = [r["metrics"] for r in records if r["variant"] == name and "metrics" in r]
        entry: dict = {"seeds": len(rows)}
        for group, key in HEADLINE:
            values = [row.get(group, {}).get(key) for row in rows]
            values = [v for v in values if v is not None]
            if values:
                entry[f"{group}/{key}"] = {"mean": statistics.fmean(values),
                                           "spread": statistics.pstdev(values) if len(values) > 1 else 0.0}  # fmt: skip
        table[name] = entry
    return table


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    t0 = time.monotonic()
    eval_data = make_eval_rooms(args, work)
    jobs = [(v, s) for s in args.seeds for v in args.variants]
    # the first run builds the shared training rooms (train_default_model.py locks them); the rest wait for it
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        records = list(pool.map(lambda job: run_variant(args, job[0], job[1], data), jobs))
    train_seconds = round(time.monotonic() - t0)
    evaluation = evaluate(args, records, eval_data)
    out = {"args": vars(args), "train_seconds": train_seconds, "runs": records,
           "table": summarise(records, args.variants), **evaluation}  # fmt: skip
    path = Path(args.json) if args.json else work / "ablation.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps(out["table"], indent=1))
    return out


if __name__ == "__main__":
    main()
