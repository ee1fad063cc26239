"""Evaluate completed panoramas against the ground truth of their rooms.

Reads predictions in the layout `panowan infer` writes (PRED_DIR/{area}/{room}/panorama_XXXX.png and
panorama_XXXX_depth.npy) and the rooms under DATA_ROOT (prepared). Per view and per room, split into hole
and known regions: PSNR, SSIM, WS-PSNR, depth AbsRel, RMSE and delta < 1.25 in metres; cross-view
consistency and seam continuity; hole consistency (whether two views' completions agree where both had to
fill). Writes the JSON (--out) and a markdown table beside it (.md). With --baselines it also writes and
evaluates baselines (OpenCV inpainting, harmonic, depth-steered and room-shell fills, the learned shell gate, input copy)
under PRED_DIR/../baselines/NAME so the table compares them; `--baselines` with no names compares with all of them. Both outputs state the
model's margin against the best classical fill per headline metric (the JSON in "model": "best_classical").
"""

from __future__ import annotations

import argparse

HELP = "metrics of completed panoramas (PSNR, SSIM, WS-PSNR, depth AbsRel/RMSE/delta, consistency, seam)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from panowan.eval.baselines import BASELINES, DEFAULT_BASELINES

    parser.add_argument(
        "--pred_dir", required=True, help="folder of predictions: {area}/{room}/panorama_XXXX*"
    )
    parser.add_argument(
        "--data_root", required=True, help="data root with the ground truth of the same rooms"
    )
    parser.add_argument("--out", default=None, help="metrics JSON to write (default: PRED_DIR/metrics.json); "
                        "the markdown table goes beside it with the suffix .md")  # fmt: skip
    parser.add_argument("--rooms", nargs="*", default=None, help="only these room ids ('area/room')")
    parser.add_argument("--baselines", nargs="*", default=None, choices=BASELINES,
                        help="also compute these baselines on the same rooms and compare (the model against the "
                        "best classical fill; shell_gate is a learned fill, listed but never counted as one); "
                        f"with no names: {' '.join(DEFAULT_BASELINES)}")  # fmt: skip
    parser.add_argument("--baseline_dir", default=None,
                        help="where baseline predictions are written (default: PRED_DIR/../baselines)")  # fmt: skip
    parser.add_argument(
        "--no_consistency", action="store_true", help="skip the cross-view and hole consistency metrics"
    )
    parser.add_argument("--workers", type=int, default=None,
                        help="processes evaluating the model's and the baselines' folders side by side (default: one "
                        "per core, at most 4; 1: in this process)")  # fmt: skip


def evaluate_with_baselines(
    pred_dir, data_root, rooms, baselines, baseline_dir, consistency=True, workers: int | None = None
) -> dict:
    """{method: evaluate_dir result}, the model first, then each baseline (written first, then all folders
    evaluated in `workers` processes, `panowan.eval.pool`; None: one per core, at most 4)."""
    from pathlib import Path

    from panowan.eval.baselines import run_baseline
    from panowan.eval.metrics import predicted_rooms
    from panowan.eval.pool import evaluate_dirs

    room_ids = predicted_rooms(pred_dir, rooms)
    base_root = Path(baseline_dir) if baseline_dir else Path(pred_dir).resolve().parent / "baselines"
    for name in baselines:
        run_baseline(data_root, base_root / name, name, room_ids)
    folders = [Path(pred_dir), *(base_root / name for name in baselines)]
    evaluated = evaluate_dirs(folders, data_root, room_ids, consistency=consistency, workers=workers)
    return dict(zip(["model", *baselines], evaluated, strict=True))


def selected_baselines(names: list[str] | None) -> list[str]:
    """The baselines of `--baselines`: none without the flag, `DEFAULT_BASELINES` with the bare flag."""
    from panowan.eval.baselines import DEFAULT_BASELINES

    if names is None:
        return []
    return list(names) if names else list(DEFAULT_BASELINES)


def write_results(results: dict, out) -> tuple:
    """Write the JSON and the markdown table (same stem, .md); returns both paths. The JSON's "model" gets a
    "best_classical" block (`summary.best_classical`: the model against the best classical fill per metric)."""
    from pathlib import Path

    from panowan.eval.summary import best_classical, markdown_table
    from panowan.utils.atomic import atomic_write_json, atomic_write_text

    out = Path(out)
    payload = dict(results)
    if "model" in results:
        payload["model"] = {**results["model"], "best_classical": best_classical(results)}
    atomic_write_json(out, payload)
    md = out.with_suffix(".md")
    atomic_write_text(md, markdown_table(results))
    return out, md


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    results = evaluate_with_baselines(args.pred_dir, args.data_root, args.rooms, selected_baselines(args.baselines),
                                      args.baseline_dir, consistency=not args.no_consistency, workers=args.workers)  # fmt: skip
    out = args.out or str(Path(args.pred_dir) / "metrics.json")
    json_path, md_path = write_results(results, out)
    print(md_path.read_text(encoding="utf-8"))
    print(f"wrote {json_path} and {md_path}")
    return 0
