"""Generate procedural rooms in the seed data layout (output/ ground truth of every view, input/ view 0,
poses and a text description), rendered exactly by analytic ray casting. Deterministic by --seed and
--difficulty. Writes OUT/synth_stats.json (the fraction of every target view unseen from view 0) and
prints the set summary. Run `panowan prepare --data_root OUT` afterwards to write the conditioning
inputs."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "generate synthetic rooms (RGB + range panoramas, poses, prompts) in the seed layout"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output data root; rooms go to OUT/area_AAA/room_RRRR")
    parser.add_argument("--rooms", type=int, default=8, help="number of rooms")
    parser.add_argument("--views", type=int, default=9, help="views (camera positions) per room")
    parser.add_argument("--height", type=int, default=256, help="panorama height in pixels")
    parser.add_argument(
        "--width", type=int, default=512, help="panorama width in pixels (must be 2 x height)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; room k uses a seed derived from (seed, k)"
    )
    parser.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    parser.add_argument(
        "--difficulty",
        choices=("easy", "hard"),
        default="hard",
        help="hard (default): large rooms, L shapes, two rooms joined by a doorway, partition walls, "
        "tall and multi-part furniture, pictures, tiled / brick / panelled surfaces, cameras spread "
        "1-4 m from view 0, so that typically 5-15%% of a target view is unseen from view 0; "
        "easy: the original small rooms on a short camera walk (~3%% unseen)",
    )


def run(args: argparse.Namespace) -> int:
    import logging

    from panowan.data.synth import STATS_FILE, synth_rooms
    from panowan.data.synth.stats import format_summary

    rooms = synth_rooms(args.out, args.rooms, args.views, args.height, args.width, seed=args.seed,
                        workers=args.workers, progress=True, difficulty=args.difficulty,
                        stats=True)  # fmt: skip
    logging.getLogger(__name__).info("wrote %d rooms under %s", len(rooms), args.out)
    print(format_summary(rooms.stats))
    print(f"per-view unseen fractions: {Path(args.out) / STATS_FILE}")
    return 0
