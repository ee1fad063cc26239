"""Benchmark ERP reprojection: speed of one 720x1440 panorama (CPU, and GPU when CUDA is present) and
quality at 512x1024 on the analytic test scene (tests/geometry/analytic_scene.py).

    python benchmarks/bench_reproject.py --threads 2 --json bench_reproject.json

Quality: view 0 reprojected into targets 0.3 - 1.0 m away; "accurate" = share of valid pixels whose
range is within 2% of the exact render, "coverage" = share of the pixels the target truly shares with
view 0 (away from the target's depth edges) that are marked valid.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "geometry"))
from analytic_scene import TARGETS, VIEW0, distance, quality, render

from panowan.geometry.reproject import reproject_erp
from panowan.utils.atomic import atomic_write_json


def time_reprojection(device: str, height: int, runs: int) -> tuple[list[float], list[float]]:
    """Wall-clock seconds of each timed run, and the process CPU seconds of each (a load-independent
    figure on a shared CPU: divide by the thread count for the uncontended wall time)."""
    src = render(VIEW0, height, 2 * height)
    image = src.image_3HW.to(device)
    range_ = src.range_HW.float().to(device)
    times, cpu = [], []
    for i in range(runs + 1):  # the first run warms up (allocator, kernels)
        if device == "cuda":
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        reproject_erp(image, range_, VIEW0, TARGETS[i % len(TARGETS)])
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return times, cpu


def measure_quality(height: int) -> list[dict]:
    src = render(VIEW0, height, 2 * height)
    rows = []
    for dst in TARGETS:
        rep = reproject_erp(src.image_3HW, src.range_HW.float(), VIEW0, dst)
        accuracy, coverage = quality(rep.range, rep.valid, render(dst, height, 2 * height), VIEW0)
        rows.append({"distance_m": distance(VIEW0, dst), "accurate": accuracy, "coverage": coverage})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--height", type=int, default=720, help="panorama height for timing (width = 2 x height)"
    )
    parser.add_argument("--runs", type=int, default=5, help="timed runs per device (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument(
        "--quality_height", type=int, default=512, help="height for the quality figures (0 = skip)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON to this path")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results = {"height": args.height, "width": 2 * args.height, "runs": args.runs, "timing": {}}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"reprojection of one {args.height}x{2 * args.height} panorama, median of {args.runs} runs")
    print(f"{'device':<40} {'median s':>9} {'min s':>9} {'CPU s':>9}")
    for device in devices:
        times, cpu = time_reprojection(device, args.height, args.runs)
        name = (
            torch.cuda.get_device_name()
            if device == "cuda"
            else f"cpu ({args.threads} threads, {platform.processor() or platform.machine()})"
        )
        median, cpu_median = statistics.median(times), statistics.median(cpu)
        results["timing"][device] = {
            "name": name,
            "median_s": median,
            "min_s": min(times),
            "all_s": times,
            "median_process_cpu_s": cpu_median,
        }
        print(f"{name:<40} {median:>9.3f} {min(times):>9.3f} {cpu_median:>9.3f}")

    if args.quality_height:
        rows = measure_quality(args.quality_height)
        results["quality"] = {"height": args.quality_height, "targets": rows}
        print(
            f"\nquality at {args.quality_height}x{2 * args.quality_height} (targets: accurate >= 0.99, coverage >= 0.93)"
        )
        print(f"{'distance m':>10} {'accurate':>9} {'coverage':>9}")
        for row in rows:
            print(f"{row['distance_m']:>10.2f} {row['accurate']:>9.4f} {row['coverage']:>9.4f}")
    if args.json:
        atomic_write_json(args.json, results)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
