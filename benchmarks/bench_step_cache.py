r"""What first-block step caching (`infer --step_cache`) costs in quality and buys in time, on the embedded model.

    python benchmarks/bench_step_cache.py --json benchmarks/results/step_cache_cpu.json

Held-out hard rooms (`bench_quality.room_set`: synth seed 920001, never a training seed), completed with
`--num_inference_steps` steps of `--sampler` once without caching and once per `--thresholds` value; each run is
evaluated by `panowan eval` (hole PSNR / SSIM / depth AbsRel against the ground truth) and compared pixel by pixel
with the uncached completion (PSNR of cached against uncached over all pixels). Time: the rooms' "denoise" phase
(`infer --timings_json`), the part caching acts on. The embedded model's own recommendation is 2 Euler steps, where a cache has
nothing to skip: more steps are the setting where caching is a question.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import EXE, room_set, sh


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/bench_step_cache", help="work folder (rooms, predictions)")
    p.add_argument("--rooms", type=int, default=3, help="hard rooms")
    p.add_argument("--views", type=int, default=5, help="views per room")
    p.add_argument("--height", type=int, default=256, help="panorama height (width 2x)")
    p.add_argument("--hard_seed", type=int, default=920_001, help="synth seed of the rooms")
    p.add_argument("--steps", type=int, default=10, help="sampling steps")
    p.add_argument("--sampler", default="unipc", choices=["euler", "unipc"], help="sampler")
    p.add_argument(
        "--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.2], help="--step_cache values"
    )
    p.add_argument("--device", default="cpu", help="device of the model's inference")
    p.add_argument("--workers", type=int, default=2, help="processes of synth and prepare")
    p.add_argument("--json", default=None, help="results JSON (default WORK/step_cache.json)")
    return p.parse_args(argv)


def run(args: argparse.Namespace, data: Path, threshold: float) -> dict:
    """Complete the rooms with `--step_cache threshold`; its metrics, denoising seconds and skipped steps."""
    pred = Path(args.work) / f"pred_{threshold:g}"
    timings = Path(args.work) / f"timings_{threshold:g}.json"
    sh([*EXE, "infer", "--data_root", str(data), "--output_dir", str(pred), "--device", args.device, "--overwrite",
        "--num_inference_steps", str(args.steps), "--sampler", args.sampler, "--step_cache", str(threshold),
        "--timings_json", str(timings)])  # fmt: skip
    sh([*EXE, "eval", "--pred_dir", str(pred), "--data_root", str(data), "--out", str(pred / "metrics.json")])
    mean = json.loads((pred / "metrics.json").read_text())["model"]["mean"]
    rooms = json.loads(timings.read_text())["rooms"]
    skipped = [
        json.loads(p.read_text()).get("step_cache_skipped", 0) for p in sorted(pred.rglob("completion.json"))
    ]
    return {"pred": pred, "denoise_seconds": round(sum(r["denoise"] for r in rooms.values()), 2),
            "skipped_steps_per_room": skipped, "hole_psnr": mean["hole"]["psnr"], "hole_ssim": mean["hole"]["ssim"],
            "hole_absrel": mean["hole"]["absrel"], "known_psnr": mean["known"]["psnr"]}  # fmt: skip


def psnr_between(a_dir: Path, b_dir: Path) -> float:
    """PSNR of every completed panorama of `b_dir` against the same file of `a_dir` (8-bit PNGs, all pixels)."""
    import cv2

    errors = []
    for a in sorted(a_dir.rglob("panorama_????.png")):
        x = cv2.imread(str(a)).astype(np.float64) / 255
        y = cv2.imread(str(b_dir / a.relative_to(a_dir))).astype(np.float64) / 255
        errors.append(np.mean((x - y) ** 2))
    mse = float(np.mean(errors))
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    data = room_set(argparse.Namespace(**{**vars(args), "easy_seed": None}), "hard")
    runs = {0.0: run(args, data, 0.0)}
    for threshold in args.thresholds:
        runs[threshold] = run(args, data, threshold)
    base = runs[0.0]
    rows = {}
    for threshold, r in runs.items():
        rows[f"{threshold:g}"] = {
            **{k: v for k, v in r.items() if k != "pred"},
            "psnr_vs_uncached": None if threshold == 0 else round(psnr_between(base["pred"], r["pred"]), 2),
            "hole_psnr_change_db": round(r["hole_psnr"] - base["hole_psnr"], 3),
            "denoise_speedup": round(base["denoise_seconds"] / r["denoise_seconds"], 3),
        }
    result = {"args": vars(args), "date": time.strftime("%Y-%m-%d"), "runs": rows}
    path = Path(args.json) if args.json else Path(args.work) / "step_cache.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(rows, indent=1))
    return result


if __name__ == "__main__":
    main()
