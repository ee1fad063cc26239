"""The room dataset: validated rooms -> `Sample`s of selected views in model order.

Contract (docs/ARCHITECTURE.md). One `Sample` is one room, F selected views (F = 4k + 1, view 0 first):

- `rgb` [F,3,H,W] float32 in [-1, 1]: ground truth (output/panorama_XXXX.png).
- `depth` [F,1,H,W] float32: ground-truth range normalised by the room's `DepthNorm`, clamped to
  [-1, 1]; 0 where `depth_valid` is False (never interpret those values).
- `depth_valid` [F,1,H,W] bool: ground-truth depth finite and > 0 (0 marks a hole in the file).
- `cond_rgb` [F,3,H,W] float32 in [-1, 1]: view 0 reprojected into each view, unknown pixels 0 (or, with
  `cond_fill="telea"` or "ns", OpenCV's fill of them); view 0 is its full input panorama.
- `cond_depth` [F,1,H,W] float32: normalised reprojected range, unknown 0 (or `cond_depth_fill`'s fill).
- `mask` [F,1,H,W] float32: 1 where the conditioning is known; all ones for view 0.
- `plucker` [F,6,H,W] float32: Plücker maps relative to view 0.
- `prompt` (description.txt), `room_id` ("area/room"), `view_indices` (original view numbers, model
  order), `depth_norm` (`DepthNorm`).

Depth values in files: ground truth and view 0's input must be finite and >= 0 (0 = hole); NaN, inf or
negative values are refused with a `RoomError`. Conditioning depth: without a mask file 0 / non-finite is
a hole; with a mask file every pixel the mask marks known must have a finite depth > 0.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from panowan.data.io import depth_header, png_header, read_depth, read_mask, read_rgb
from panowan.data.layout import RoomError, RoomPaths, discover_views, require_file, scan_rooms
from panowan.geometry.pose import Pose, PoseFormat, load_pose, stack_poses
from panowan.models.presets import CONDITION_FILLS

log = logging.getLogger(__name__)

MIN_VIEWS = 5
LOG_MARGIN = math.log(2.0)
"""Margin (in log-depth) added on each side of view 0's depth range: depths from half view 0's minimum
to twice its maximum map into [-1, 1]."""
MIN_HALF_RANGE = 0.25
ZERO_DEPTH_TOLERANCE = 0.01
"""Fraction of mask-known pixels allowed to have depth exactly 0 (treated as unknown) before refusing."""


# ---------------------------------------------------------------------------------------- depth scale
def _param(x, like):
    """A DepthNorm parameter ready to broadcast against `like`: [B] tensors get trailing singleton dims."""
    if isinstance(x, torch.Tensor):
        x = x.to(like.device) if isinstance(like, torch.Tensor) else x.numpy()
        if x.ndim == 1 and like.ndim > 1:
            x = x.reshape(x.shape + (1,) * (like.ndim - 1))
    return x


@dataclass(frozen=True)
class DepthNorm:
    """Log-affine depth normalisation of one room: `n = (log d - center) / half_range`.

    `center`, `half_range`: floats (one room) or [B] tensors (a batch; they broadcast over the leading dim).
    Holes have no normalised value: they are carried by masks only.
    """

    center: float | torch.Tensor
    half_range: float | torch.Tensor

    @staticmethod
    def from_depth(range_HW: np.ndarray, margin: float = LOG_MARGIN) -> DepthNorm:
        """From the known (finite, > 0) pixels of view 0's range: its log range plus `margin` -> [-1, 1]."""
        known = range_HW[np.isfinite(range_HW) & (range_HW > 0)]
        assert known.size > 0, "DepthNorm needs at least one known depth"
        lo, hi = np.log(float(known.min())), np.log(float(known.max()))
        return DepthNorm(float((lo + hi) / 2), float(max((hi - lo) / 2 + margin, MIN_HALF_RANGE)))

    def normalize(self, depth):
        """Metres -> normalised (same type and dtype as `depth`); only meaningful where depth > 0."""
        center, half = _param(self.center, depth), _param(self.half_range, depth)
        if isinstance(depth, torch.Tensor):
            return ((torch.log(depth.double()) - center) / half).to(depth.dtype)
        return ((np.log(np.asarray(depth, dtype=np.float64)) - center) / half).astype(np.asarray(depth).dtype)

    def denormalize(self, normalized):
        """Normalised -> metres (the exact inverse of `normalize`)."""
        center, half = _param(self.center, normalized), _param(self.half_range, normalized)
        if isinstance(normalized, torch.Tensor):
            return torch.exp(normalized.double() * half + center).to(normalized.dtype)
        return np.exp(np.asarray(normalized, dtype=np.float64) * half + center).astype(
            np.asarray(normalized).dtype
        )


