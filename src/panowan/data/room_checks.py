"""Room validation: the cheap checks of a room's files (`validate_room` -> `RoomInfo`) and the value checks
of its depth and mask files (`check_full_depth`, `known_mask`), each refusal a `RoomError`.

Depth values in files (the decision, with its reasons, is in `panowan.data.io.read_depth`'s docstring):
ground truth and view 0's input must be finite and >= 0 (0 = hole); NaN, +-inf or negative values are
refused with a `RoomError` that counts them. Conditioning depth: 0 and non-finite (NaN, +-inf) are holes,
negative finite values are refused; with a mask file every pixel the mask marks known must have a finite
depth > 0.

The dataset that uses them: `panowan.data.dataset`; the `Sample` contract: `panowan.data.sample`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from panowan.data.io import depth_header, png_header
from panowan.data.layout import RoomError, RoomPaths, discover_views, require_file
from panowan.geometry.pose import Pose, PoseFormat, load_pose

ZERO_DEPTH_TOLERANCE = 0.01
"""Fraction of mask-known pixels allowed to have depth exactly 0 (treated as unknown) before refusing."""


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
    """Ground truth / view 0 depth: refuse NaN, +-inf, negative (a RoomError naming `file`, the count and the
    kinds; not masked, as a non-finite value there is a broken export, not a declared hole); returns
    valid_HW (> 0)."""
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
        # -inf is non-finite, so a hole like NaN and +inf (NOTES.md: "0 or non-finite = hole"), not negative
        negative = np.isfinite(depth_HW) & (depth_HW < 0)
        if negative.any():
            raise RoomError(
                paths.root, paths.cond_depth(view), f"depth has {int(negative.sum())} negative values"
            )
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
