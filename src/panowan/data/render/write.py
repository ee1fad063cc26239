"""Rendering mesh rooms into the seed layout: room names, seeds, skipping complete rooms, the process pool.

Each mesh becomes one room `DATA_ROOT/{area}/{room}` written exactly as `panowan synth` writes its rooms
(`panowan.data.synth.write.write_view`: output/ ground truth of every view, input/ view 0, pose JSONs,
description.txt; every file atomic). A room whose files are all there (same view count and size) is
skipped on a rerun; a partial or different one is rendered again, its stale view and prepared files
removed first. `DATA_ROOT/render_stats.json` records per room the mesh, up axis, seed, escaped rays per
view and why candidate viewpoints were refused.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from panowan.data.layout import RoomPaths
from panowan.data.render.mesh_io import MESH_SUFFIXES, default_up_axis, load_mesh, up_vector
from panowan.data.render.viewpoints import ViewpointSettings, sample_views

log = logging.getLogger(__name__)
STATS_FILE = "render_stats.json"
_VIEW_FILE = re.compile(r"^(panorama_\d{4}(_depth)?\.(png|npy)|pose_\d{4}\.json|pano0000_to_pano\d{4}_.*)$")


@dataclass(frozen=True)
class RenderSettings:
    """Everything but the mesh that decides a rendered room (see `panowan render --help`)."""

    views: int = 9
    height: int = 256
    width: int = 512
    seed: int = 0
    up_axis: str | None = None
    """None: the file type's default (`mesh_io.default_up_axis`)."""
    supersample: int = 2
    description: str | None = None
    viewpoints: ViewpointSettings = field(default_factory=ViewpointSettings)
    backend: str = "auto"

    def validate(self) -> None:
        from panowan.geometry.erp import check_erp_size

        check_erp_size(self.height, self.width)
        if self.views < 1:
            raise ValueError(f"need at least one view, got --views {self.views}")
        if not 1 <= self.supersample <= 8:
            raise ValueError(f"--supersample must be 1..8, got {self.supersample}")
        if self.up_axis is not None:
            up_vector(self.up_axis)
        self.viewpoints.validate()


def mesh_stem(path: Path) -> str:
    """File name without its extensions ('kfPV7w3FaU5.basis.glb' -> 'kfPV7w3FaU5')."""
    return path.name.split(".")[0] or path.stem


def room_id_of(mesh: Path, area: str | None = None) -> tuple[str, str]:
    """(area, room) of a mesh: room = the file's stem; area = `area`, else the name of the folder holding it."""
    return area or mesh.resolve().parent.name or "area", mesh_stem(mesh)


def find_meshes(
    folder: str | os.PathLike, pattern: str | None = None, exclude: str | None = None
) -> list[Path]:
    """Mesh files under `folder` (recursive, sorted): those whose name matches `pattern` (default: the supported
    types), less those matching `exclude`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: --meshes is not a directory")
    found = [p for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    if pattern:
        found = [p for p in found if fnmatch.fnmatch(p.name, pattern)]
    else:
        found = [p for p in found if p.suffix.lower() in MESH_SUFFIXES]
    return [p for p in found if not (exclude and fnmatch.fnmatch(p.name, exclude))]


def room_seed(seed: int, room_id: str) -> int:
    """Seed of one room: from --seed and the room's name, so adding meshes never changes another room."""
    return int(np.random.SeedSequence([seed, zlib.crc32(room_id.encode())]).generate_state(1)[0])


def room_complete(room_dir: str | os.PathLike, settings: RenderSettings) -> bool:
    """Every file of `settings.views` views (and no more) is there, at the requested size."""
    from panowan.data.io import png_header
    from panowan.data.layout import discover_views

    paths = RoomPaths(Path(room_dir))
    try:
        views = discover_views(paths.root)
        size = png_header(paths.gt_rgb(0), paths.root)
    except ValueError:
        return False
    files = [paths.ref_rgb, paths.ref_depth, paths.description]
    files += [f for v in views for f in (paths.gt_rgb(v), paths.gt_depth(v), paths.pose(v))]
    wanted = (settings.height, settings.width)
    return views == list(range(settings.views)) and tuple(size) == wanted and all(f.is_file() for f in files)


def _clear_stale(paths: RoomPaths) -> None:
    """Remove view and prepared files of an earlier (partial or different) render of this room."""
    for folder in (paths.input_dir, paths.output_dir):
        if folder.is_dir():
            for f in folder.iterdir():
                if _VIEW_FILE.match(f.name):
                    f.unlink()


def describe(mesh: Path) -> str:
    """The default prompt: the mesh's file name as words."""
    return re.sub(r"[_\-.]+", " ", mesh_stem(mesh)).strip() or "a room"


