r"""Probe (issue 18): would a plane-exact membrane fill the holes' depth better than the plain one?

A plane's inverse range is linear in the ray direction, `1/r = n . d / h`, and on the unit sphere the linear
functions are the eigenfunctions of the Laplace-Beltrami operator with eigenvalue -2. So the *screened* membrane,
`(Delta + 2) f = 0` on the hole with the known inverse ranges as boundary values, reproduces any single plane
exactly, where the plain membrane of the range (`harmonic_fill`, the best classical depth fill) bends it. This
script measures both, unsteered and steered (the Neumann boundaries of `depth_fill.fill_depth_from_background`),
as the mean and median over target views of the hole AbsRel against the ground truth:

    python benchmarks/plane_depth_probe.py --data_root runs/bench_quality/hard_data

(`--data_root`: prepared rooms with ground truth, e.g. `bench_quality.py`'s hard set). Result (2026-12-07,
BENCHMARKS.md "A stronger classical fill"): the screened fill is much worse (0.18 vs 0.135): holes span corners
and occluder sides, where one plane per hole is the wrong model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def screened_inverse_fill(depth_HW: np.ndarray, valid_HW: np.ndarray, steered: bool) -> np.ndarray:
    """The hole's range from the screened membrane of the inverse range (steered: background boundaries only)."""
    from panowan.data import depth_fill as df
    from panowan.data.inpaint import membrane_edges, membrane_solve

    hole = ~valid_HW
    h = hole.shape[0]
    edges = membrane_edges(hole)
    weights = edges.weight
    if steered:
        n_parts, part = df.hole_parts(edges)
        p, flat = df._outer(edges)
        log_depth = np.log(np.where(valid_HW, depth_HW, 1.0)).reshape(-1)
        keep = df.background_boundary(log_depth[flat], flat, hole.shape, df.DEFAULT_WINDOW, df.DEFAULT_SPLIT)
        keep, _ = df._with_fallback(keep, part[p], n_parts)
        weights = df._outer_weights(keep, edges)
    rows = np.nonzero(hole)[0]
    screen = 2 * np.cos(np.pi / 2 - (rows + 0.5) * np.pi / h) * (np.pi / h) ** 2
    inverse = np.where(valid_HW, 1.0 / np.where(valid_HW, depth_HW, 1.0), 0.0).reshape(-1, 1)
    out = depth_HW.astype(np.float64).copy()
    # screen = 2 cos(latitude) dphi^2: the scale of `membrane_edges`' sphere metric, so the system is
    # the discrete (Delta + 2) f = 0
    solved = membrane_solve(inverse, edges, weights, screen_N=screen)[:, 0]
    out[hole] = np.where(solved > 1e-6, 1.0 / np.maximum(solved, 1e-6), 0.0)
    return out


def main() -> None:
    import cv2

    from panowan.data.depth_fill import fill_depth_from_background
    from panowan.data.inpaint import harmonic_fill

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", required=True, help="prepared rooms with ground truth (output/)")
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args()
    fills = {
        "harmonic (range)": lambda d, v: harmonic_fill(np.where(v, d, 0.0), ~v),
        "depth-steered (range)": lambda d, v: fill_depth_from_background(np.where(v, d, 1.0), v)[0],
        "screened inverse": lambda d, v: screened_inverse_fill(d, v, steered=False),
        "screened inverse, steered": lambda d, v: screened_inverse_fill(d, v, steered=True),
    }
    scores: dict[str, list[float]] = {k: [] for k in fills}
    for inputs in sorted(Path(args.data_root).glob("*/*/input")):
        for depth_path in sorted(inputs.glob("pano0000_to_pano*_depth_range.npy")):
            view = depth_path.name.split("_to_pano")[1][:4]
            if view == "0000":
                continue
            depth = np.load(depth_path).astype(np.float64)
            known = cv2.imread(str(inputs / f"pano0000_to_pano{view}_mask.png"), cv2.IMREAD_GRAYSCALE) > 127
            truth = np.load(inputs.parent / "output" / f"panorama_{view}_depth.npy").astype(np.float64)
            valid = known & np.isfinite(depth) & (depth > 0)
            scored = ~valid & np.isfinite(truth) & (truth > 0)
            if not scored.any():
                continue
            for name, fill in fills.items():
                filled = fill(depth, valid)
                scores[name].append(float(np.mean(np.abs(filled[scored] - truth[scored]) / truth[scored])))
    table = {
        k: {"mean": float(np.mean(v)), "median": float(np.median(v)), "views": len(v)}
        for k, v in scores.items()
    }
    for name, row in table.items():
        print(
            f"{name:28s} hole AbsRel mean {row['mean']:.4f} median {row['median']:.4f} ({row['views']} views)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
