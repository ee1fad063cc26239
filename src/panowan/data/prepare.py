"""Write the conditioning inputs of every room: view 0 reprojected into every view.

For each room and each view X (X = 0 included) this writes, atomically,
`input/pano0000_to_panoXXXX_rgb.png` (uint8 RGB, unknown pixels 0), `..._depth_range.npy` (float32
radial range in metres, unknown 0) and `..._mask.png` (255 = known, 0 = unknown), from view 0's
`input/panorama_0000.png`, `input/panorama_0000_depth.npy` and the pose JSONs, via
`panowan.geometry.reproject.reproject_erp`. View 0's files are its panorama and depth unchanged, with a
mask of its valid depth. A room whose files all exist is skipped unless `overwrite`.

Stopping: with a `panowan.utils.signals.StopRequest`, `prepare_rooms` stops taking rooms once it is
requested; rooms already started (one per worker) are finished, so every room is either complete or not
begun, and a rerun prepares only the missing ones. The workers ignore SIGTERM / SIGINT (the parent decides).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from panowan.data.io import read_depth, read_rgb
from panowan.data.layout import RoomError, RoomPaths, discover_views, scan_rooms
from panowan.data.room_checks import check_full_depth
from panowan.geometry.pose import PoseFormat, load_pose, stack_poses
from panowan.utils.signals import StopRequest

log = logging.getLogger(__name__)


@dataclass
class PrepareSummary:
    """Counts of one `prepare_rooms` run; `failed` lists (room path, reason)."""

    prepared: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    stopped_by: str | None = None  # "SIGTERM" / "SIGINT": stopped early; the rest of the rooms are untouched
    total: int = 0  # rooms found under the data root

    @property
    def remaining(self) -> int:
        """Rooms not reported (not begun, or finished by a worker after the stop request)."""
        return self.total - len(self.prepared) - len(self.skipped) - len(self.failed)


def _outputs(paths: RoomPaths, views: list[int]) -> list[Path]:
    return [f for v in views for f in (paths.cond_rgb(v), paths.cond_depth(v), paths.cond_mask(v))]


def is_prepared(room: str | os.PathLike) -> bool:
    """True if every prepared file of every view exists (cheap; contents are not checked)."""
    paths = RoomPaths(Path(room))
    try:
        views = discover_views(paths.root)
    except RoomError:
        return False
    return all(f.is_file() for f in _outputs(paths, views))


def _write_view(
    paths: RoomPaths, view: int, rgb_HW3: np.ndarray, range_HW: np.ndarray, known_HW: np.ndarray
) -> None:
    from panowan.utils.atomic import atomic_save_npy, atomic_write_image

    atomic_write_image(paths.cond_rgb(view), rgb_HW3)
    atomic_save_npy(paths.cond_depth(view), range_HW.astype(np.float32))
    atomic_write_image(paths.cond_mask(view), known_HW.astype(np.uint8) * 255)


def prepare_room(
    room: str | os.PathLike, *, overwrite: bool = False, pose_format: PoseFormat | None = None
) -> bool:
    """Prepare one room; returns False if it was already complete and skipped. Raises RoomError."""
    import torch

    from panowan.geometry.reproject import reproject_erp

    paths = RoomPaths(Path(room))
    views = discover_views(paths.root)
    if not overwrite and all(f.is_file() for f in _outputs(paths, views)):
        return False
    rgb = read_rgb(paths.ref_rgb, room=paths.root)
    height, width = rgb.shape[:2]
    if width != 2 * height:
        raise RoomError(paths.root, paths.ref_rgb, f"panorama is {height}x{width} (HxW), not 2:1")
    depth = read_depth(paths.ref_depth, (height, width), room=paths.root)
    # The dataset's rule for view 0 (room_checks.check_full_depth): NaN / inf / negative refused, 0 a hole;
    # a room that prepared fine must not fail later when read.
    hole = ~check_full_depth(depth, paths, paths.ref_depth)
    if hole.all():
        raise RoomError(paths.root, paths.ref_depth, "depth has no valid pixel")
    poses = []
    for v in views:
        try:
            poses.append(load_pose(paths.pose(v), pose_format or PoseFormat()))
        except ValueError as e:
            raise RoomError(paths.root, paths.pose(v), str(e).removeprefix(f"{paths.pose(v)}: ")) from None
    clean = np.where(hole, 0.0, depth).astype(np.float32)
    _write_view(paths, 0, rgb, clean, ~hole)  # view 0 is known as it is
    others = [i for i, v in enumerate(views) if v != 0]
    if others:
        image_CHW = (
            torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
        )  # uint8: rounded back by reproject_erp
        dst = stack_poses([poses[i] for i in others])
        out = reproject_erp(image_CHW, torch.from_numpy(clean), poses[views.index(0)], dst)
        for k, i in enumerate(others):
            valid = out.valid[k].numpy()
            rgb_k = out.image[k].permute(1, 2, 0).numpy() * valid[..., None]
            _write_view(
                paths, views[i], rgb_k.astype(np.uint8), np.where(valid, out.range[k].numpy(), 0.0), valid
            )
    return True


def _prepare_job(job: tuple[str, bool, PoseFormat, int | None]) -> tuple[str, str, str]:
    """Worker: (room, 'prepared' | 'skipped' | 'failed', reason); `threads` None keeps the caller's setting."""
    room, overwrite, pose_format, threads = job
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        done = prepare_room(room, overwrite=overwrite, pose_format=pose_format)
    except (ValueError, OSError) as e:  # RoomError and unreadable files: report, count, go on
        return room, "failed", str(e)
    except Exception as e:  # an internal error on one room must not hide the others: report it loudly
        log.exception("internal error while preparing %s", room)
        return room, "failed", f"internal error {type(e).__name__}: {e}"
    return room, "prepared" if done else "skipped", ""


