"""Compose docs/demo.png from a `panowan demo` output folder: per view, the reprojected input, the completion,
the ground truth and the completed depth, side by side.

    python scripts/readme_figure.py --demo demo_out --room area_000/room_0000 --out docs/demo.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", default="demo_out", help="output folder of `panowan demo`")
    p.add_argument("--room", default="area_000/room_0000", help="room id")
    p.add_argument("--views", type=int, nargs="+", default=[1, 2, 4], help="views to show")
    p.add_argument("--scale", type=int, default=2, help="nearest-neighbour magnification")
    p.add_argument("--out", default="docs/demo.png", help="PNG to write")
    args = p.parse_args()
    demo = Path(args.demo)
    data, pred = demo / "data" / args.room, demo / "completions" / args.room
    rows = []
    for v in args.views:
        tiles = [
            cv2.imread(str(data / "input" / f"pano0000_to_pano{v:04d}_rgb.png")),
            cv2.imread(str(pred / f"panorama_{v:04d}.png")),
            cv2.imread(str(data / "output" / f"panorama_{v:04d}.png")),
            cv2.imread(str(pred / f"panorama_{v:04d}_depth_color.png")),
        ]
        missing = [i for i, t in enumerate(tiles) if t is None]
        if missing:
            raise SystemExit(
                f"{demo}: view {v} lacks pictures {missing}; run `panowan demo --out {demo}` first"
            )
        gap = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
        rows.append(np.concatenate([x for t in tiles for x in (t, gap)][:-1], axis=1))
    sep = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    figure = np.concatenate([x for r in rows for x in (r, sep)][:-1], axis=0)
    figure = cv2.resize(figure, None, fx=args.scale, fy=args.scale, interpolation=cv2.INTER_NEAREST)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, figure)


if __name__ == "__main__":
    main()
