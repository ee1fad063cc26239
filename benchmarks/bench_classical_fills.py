r"""The classical fills alone on the held-out rooms of `bench_quality.py` (issue 18): no model inference, so it runs
on CPU in minutes and tells which classical fill the model must beat.

    python benchmarks/bench_classical_fills.py --json benchmarks/results/classical_fills_256.json

The rooms are `bench_quality.py`'s (same flags, same synth + prepare code path: 8 hard rooms of seed 920001 and 8
easy rooms of seed 900002 at 256 x 512, 5 views); each method is written by `panowan.eval.baselines.run_baseline`
and scored by `panowan.eval.metrics.evaluate_dir`, as `panowan eval --baselines` does. The JSON holds each
method's room-averaged hole metrics per set, the best fill per headline metric, the shipped model's figures from
`--model_json` (a `bench_quality.py` result) for reference, and the command line.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality  # the room sets' code path

HEADLINE = (("hole", "psnr", True), ("hole", "ssim", True), ("hole", "absrel", False),
            ("hole_consistency", "rgb_l1", False), ("hole_consistency", "depth_rel", False))  # fmt: skip
"""(group, key, higher is better) of the comparison."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from panowan.eval.baselines import CLASSICAL_FILLS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/bench_classical_fills", help="work folder (rooms, predictions)")
    p.add_argument("--sets", nargs="+", default=["hard", "easy"], choices=["hard", "easy"], help="room sets")
    p.add_argument("--methods", nargs="+", default=list(CLASSICAL_FILLS), choices=CLASSICAL_FILLS,
                   help="classical fills to compare")  # fmt: skip
    p.add_argument("--rooms", type=int, default=8, help="rooms per set")
    p.add_argument("--views", type=int, default=5, help="views per room")
    p.add_argument("--height", type=int, default=256, help="panorama height (width 2x)")
    p.add_argument("--hard_seed", type=int, default=920_001, help="synth seed of the hard rooms")
    p.add_argument("--easy_seed", type=int, default=900_002, help="synth seed of the easy rooms")
    p.add_argument("--workers", type=int, default=2, help="processes of synth and prepare")
    p.add_argument("--model_json", default="benchmarks/results/quality_256_v3.json",
                   help="a bench_quality.py result whose model figures are quoted for reference ('' for none)")  # fmt: skip
    p.add_argument("--json", default=None, help="results JSON (default WORK/classical_fills.json)")
    return p.parse_args(argv)


def headline(mean: dict) -> dict[str, float | None]:
    return {f"{g}_{k}": mean.get(g, {}).get(k) for g, k, _ in HEADLINE}


def best_per_metric(methods: dict[str, dict]) -> dict[str, dict]:
    """{metric: {"method", "value", "runner_up", "runner_up_value"}} over the classical fills measured."""
    out = {}
    for g, k, higher in HEADLINE:
        name = f"{g}_{k}"
        scores = {m: v[name] for m, v in methods.items() if v.get(name) is not None}
        if not scores:
            continue
        ranked = sorted(scores, key=scores.__getitem__, reverse=higher)
        out[name] = {"method": ranked[0], "value": scores[ranked[0]], "higher_is_better": higher}
        if len(ranked) > 1:
            out[name] |= {"runner_up": ranked[1], "runner_up_value": scores[ranked[1]]}
    return out


def main(argv: list[str] | None = None) -> dict:
    from panowan.eval.baselines import run_baseline
    from panowan.eval.metrics import evaluate_dir
    from panowan.utils.atomic import atomic_write_json

    args = parse_args(argv)
    quality_args = bench_quality.parse_args(["--work", args.work, "--rooms", str(args.rooms), "--views",
                                             str(args.views), "--height", str(args.height), "--hard_seed",
                                             str(args.hard_seed), "--easy_seed", str(args.easy_seed),
                                             "--workers", str(args.workers)])  # fmt: skip
    model = {}
    if args.model_json:
        import json

        ref = json.loads(Path(args.model_json).read_text())
        model = {"source": args.model_json, "model_dir": ref.get("model", {}).get("dir"),
                 "sets": {n: headline(s["means"]["model"]) for n, s in ref["sets"].items() if "model" in s["means"]}}  # fmt: skip
    command = "python " + " ".join(
        shlex.quote(a) for a in [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    )
    result: dict = {"command": command, "args": vars(args), "sets": {}, "model_reference": model}
    for name in args.sets:
        data = bench_quality.room_set(quality_args, name)
        methods, seconds = {}, {}
        for method in args.methods:
            pred = Path(args.work) / f"{name}_{method}"
            t0 = time.monotonic()
            run_baseline(data, pred, method)
            seconds[method] = round(time.monotonic() - t0, 1)
            methods[method] = headline(evaluate_dir(pred, data)["mean"])
            print(name, method, methods[method], f"{seconds[method]} s", flush=True)
        result["sets"][name] = {"methods": methods, "fill_seconds": seconds, "best": best_per_metric(methods)}
    path = Path(args.json) if args.json else Path(args.work) / "classical_fills.json"
    atomic_write_json(path, result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