def render_room(mesh_path: str | os.PathLike, room_dir: str | os.PathLike, settings: RenderSettings,
                on_view=None) -> dict:  # fmt: skip
    """Render one mesh into `room_dir`; returns its `render_stats.json` record. Raises ValueError."""
    from panowan.data.render.raycast import Caster
    from panowan.data.synth.write import write_view
    from panowan.utils.atomic import atomic_write_text

    start = time.monotonic()
    mesh_path, paths = Path(mesh_path), RoomPaths(Path(room_dir))
    mesh = load_mesh(mesh_path)
    up_axis = settings.up_axis or default_up_axis(mesh_path)
    caster = Caster(mesh, settings.backend)
    seed = room_seed(settings.seed, paths.room_id)
    views, rejected = sample_views(caster, up_vector(up_axis), settings.viewpoints, settings.views,
                                   np.random.default_rng(seed), (settings.height, settings.width),
                                   settings.supersample, on_view)  # fmt: skip
    _clear_stale(paths)
    for k, (pose, view) in enumerate(views):
        write_view(paths, k, view.rgb, view.range, pose)
    atomic_write_text(paths.description, (settings.description or describe(mesh_path)) + "\n")
    return {
        "mesh": str(mesh_path),
        "up_axis": up_axis,
        "seed": seed,
        "faces": len(mesh.faces_F3),
        "grey_parts": mesh.grey_parts,
        "escaped": [v.escaped for _, v in views],
        "escaped_fraction": [round(v.escaped_fraction, 6) for _, v in views],
        "rejected_candidates": dict(rejected),
        "seconds": round(time.monotonic() - start, 3),
    }


@dataclass
class RenderSummary:
    """What `render_rooms` did: rooms written, skipped as complete, failed (mesh, reason); `records` by room id."""

    rendered: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    records: dict[str, dict] = field(default_factory=dict)


def _worker_init() -> None:
    """Pool workers: one torch thread each (the pool is the parallelism; 2 shared cores must not spin 4)."""
    import torch

    torch.set_num_threads(1)


def _render_job(job: tuple[str, str, dict], on_view=None) -> tuple[str, str, dict | str]:
    """One room: (room dir, 'rendered' | 'failed', record or reason)."""
    import warnings

    mesh, room, settings = job
    settings = RenderSettings(**{**settings, "viewpoints": ViewpointSettings(**settings["viewpoints"])})
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            record = render_room(mesh, room, settings, on_view)
        for w in caught:
            log.warning("%s", w.message)
        record["warnings"] = [str(w.message) for w in caught]
    except (ValueError, OSError) as e:  # a bad mesh is reported and counted; the others go on
        return room, "failed", str(e)
    return room, "rendered", record


def plan_rooms(
    out: str | os.PathLike, meshes: list[Path], area: str | None = None
) -> list[tuple[Path, Path]]:
    """(mesh, room folder) of every mesh; two meshes that would share a room are refused."""
    plan, seen = [], {}
    for mesh in meshes:
        a, r = room_id_of(mesh, area)
        room = Path(out) / a / r
        if room in seen:
            raise ValueError(
                f"{mesh} and {seen[room]} would both be written to {room}; rename one or pass --area"
            )
        seen[room] = mesh
        plan.append((mesh, room))
    return plan


def render_rooms(out: str | os.PathLike, plan: list[tuple[Path, Path]], settings: RenderSettings, *,
                 workers: int = 1, overwrite: bool = False, progress: bool = True) -> RenderSummary:  # fmt: skip
    """Render every (mesh, room) of `plan` (rooms in a pool of `workers`), skip complete rooms unless
    `overwrite`, merge the records into `out/render_stats.json`."""
    import json

    from panowan.utils.atomic import atomic_write_json

    settings.validate()
    summary = RenderSummary()
    todo = []
    for mesh, room in plan:
        if not overwrite and room_complete(room, settings):
            summary.skipped.append(room)
        else:
            todo.append((str(mesh), str(room), asdict(settings)))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo) * settings.views, desc="render", unit="view")
    pool = None
    if workers > 1 and len(todo) > 1:
        pool = ProcessPoolExecutor(max_workers=workers, initializer=_worker_init)
        results = pool.map(_render_job, todo)
    else:  # in this process: the bar moves per view
        tick = (lambda: bar.update(1)) if bar is not None else None
        results = (_render_job(job, tick) for job in todo)
    try:
        for done, (room, status, result) in enumerate(results, 1):
            if status == "failed":
                log.error("cannot render %s: %s", room, result)
                summary.failed.append((Path(room), result))
            else:
                summary.rendered.append(Path(room))
                summary.records[RoomPaths(Path(room)).room_id] = result
            if bar is not None:  # a room is all its views, whatever was drawn and redrawn on the way
                bar.n = done * settings.views
                bar.refresh()
    finally:
        if pool:
            pool.shutdown()
        if bar is not None:
            bar.close()
    if summary.records:
        stats_path = Path(out) / STATS_FILE
        try:
            stats = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.is_file() else {}
        except json.JSONDecodeError:
            stats = {}
        stats.setdefault("rooms", {}).update(summary.records)
        atomic_write_json(stats_path, stats)
    return summary