# ------------------------------------------------------------------------------------------ samples
@dataclass
class Sample:
    """One room's selected views in model order (see the module docstring for shapes and ranges)."""

    rgb: torch.Tensor
    depth: torch.Tensor
    depth_valid: torch.Tensor
    cond_rgb: torch.Tensor
    cond_depth: torch.Tensor
    mask: torch.Tensor
    plucker: torch.Tensor
    prompt: str
    room_id: str
    view_indices: list[int]
    depth_norm: DepthNorm


@dataclass
class Batch:
    """`Sample` fields with a leading B on every tensor; `depth_norm` holds [B] float64 tensors."""

    rgb: torch.Tensor
    depth: torch.Tensor
    depth_valid: torch.Tensor
    cond_rgb: torch.Tensor
    cond_depth: torch.Tensor
    mask: torch.Tensor
    plucker: torch.Tensor
    prompt: list[str]
    room_id: list[str]
    view_indices: list[list[int]]
    depth_norm: DepthNorm


def collate(samples: list[Sample]) -> Batch:
    """Stack samples (same F, H, W) into a Batch."""
    out = {}
    for f in fields(Sample):
        values = [getattr(s, f.name) for s in samples]
        if isinstance(values[0], torch.Tensor):
            out[f.name] = torch.stack(values)
        elif f.name == "depth_norm":
            out[f.name] = DepthNorm(
                torch.tensor([float(v.center) for v in values], dtype=torch.float64),
                torch.tensor([float(v.half_range) for v in values], dtype=torch.float64),
            )
        else:
            out[f.name] = list(values)
    return Batch(**out)


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


# ---------------------------------------------------------------------------------------- validation
@dataclass
class RoomInfo:
    """A validated room: its paths, sorted view numbers, poses (same order), size and prompt."""

    paths: RoomPaths
    views: list[int]
    poses: list[Pose]
    size: tuple[int, int]
    prompt: str = ""
    has_mask: dict[int, bool] = field(default_factory=dict)


def _load_pose(paths: RoomPaths, view: int, fmt: PoseFormat) -> Pose:
    try:
        return load_pose(paths.pose(view), fmt)
    except ValueError as e:
        raise RoomError(paths.root, paths.pose(view), str(e).removeprefix(f"{paths.pose(view)}: ")) from None


def _same_size(paths: RoomPaths, file: Path, got: tuple[int, int], want: tuple[int, int]) -> None:
    if tuple(got) != tuple(want):
        raise RoomError(
            paths.root, file, f"size {got[0]}x{got[1]} differs from view 0's {want[0]}x{want[1]} (HxW)"
        )


