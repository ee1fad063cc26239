"""Writing synthetic rooms in the seed layout: seeds, folders, the process pool."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from panowan.data.layout import RoomPaths
from panowan.data.synth.easy import make_easy_scene as make_scene
from panowan.data.synth.raycast import render_view
from panowan.data.synth.scene import Scene
from panowan.geometry.pose import pose_to_json


def room_seed(seed: int, index: int) -> int:
    """The scene seed of room `index` of a dataset generated with `seed` (independent streams)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def write_room(scene: Scene, room_dir: str | os.PathLike, height: int, width: int) -> Path:
    """Render every pose of `scene` and write the room in the seed layout (all writes atomic)."""
    from panowan.utils.atomic import atomic_save_npy, atomic_write_image, atomic_write_json, atomic_write_text

    paths = RoomPaths(Path(room_dir))
    for view, pose in enumerate(scene.poses):
        rgb, rng_hw = render_view(scene, pose, height, width)
        atomic_write_image(paths.gt_rgb(view), rgb)
        atomic_save_npy(paths.gt_depth(view), rng_hw)
        atomic_write_json(paths.pose(view), pose_to_json(pose))
        if view == 0:
            atomic_write_image(paths.ref_rgb, rgb)
            atomic_save_npy(paths.ref_depth, rng_hw)
    atomic_write_text(paths.description, scene.description + "\n")
    return paths.root


def room_dir(out: str | os.PathLike, index: int) -> Path:
    """out/area_AAA/room_RRRR, four rooms per area."""
    return Path(out) / f"area_{index // 4:03d}" / f"room_{index:04d}"


def _synth_one(job: tuple[str, int, int, int, int, int]) -> str:
    out, index, seed, views, height, width = job
    import torch

    torch.set_num_threads(1)
    scene = make_scene(room_seed(seed, index), views)
    return str(write_room(scene, room_dir(out, index), height, width))


def synth_rooms(out: str | os.PathLike, rooms: int, views: int, height: int, width: int, seed: int = 0,
                workers: int = 1, progress: bool = False) -> list[Path]:  # fmt: skip
    """Generate `rooms` rooms of `views` views each under `out`; returns the room folders."""
    from panowan.geometry.erp import check_erp_size

    check_erp_size(height, width)
    if rooms < 1 or views < 1:
        raise ValueError(f"need at least one room and one view, got rooms={rooms}, views={views}")
    jobs = [(str(out), k, seed, views, height, width) for k in range(rooms)]
    if workers <= 1:
        results = map(_synth_one, jobs)
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_synth_one, jobs)
    if progress:
        from tqdm import tqdm

        results = tqdm(results, total=rooms, desc="synth", unit="room")
    try:
        return [Path(r) for r in results]
    finally:
        if workers > 1:
            pool.shutdown()
