"""Unseen fractions: how much of each view the completion model has to invent.

The unseen fraction of view i is the fraction of its pixels with no valid reprojection from view 0,
i.e. the hole of the mask `panowan prepare` writes (`panowan.data.prepare.prepare_room`): view 0's
range panorama and the poses are read back from the room folder exactly as prepare reads them and
reprojected with `panowan.geometry.reproject.reproject_erp` (a one-channel dummy image: validity does
not depend on colour), at the rendered resolution, on the CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def room_unseen_fractions(room: str | os.PathLike) -> list[float]:
    """Unseen fraction of every view of a room in the seed layout (view 0's own holes for view 0)."""
    import torch

    from panowan.data.io import read_depth
    from panowan.data.layout import RoomPaths, discover_views
    from panowan.geometry.pose import load_pose, stack_poses
    from panowan.geometry.reproject import reproject_erp

    paths = RoomPaths(Path(room))
    views = discover_views(paths.root)
    depth = read_depth(paths.ref_depth, room=paths.root)
    hole = ~np.isfinite(depth) | (depth <= 0)
    clean = torch.from_numpy(np.where(hole, 0.0, depth).astype(np.float32))
    fractions = {0: float(hole.mean())}
    poses = {v: load_pose(paths.pose(v)) for v in views}
    others = [v for v in views if v != 0]
    if others:
        image = torch.zeros((1, *clean.shape), dtype=torch.float32)
        out = reproject_erp(image, clean, poses[0], stack_poses([poses[v] for v in others]))
        for k, v in enumerate(others):
            fractions[v] = 1.0 - float(out.valid[k].double().mean())
    return [fractions[v] for v in views]


def summarise(values: list[float]) -> dict:
    """{"mean", "min", "max", "count"} of `values` (None statistics when empty)."""
    if not values:
        return {"count": 0, "mean": None, "min": None, "max": None}
    return {"count": len(values), "mean": float(np.mean(values)), "min": float(np.min(values)),
            "max": float(np.max(values))}  # fmt: skip


def set_stats(out: Path, done: list[tuple[str, str, list[float]]], *, difficulty: str, seed: int,
              size: tuple[int, int]) -> dict:  # fmt: skip
    """The `synth_stats.json` record of a set: per room and view, and over all target views (views >= 1)."""
    rooms = []
    for path, layout, unseen in done:
        rooms.append({"room": Path(path).relative_to(out).as_posix(), "layout": layout, "unseen": unseen,
                      "target_mean": summarise(unseen[1:])["mean"]})  # fmt: skip
    targets = [f for r in rooms for f in r["unseen"][1:]]
    return {
        "difficulty": difficulty,
        "seed": seed,
        "height": size[0],
        "width": size[1],
        "unseen": summarise(targets),
        "unseen_definition": "fraction of a view's pixels with no valid reprojection from view 0 "
        "(the hole mask of panowan prepare); set statistics over target views 1..N-1",
        "rooms": rooms,
    }


def format_summary(stats: dict) -> str:
    """One line for the CLI."""
    u = stats["unseen"]
    if not u["count"]:
        return f"{stats['difficulty']} rooms: no target views, nothing unseen"
    return (
        f"{stats['difficulty']} rooms, seed {stats['seed']}: unseen from view 0 mean {100 * u['mean']:.1f}%, "
        f"min {100 * u['min']:.1f}%, max {100 * u['max']:.1f}% over {u['count']} target views of "
        f"{len(stats['rooms'])} rooms"
    )