def validate_room(room: str | os.PathLike, fmt: PoseFormat | None = None) -> RoomInfo:
    """Cheap checks (files exist, headers, sizes, 2:1, poses parse). Raises RoomError."""
    fmt = fmt or PoseFormat()
    paths = RoomPaths(Path(room))
    views = discover_views(paths.root)
    size = png_header(paths.gt_rgb(0), paths.root)
    if size[1] != 2 * size[0]:
        raise RoomError(paths.root, paths.gt_rgb(0), f"panorama is {size[0]}x{size[1]} (HxW), not 2:1")
    for file in (paths.ref_rgb, paths.ref_depth, paths.description):
        require_file(paths, file)
    _same_size(paths, paths.ref_rgb, png_header(paths.ref_rgb, paths.root), size)
    _same_size(paths, paths.ref_depth, depth_header(paths.ref_depth, paths.root), size)
    info = RoomInfo(
        paths, views, [], size, paths.description.read_text(encoding="utf-8", errors="replace").strip()
    )
    for v in views:
        _same_size(paths, paths.gt_rgb(v), png_header(paths.gt_rgb(v), paths.root), size)
        _same_size(paths, paths.gt_depth(v), depth_header(paths.gt_depth(v), paths.root), size)
        info.poses.append(_load_pose(paths, v, fmt))
        if v == 0:
            continue
        for file in (paths.cond_rgb(v), paths.cond_depth(v)):
            if not file.is_file():
                raise RoomError(paths.root, file, "prepared input is missing (run `panowan prepare`)")
        _same_size(paths, paths.cond_rgb(v), png_header(paths.cond_rgb(v), paths.root), size)
        _same_size(paths, paths.cond_depth(v), depth_header(paths.cond_depth(v), paths.root), size)
        info.has_mask[v] = paths.cond_mask(v).is_file()
        if info.has_mask[v]:
            _same_size(paths, paths.cond_mask(v), png_header(paths.cond_mask(v), paths.root), size)
    return info


# ---------------------------------------------------------------------------------- value checking
def check_full_depth(depth_HW: np.ndarray, paths: RoomPaths, file: Path) -> np.ndarray:
    """Ground truth / view 0 depth: refuse NaN, inf, negative; returns valid_HW (> 0)."""
    bad = ~np.isfinite(depth_HW) | (depth_HW < 0)
    if bad.any():
        kinds = [
            k
            for k, m in (("NaN", np.isnan(depth_HW)), ("inf", np.isinf(depth_HW)), ("negative", depth_HW < 0))
            if m.any()
        ]
        raise RoomError(
            paths.root, file, f"depth has {int(bad.sum())} {'/'.join(kinds)} values (holes must be 0)"
        )
    return depth_HW > 0


def known_mask(
    depth_HW: np.ndarray, mask_file_HW: np.ndarray | None, polarity: str, paths: RoomPaths, view: int
) -> np.ndarray:
    """Known pixels of a conditioning view, checked against its depth. Returns known_HW bool."""
    ok = np.isfinite(depth_HW) & (depth_HW > 0)
    if mask_file_HW is None:
        if np.any(depth_HW < 0):
            raise RoomError(paths.root, paths.cond_depth(view), "depth has negative values")
        return ok
    known = mask_file_HW if polarity == "known" else ~mask_file_HW
    # With depth 0 / non-finite at holes (the layout's convention) a right mask agrees with the depth
    # almost everywhere; an inverted one disagrees almost everywhere.
    agreement = float(np.mean(known == ok))
    hint = f" (mask_polarity={polarity!r}; if your masks mark the other way, pass the other polarity)"
    broken = known & (~np.isfinite(depth_HW) | (depth_HW < 0))
    if broken.any():
        raise RoomError(
            paths.root, paths.cond_depth(view),
            f"{int(broken.sum())} NaN/inf/negative depths where the mask says known" + (hint if agreement < 0.5 else ""),
        )  # fmt: skip
    if agreement < 0.5:
        raise RoomError(
            paths.root, paths.cond_mask(view),
            f"mask polarity looks inverted: it disagrees with {paths.cond_depth(view).name} on "
            f"{100 * (1 - agreement):.0f}% of the pixels" + hint,
        )  # fmt: skip
    contradict = known & ~ok
    if contradict.sum() > ZERO_DEPTH_TOLERANCE * max(known.sum(), 1):
        raise RoomError(
            paths.root,
            paths.cond_mask(view),
            f"mask marks {int(contradict.sum())} pixels known where the depth is 0",
        )
    return known & ok


