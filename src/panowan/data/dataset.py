"""The room dataset: validated rooms -> `Sample`s of selected views in model order.

This module holds `RoomDataset` (sample assembly and its in-memory caches), frame selection and view order,
and the (masked) resizing of views. The `Sample` contract (shapes and ranges of every field, `DepthNorm`,
`Batch`, `collate`) is in `panowan.data.sample`; room validation and the depth / mask value checks
(`validate_room`, `RoomInfo`, `check_full_depth`, `known_mask`) are in `panowan.data.room_checks`. Every
name that lived here is still importable from here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from panowan.data.io import read_depth, read_mask, read_rgb
from panowan.data.layout import RoomError, discover_views, scan_data_root
from panowan.data.room_checks import (
    ZERO_DEPTH_TOLERANCE,
    RoomInfo,
    _load_pose,
    _same_size,
    check_full_depth,
    known_mask,
    validate_room,
)
from panowan.data.sample import LOG_MARGIN, MIN_HALF_RANGE, Batch, DepthNorm, Sample, _param, collate
from panowan.eval.baselines import SHELL_FILLS
from panowan.geometry.pose import Pose, PoseFormat, stack_poses
from panowan.models.presets import CONDITION_FILLS

__all__ = [
    "LOG_MARGIN",
    "MIN_HALF_RANGE",
    "MIN_VIEWS",
    "ZERO_DEPTH_TOLERANCE",
    "Batch",
    "DepthNorm",
    "RoomDataset",
    "RoomInfo",
    "Sample",
    "_load_pose",
    "_normalised",
    "_param",
    "_plucker",
    "_same_size",
    "_to_unit",
    "check_full_depth",
    "collate",
    "frame_count",
    "known_mask",
    "path_order",
    "resize_masked",
    "resize_rgb",
    "select_frames",
    "validate_room",
]

log = logging.getLogger(__name__)

MIN_VIEWS = 5


# ---------------------------------------------------------------------------------- frame selection
def frame_count(num_views: int, num_frames: int) -> int:
    """The largest 4k + 1 not above `num_frames` nor `num_views`."""
    return (min(num_views, num_frames) - 1) // 4 * 4 + 1


def select_frames(num_views: int, num_frames: int, rng: np.random.Generator) -> list[int]:
    """Positions (into the room's sorted views) of the selected frames: first and last kept, middle sampled."""
    n = frame_count(num_views, num_frames)
    assert num_views >= MIN_VIEWS and n >= MIN_VIEWS
    if n == num_views:
        return list(range(num_views))
    middle = np.sort(rng.choice(np.arange(1, num_views - 1), size=n - 2, replace=False))
    return [0, *middle.tolist(), num_views - 1]


def path_order(positions_F3: np.ndarray) -> list[int]:
    """A short path from item 0 through all items: greedy nearest neighbour (ties -> lower index)."""
    remaining = list(range(1, len(positions_F3)))
    order = [0]
    while remaining:
        dist = np.linalg.norm(positions_F3[remaining] - positions_F3[order[-1]], axis=1)
        order.append(remaining.pop(int(np.argmin(dist))))
    return order


# ------------------------------------------------------------------------------------------ resizing
def resize_rgb(rgb_HW3: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8/float RGB -> float32 `H x W x 3` at the new size (area interpolation)."""
    import cv2

    rgb = rgb_HW3.astype(np.float32)
    if rgb.shape[:2] == (height, width):
        return rgb
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def resize_masked(
    values_HWC: np.ndarray, valid_HW: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Masked area resize: each output pixel averages only valid input samples; invalid if none.

    Returns (`values_HWC` float32, 0 where invalid; `valid_HW` bool). Hole values never mix into valid ones.
    """
    import cv2

    values = np.where(valid_HW[..., None], values_HWC, 0).astype(np.float32)
    if valid_HW.shape == (height, width):
        return values, valid_HW.copy()
    weight = cv2.resize(valid_HW.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    summed = cv2.resize(values, (width, height), interpolation=cv2.INTER_AREA).reshape(height, width, -1)
    valid = weight > 1e-6
    out = np.where(valid[..., None], summed / np.maximum(weight, 1e-6)[..., None], 0).astype(np.float32)
    return out, valid


# ------------------------------------------------------------------------------------------ dataset
class RoomDataset(torch.utils.data.Dataset):
    """Rooms under `data_root/{area}/{room}` (NOTES.md layout, prepared) as `Sample`s.

    height: None keeps the files' size, else a multiple of 16 (width = 2 * height).
    view_order: "index" (ascending view number) or "path" (greedy nearest-neighbour path from view 0).
    skip_bad_rooms: skip rooms that fail validation (logged, counted in `summary`) instead of raising.
    Frame sampling is seeded by (seed, room index, epoch); call `set_epoch` every epoch.
    mask_polarity: "known" (1 = known, the layout's convention) or "hole" (1 = hole).
    cond_fill: what `cond_rgb` holds at unknown pixels: "zero", or "telea" / "ns" / "harmonic" / "depth_steered" /
    "room_shell" / "shell_gate" (the fill of the resized reprojection, as the baseline of that name; for models
    with that `rgb_condition_fill`; "depth_steered" reads the view's reprojected depth too, "room_shell" and
    "shell_gate" also view 0 and the poses).
    cond_depth_fill: the same for `cond_depth` (the normalised depth's holes; `depth_condition_fill`).
    cache_files: keep every decoded file, and every view's arrays and Plücker map, in memory after their
    first use (for small panoramas, whose loading otherwise dominates a GPU step; memory grows to the
    processed data set, about 30 bytes a pixel a view).
    rooms: only these room folders of `data_root` (paths; the others are listed but never validated, so a
    large or partly broken data root costs nothing); None: every room.
    """

    def __init__(
        self,
        data_root: str | os.PathLike,
        *,
        num_frames: int = 17,
        height: int | None = None,
        view_order: Literal["index", "path"] = "index",
        skip_bad_rooms: bool = False,
        seed: int = 0,
        pose_format: PoseFormat | None = None,
        mask_polarity: Literal["known", "hole"] = "known",
        cache_files: bool = False,
        cond_fill: Literal["zero", "telea", "ns"] = "zero",
        cond_depth_fill: Literal["zero", "telea", "ns"] = "zero",
        rooms: Sequence[str | os.PathLike] | None = None,
    ) -> None:
        if num_frames < MIN_VIEWS or (num_frames - 1) % 4:
            raise ValueError(
                f"num_frames must be 4k + 1 and >= {MIN_VIEWS} (5, 9, 13, 17, ...), got {num_frames}"
            )
        if height is not None and (height <= 0 or height % 16):
            raise ValueError(
                f"height must be a positive multiple of 16 (or None to keep the size), got {height}"
            )
        if view_order not in ("index", "path"):
            raise ValueError(f"view_order must be 'index' or 'path', not {view_order!r}")
        if mask_polarity not in ("known", "hole"):
            raise ValueError(f"mask_polarity must be 'known' or 'hole', not {mask_polarity!r}")
        for name, fill in (("cond_fill", cond_fill), ("cond_depth_fill", cond_depth_fill)):
            if fill not in CONDITION_FILLS:
                raise ValueError(f"{name} must be one of {CONDITION_FILLS}, not {fill!r}")
        self.cond_fill, self.cond_depth_fill = cond_fill, cond_depth_fill
        self.data_root, self.num_frames, self.height = Path(data_root), num_frames, height
        self.view_order, self.seed, self.mask_polarity, self.epoch = view_order, seed, mask_polarity, 0
        # path -> decoded array (read-only, so a consumer that wrote into one would fail loudly)
        self.cache_files = cache_files
        self._files: dict[Path, np.ndarray] = {}  # the caches stay empty unless cache_files
        self._pluckers: dict[tuple[int, int, int, int, int], torch.Tensor] = {}
        self._frames: dict[tuple[int, int, int], dict[str, np.ndarray]] = {}
        self._shells: dict[Path, Any] = {}  # room -> its `data.room_shell.RoomShell` (`SHELL_FILLS`)
        self.rooms: list[RoomInfo] = []
        scan = scan_data_root(data_root)  # empty folders and second paths to a room: counted, not rooms
        found = scan.rooms if rooms is None else _only(scan.rooms, rooms, data_root)
        self.summary: dict = {
            "rooms_found": len(found),
            "rooms_used": 0,
            "bad_rooms": 0,
            "too_few_views": 0,
            "empty_folders": len(scan.empty),
            "aliased_rooms": len(scan.aliases),
            "bad": [],
        }
        for room in found:
            self._add_room(room, pose_format or PoseFormat(), skip_bad_rooms)
        self.summary["rooms_used"] = len(self.rooms)
        if not self.rooms:
            raise ValueError(f"{data_root}: no usable rooms ({self.summary})")

    def _add_room(self, room: Path, fmt: PoseFormat, skip_bad_rooms: bool) -> None:
        try:
            views = discover_views(room)
            if len(views) < MIN_VIEWS:
                log.info("dropping %s: %d views (< %d)", room, len(views), MIN_VIEWS)
                self.summary["too_few_views"] += 1
                return
            self.rooms.append(validate_room(room, fmt))
        except RoomError as e:
            if not skip_bad_rooms:
                raise
            log.warning("skipping bad room: %s", e)
            self.summary["bad_rooms"] += 1
            self.summary["bad"].append((str(room), str(e)))

    def set_epoch(self, epoch: int) -> None:
        """Re-seed frame sampling for a new epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rooms)

    def selected_views(self, index: int, epoch: int | None = None) -> list[int]:
        """Original view numbers of room `index` for `epoch` (default: the current one), in model order
        (view 0 first)."""
        info = self.rooms[index]
        rng = np.random.default_rng([self.seed, index, self.epoch if epoch is None else epoch])
        chosen = select_frames(len(info.views), self.num_frames, rng)
        if self.view_order == "path":
            positions = np.stack([info.poses[k].position.numpy() for k in chosen])
            chosen = [chosen[k] for k in path_order(positions)]
        return [info.views[k] for k in chosen]

    def __getitem__(self, index: int) -> Sample:
        return self.sample(index, self.epoch)

    def sample(self, index: int, epoch: int, views: Sequence[int] | None = None) -> Sample:
        """Room `index` with the views of `epoch`, or exactly `views` (original view numbers in model order,
        view 0 first: what the passes of `sample.multipass` complete); thread-safe: reads no mutable state but
        the caches."""
        info = self.rooms[index]
        paths, size = info.paths, info.size
        views = self.selected_views(index, epoch) if views is None else _checked_views(info, views)
        height = self.height or size[0]
        width = 2 * height
        ref_depth = self._read(read_depth, paths.ref_depth, size, paths.root)
        ref_valid = check_full_depth(ref_depth, paths, paths.ref_depth)
        if not ref_valid.any():
            raise RoomError(paths.root, paths.ref_depth, "view 0 depth has no valid pixel")
        norm = DepthNorm.from_depth(ref_depth)
        frames = [self._cached_frame(index, v, height, norm, ref_depth, ref_valid) for v in views]
        stacked = {k: torch.from_numpy(np.stack([f[k] for f in frames])) for k in frames[0]}
        return Sample(
            rgb=stacked["rgb"], depth=stacked["depth"], depth_valid=stacked["depth_valid"],
            cond_rgb=stacked["cond_rgb"], cond_depth=stacked["cond_depth"], cond_depth_m=stacked["cond_depth_m"],
            mask=stacked["mask"],
            plucker=torch.cat([self._view_plucker(index, views[0], v, height, width) for v in views]),
            prompt=info.prompt, room_id=paths.room_id, view_indices=list(views), depth_norm=norm,
        )  # fmt: skip

    def _memo(self, store: dict, key: Any, compute: Callable[[], Any]) -> Any:
        """`compute()`, kept in `store` under `key` when the dataset caches (`cache_files`). Arrays are
        made read-only first, so a consumer that wrote into a shared one would fail loudly."""
        if not self.cache_files:
            return compute()
        value = store.get(key)
        if value is None:  # two threads may both compute a value once: harmless, equal values
            value = compute()
            for array in value.values() if isinstance(value, dict) else [value]:
                if isinstance(array, np.ndarray):
                    array.setflags(write=False)
            store[key] = value
        return value

    def _read(
        self, reader: Callable[..., np.ndarray], path: Path, size: tuple[int, int], room: Path
    ) -> np.ndarray:
        """`reader(path, size, room)`, decoded once per path when caching."""
        return self._memo(self._files, path, lambda: reader(path, size, room))

    def _view_plucker(self, index: int, ref_view: int, view: int, height: int, width: int) -> torch.Tensor:
        """`1,6,H,W` Plücker map of `view` in `ref_view`'s frame. One view at a time, so a map does not depend on
        which other views a sample holds (and can be cached: it depends on two poses only)."""

        def compute() -> torch.Tensor:
            info = self.rooms[index]
            ref = info.poses[info.views.index(ref_view)]
            return _plucker(stack_poses([info.poses[info.views.index(view)]]).relative_to(ref), height, width)

        return self._memo(self._pluckers, (index, ref_view, view, height, width), compute)

    def _cached_frame(self, index: int, view: int, height: int, norm: DepthNorm, ref_depth: np.ndarray,
                      ref_valid: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
        """`_frame`, kept when caching: a view's arrays depend on the room, the view and the size only (the
        depth normalisation is the room's), never on the epoch's companions."""
        info = self.rooms[index]
        return self._memo(self._frames, (index, view, height),
                          lambda: self._frame(info, view, height, 2 * height, norm, ref_depth, ref_valid))  # fmt: skip

    def _frame(self, info: RoomInfo, view: int, height: int, width: int, norm: DepthNorm,
               ref_depth: np.ndarray, ref_valid: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
        """One view's arrays, channel-first float32 (depth_valid bool)."""
        paths, size, room = info.paths, info.size, info.paths.root
        gt_rgb = resize_rgb(self._read(read_rgb, paths.gt_rgb(view), size, room), height, width)
        gt_depth = self._read(read_depth, paths.gt_depth(view), size, room)
        gt_depth, gt_valid = resize_masked(
            gt_depth[..., None], check_full_depth(gt_depth, paths, paths.gt_depth(view)), height, width
        )
        if view == 0:
            cond_rgb = resize_rgb(self._read(read_rgb, paths.ref_rgb, size, room), height, width)
            cond_depth, depth_known = resize_masked(ref_depth[..., None], ref_valid, height, width)
            mask = np.ones((height, width), bool)
        else:
            depth = self._read(read_depth, paths.cond_depth(view), size, room)
            mask_file = (
                self._read(read_mask, paths.cond_mask(view), size, room) if info.has_mask.get(view) else None
            )
            known = known_mask(depth, mask_file, self.mask_polarity, paths, view)
            cond_rgb, mask = resize_masked(
                self._read(read_rgb, paths.cond_rgb(view), size, room), known, height, width
            )
            cond_depth, depth_known = resize_masked(depth[..., None], known, height, width)
        shell_fills, known_depth = {}, mask & depth_known  # method -> its fill, once per method a stream uses
        if known_depth.any() and not mask.all():
            for method in dict.fromkeys(
                f for f in (self.cond_fill, self.cond_depth_fill) if f in SHELL_FILLS
            ):
                shell_fills[method] = self._shell_fill(
                    info, view, cond_rgb, known_depth, cond_depth[..., 0], method
                )
        return {
            "rgb": _to_unit(gt_rgb),
            "depth": _normalised(gt_depth[..., 0], gt_valid, norm),
            "depth_valid": gt_valid[None],
            "cond_rgb": self._fill_holes(
                cond_rgb, mask, cond_depth[..., 0], depth_known, shell_fills.get(self.cond_fill)
            ),
            "cond_depth": self._depth_condition(
                cond_depth[..., 0], depth_known, norm, shell_fills.get(self.cond_depth_fill)
            ),
            "cond_depth_m": np.where(depth_known, cond_depth[..., 0], 0)[None].astype(np.float32),
            "mask": mask[None].astype(np.float32),
        }

    def _shell_fill(self, info: RoomInfo, view: int, rgb_HW3: np.ndarray, known_HW: np.ndarray,
                    range_HW: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """The "room_shell" or "shell_gate" fill (rgb uint8, range metres) of one resized view, as the baseline of
        that name; the room's shell is fitted once."""
        from panowan.data.room_shell import fit_room
        from panowan.eval.baselines import baseline_view

        if (shell := self._shells.get(info.paths.root)) is None:
            shell = self._shells[info.paths.root] = fit_room(info)
        rgb_u8 = np.where(known_HW[..., None], np.clip(np.rint(rgb_HW3), 0, 255), 0).astype(np.uint8)
        pose = info.poses[info.views.index(view)]
        return baseline_view(rgb_u8, np.where(known_HW, range_HW, 0.0), known_HW, method, (pose, shell))

    def _fill_holes(self, cond_rgb_HW3: np.ndarray, known_HW: np.ndarray, depth_HW: np.ndarray,
                    depth_known_HW: np.ndarray, shell_fill=None) -> np.ndarray:  # fmt: skip
        """`cond_rgb` in [-1, 1], 3 x H x W: 0 at unknown pixels, or their fill (`cond_fill`); "depth_steered"
        is steered by the view's reprojected range (`depth_HW`, valid where `depth_known_HW`); "room_shell" is
        `shell_fill` (`_shell_fill`, None for a view without a known depth), as is "shell_gate"."""
        if self.cond_fill == "zero" or known_HW.all():
            return np.where(known_HW[None], _to_unit(cond_rgb_HW3), 0).astype(np.float32)
        from panowan.data.inpaint import inpaint_erp

        known_u8 = np.where(known_HW[..., None], np.clip(np.rint(cond_rgb_HW3), 0, 255), 0).astype(np.uint8)
        if self.cond_fill in SHELL_FILLS and shell_fill is not None:
            filled = shell_fill[0].astype(np.float32)
        elif self.cond_fill == "depth_steered" and (known_HW & depth_known_HW).any():
            from panowan.data.depth_fill import depth_steered_fill

            depth = np.where(depth_known_HW, depth_HW, 0).astype(np.float32)
            filled = depth_steered_fill(known_u8, depth, known_HW)[0].astype(np.float32)
        else:  # without a known depth the steered and room-shell fills are the harmonic one
            method = "harmonic" if self.cond_fill in ("depth_steered", *SHELL_FILLS) else self.cond_fill
            filled = inpaint_erp(known_u8, ~known_HW, method).astype(np.float32)
        # Known pixels keep their exact (unrounded) values; only the holes take the fill.
        return np.where(known_HW[None], _to_unit(cond_rgb_HW3), _to_unit(filled)).astype(np.float32)

    def _depth_condition(self, depth_HW: np.ndarray, known_HW: np.ndarray, norm: DepthNorm,
                         shell_fill=None) -> np.ndarray:  # fmt: skip
        """Normalised `cond_depth`, 1 x H x W: 0 at unknown pixels, or (`cond_depth_fill`) the classical fill of
        the range in metres, computed as the baseline of that name computes it, then normalised."""
        if self.cond_depth_fill == "zero" or known_HW.all() or not known_HW.any():
            return _normalised(depth_HW, known_HW, norm)
        from panowan.data.inpaint import inpaint_erp

        if self.cond_depth_fill in SHELL_FILLS and shell_fill is not None:
            filled = np.where(known_HW, depth_HW, shell_fill[1]).astype(np.float64)
        elif self.cond_depth_fill in ("depth_steered", *SHELL_FILLS):
            from panowan.data.depth_fill import fill_depth_from_background

            filled = fill_depth_from_background(np.where(known_HW, depth_HW, 1.0), known_HW)[0]
        else:
            known_depth = np.where(known_HW, depth_HW, 0).astype(np.float32)
            filled = inpaint_erp(known_depth, ~known_HW, self.cond_depth_fill)
        return _normalised(filled, known_HW | (filled > 0), norm)


def _only(found: list[Path], rooms: Sequence[str | os.PathLike], data_root) -> list[Path]:
    """The rooms of `found` that are the folders `rooms`; a folder that is not one of them is refused."""
    wanted = {Path(r).resolve() for r in rooms}
    kept = [room for room in found if room.resolve() in wanted]
    if missing := sorted(str(r) for r in wanted - {room.resolve() for room in kept}):
        raise ValueError(f"{data_root}: {missing} are not room folders of this data root")
    return kept


def _checked_views(info: RoomInfo, views: Sequence[int]) -> list[int]:
    views = [int(v) for v in views]
    if not views or views[0] != info.views[0]:
        raise ValueError(f"{info.paths.room_id}: a pass must start with view {info.views[0]}, got {views}")
    if unknown := sorted(set(views) - set(info.views)):
        raise ValueError(f"{info.paths.room_id}: no views {unknown} (the room has {info.views})")
    return views


def _to_unit(rgb_HW3: np.ndarray) -> np.ndarray:
    """[0, 255] H x W x 3 -> [-1, 1] 3 x H x W float32."""
    return np.clip(rgb_HW3.transpose(2, 0, 1) / np.float32(127.5) - 1, -1, 1).astype(np.float32)


def _normalised(depth_HW: np.ndarray, valid_HW: np.ndarray, norm: DepthNorm) -> np.ndarray:
    """1 x H x W normalised depth clamped to [-1, 1]; 0 at invalid pixels."""
    safe = np.where(valid_HW, depth_HW, 1.0).astype(np.float32)
    # float32 log: ~1e-7 relative, far below what the VAE resolves, and 2x faster than float64.
    n = (np.log(safe) - np.float32(norm.center)) / np.float32(norm.half_range)
    return np.where(valid_HW, np.clip(n, -1, 1), 0)[None].astype(np.float32)


def _plucker(poses: Pose, height: int, width: int) -> torch.Tensor:
    from panowan.geometry.plucker import plucker_erp

    return plucker_erp(poses, height, width)