def _ignore_stop_signals() -> None:
    """Pool initialiser: a worker finishes its room whatever the terminal sends; the parent stops the pool."""
    import signal

    from panowan.utils.signals import DEFAULT_SIGNALS

    for s in DEFAULT_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def prepare_rooms(data_root: str | os.PathLike, *, overwrite: bool = False, workers: int = 1,
                  pose_format: PoseFormat | None = None, progress: bool = True,
                  stop: StopRequest | None = None) -> PrepareSummary:  # fmt: skip
    """Prepare every room under `data_root/{area}/{room}` in a process pool of `workers`; with `stop`, stop
    taking rooms once it is requested (module docstring; `PrepareSummary.stopped_by` tells)."""
    import torch

    rooms = scan_rooms(data_root)
    pool = None
    if workers > 1 and len(rooms) > 1:
        quiet = {} if stop is None else {"initializer": _ignore_stop_signals}
        pool = ProcessPoolExecutor(max_workers=workers, **quiet)
    # The workers share this process's thread budget (torch's, which honours OMP_NUM_THREADS), not the
    # machine's: spinning OpenMP threads oversubscribed 4x made four recipes preparing side by side on 64
    # cores take 480 s for 256 rooms of 64x128 instead of seconds.
    threads = max(1, torch.get_num_threads() // workers) if pool else None
    jobs = [(str(r), overwrite, pose_format or PoseFormat(), threads) for r in rooms]
    summary = PrepareSummary(total=len(jobs))
    results = pool.map(_prepare_job, jobs) if pool else map(_prepare_job, jobs)  # lazy without a pool
    if progress:
        from tqdm import tqdm

        results = tqdm(results, total=len(jobs), desc="prepare", unit="room")
    try:
        for room, status, reason in results:
            if status == "failed":
                log.error("cannot prepare %s: %s", room, reason)
                summary.failed.append((Path(room), reason))
            else:
                (summary.prepared if status == "prepared" else summary.skipped).append(Path(room))
            if stop is not None and stop.requested:
                summary.stopped_by = stop.signal_name
                break
    finally:
        if pool:
            # Rooms not yet started are dropped; started ones finish (their workers ignore the signal).
            pool.shutdown(cancel_futures=True)
    return summary