# ------------------------------------------------------------------------------------------ dataset
class RoomDataset(torch.utils.data.Dataset):
    """Rooms under `data_root/{area}/{room}` (NOTES.md layout, prepared) as `Sample`s.

    height: None keeps the files' size, else a multiple of 16 (width = 2 * height).
    view_order: "index" (ascending view number) or "path" (greedy nearest-neighbour path from view 0).
    skip_bad_rooms: skip rooms that fail validation (logged, counted in `summary`) instead of raising.
    Frame sampling is seeded by (seed, room index, epoch); call `set_epoch` every epoch.
    mask_polarity: "known" (1 = known, the layout's convention) or "hole" (1 = hole).
    cond_fill: what `cond_rgb` holds at unknown pixels: "zero", or "telea" / "ns" (OpenCV inpainting of the
    resized reprojection, as the baseline of that name; for models with that `rgb_condition_fill`).
    cond_depth_fill: the same for `cond_depth` (the normalised depth's holes; `depth_condition_fill`).
    cache_files: keep every decoded file, and every view's arrays and Plücker map, in memory after their
    first use (for small panoramas, whose loading otherwise dominates a GPU step; memory grows to the
    processed data set, about 30 bytes a pixel a view).
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
        self.rooms: list[RoomInfo] = []
        found = scan_rooms(data_root)
        self.summary: dict = {
            "rooms_found": len(found),
            "rooms_used": 0,
            "bad_rooms": 0,
            "too_few_views": 0,
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

    def sample(self, index: int, epoch: int) -> Sample:
        """Room `index` with the views of `epoch` (thread-safe: reads no mutable state but the caches)."""
        info = self.rooms[index]
        paths, size = info.paths, info.size
        views = self.selected_views(index, epoch)
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
            cond_rgb=stacked["cond_rgb"], cond_depth=stacked["cond_depth"], mask=stacked["mask"],
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
        return {
            "rgb": _to_unit(gt_rgb),
            "depth": _normalised(gt_depth[..., 0], gt_valid, norm),
            "depth_valid": gt_valid[None],
            "cond_rgb": self._fill_holes(cond_rgb, mask),
            "cond_depth": self._depth_condition(cond_depth[..., 0], depth_known, norm),
            "mask": mask[None].astype(np.float32),
        }

    def _fill_holes(self, cond_rgb_HW3: np.ndarray, known_HW: np.ndarray) -> np.ndarray:
        """`cond_rgb` in [-1, 1], 3 x H x W: 0 at unknown pixels, or their Telea fill (`cond_fill`)."""
        if self.cond_fill == "zero" or known_HW.all():
            return np.where(known_HW[None], _to_unit(cond_rgb_HW3), 0).astype(np.float32)
        from panowan.data.inpaint import inpaint_erp

        known_u8 = np.where(known_HW[..., None], np.clip(np.rint(cond_rgb_HW3), 0, 255), 0).astype(np.uint8)
        filled = inpaint_erp(known_u8, ~known_HW, self.cond_fill).astype(np.float32)
        # Known pixels keep their exact (unrounded) values; only the holes take the fill.
        return np.where(known_HW[None], _to_unit(cond_rgb_HW3), _to_unit(filled)).astype(np.float32)

    def _depth_condition(self, depth_HW: np.ndarray, known_HW: np.ndarray, norm: DepthNorm) -> np.ndarray:
        """Normalised `cond_depth`, 1 x H x W: 0 at unknown pixels, or (`cond_depth_fill`) OpenCV's fill of the
        range in metres, computed as the baseline of that name computes it, then normalised."""
        if self.cond_depth_fill == "zero" or known_HW.all() or not known_HW.any():
            return _normalised(depth_HW, known_HW, norm)
        from panowan.data.inpaint import inpaint_erp

        filled = inpaint_erp(
            np.where(known_HW, depth_HW, 0).astype(np.float32), ~known_HW, self.cond_depth_fill
        )
        return _normalised(filled, known_HW | (filled > 0), norm)


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
