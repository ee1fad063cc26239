"""Writing synthetic rooms in the seed layout: difficulty, seeds, folders, the process pool, set stats."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from panowan.data.layout import RoomPaths
from panowan.data.synth.easy import make_easy_scene
from panowan.data.synth.hard import make_hard_scene
from panowan.data.synth.raycast import render_view
from panowan.data.synth.scene import Scene
from panowan.geometry.pose import Pose, pose_to_json

DIFFICULTIES = ("easy", "hard")
STATS_FILE = "synth_stats.json"
"""Written under the data root by `synth_rooms(..., stats=True)`."""


def make_scene(seed: int, num_views: int = 9, difficulty: str = "easy") -> Scene:
    """A random room of `difficulty` (see the package docstring) with `num_views` poses, deterministic in
    `seed`. The library default is "easy" (the rooms the tests and fixtures were written against)."""
    if difficulty == "easy":
        return make_easy_scene(seed, num_views)
    if difficulty == "hard":
        return make_hard_scene(seed, num_views)
    raise ValueError(f"unknown synth difficulty {difficulty!r}; expected one of {DIFFICULTIES}")


def room_seed(seed: int, index: int) -> int:
    """The scene seed of room `index` of a dataset generated with `seed` (independent streams)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def write_view(paths: RoomPaths, view: int, rgb_HW3: np.ndarray, range_HW: np.ndarray, pose: Pose) -> None:
    """The seed-layout files of one rendered view (ground truth, pose; view 0 also the input panorama and
    depth), each written atomically. Shared by `panowan synth` and `panowan render`."""
    from panowan.utils.atomic import atomic_save_npy, atomic_write_image, atomic_write_json

    atomic_write_image(paths.gt_rgb(view), rgb_HW3)
    atomic_save_npy(paths.gt_depth(view), range_HW)
    atomic_write_json(paths.pose(view), pose_to_json(pose))
    if view == 0:
        atomic_write_image(paths.ref_rgb, rgb_HW3)
        atomic_save_npy(paths.ref_depth, range_HW)


def write_room(scene: Scene, room_dir: str | os.PathLike, height: int, width: int) -> Path:
    """Render every pose of `scene` and write the room in the seed layout (all writes atomic)."""
    from panowan.utils.atomic import atomic_write_text

    paths = RoomPaths(Path(room_dir))
    for view, pose in enumerate(scene.poses):
        rgb, rng_hw = render_view(scene, pose, height, width)
        write_view(paths, view, rgb, rng_hw, pose)
    atomic_write_text(paths.description, scene.description + "\n")
    return paths.root


def room_dir(out: str | os.PathLike, index: int) -> Path:
    """out/area_AAA/room_RRRR, four rooms per area."""
    return Path(out) / f"area_{index // 4:03d}" / f"room_{index:04d}"


class SynthRooms(list):
    """The room folders written by `synth_rooms` (a list of Paths), with `stats`: the dict written to
    `synth_stats.json` when it was asked for, else None."""

    stats: dict | None = None


def _synth_one(job: tuple[str, int, int, int, int, int, str, bool]) -> tuple[str, str, list[float] | None]:
    out, index, seed, views, height, width, difficulty, stats = job
    import torch

    from panowan.data.synth.stats import room_unseen_fractions

    torch.set_num_threads(1)
    scene = make_scene(room_seed(seed, index), views, difficulty)
    path = write_room(scene, room_dir(out, index), height, width)
    return str(path), scene.layout, room_unseen_fractions(path) if stats else None


def synth_rooms(out: str | os.PathLike, rooms: int, views: int, height: int, width: int, seed: int = 0,
                workers: int = 1, progress: bool = False, difficulty: str = "easy",
                stats: bool = False) -> SynthRooms:  # fmt: skip
    """Generate `rooms` rooms of `views` views each under `out`; returns the room folders.

    `difficulty` is "easy" (the library default, which keeps the rooms the tests were written
    against) or "hard" (the `panowan synth` default). With `stats`, every target view's unseen
    fraction (its pixels with no valid reprojection from view 0: the hole mask `panowan prepare`
    writes) is measured and `out/synth_stats.json` written (per room and view, set mean / min / max,
    difficulty, seed), also returned as `.stats`. Off by default so that a data root holds the seed
    layout only.
    """
    from panowan.geometry.erp import check_erp_size

    check_erp_size(height, width)
    if rooms < 1 or views < 1:
        raise ValueError(f"need at least one room and one view, got rooms={rooms}, views={views}")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"unknown synth difficulty {difficulty!r}; expected one of {DIFFICULTIES}")
    jobs = [(str(out), k, seed, views, height, width, difficulty, stats) for k in range(rooms)]
    if workers <= 1:
        results = map(_synth_one, jobs)
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_synth_one, jobs)
    if progress:
        from tqdm import tqdm

        results = tqdm(results, total=rooms, desc="synth", unit="room")
    try:
        done = list(results)
    finally:
        if workers > 1:
            pool.shutdown()
    written = SynthRooms(Path(r) for r, _, _ in done)
    if stats:
        from panowan.data.synth.stats import set_stats
        from panowan.utils.atomic import atomic_write_json

        written.stats = set_stats(Path(out), done, difficulty=difficulty, seed=seed, size=(height, width))
        atomic_write_json(Path(out) / STATS_FILE, written.stats)
    return written
