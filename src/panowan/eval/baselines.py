"""Classical baselines, written in the layout of `panowan infer` so that the same metrics apply.

- "copy": the reprojected input unchanged (holes stay black, depth 0 there): what the conditioning
  alone already gives.
- "telea" / "ns": OpenCV inpainting (`cv2.inpaint`, Telea's fast marching or Navier-Stokes) of the
  reprojected RGB (uint8) and of the reprojected range (float32) over the holes, across the ERP seam
  (`panowan.data.inpaint.inpaint_erp`; Telea on float32 goes through 16 bits: OpenCV's float32 Telea is wrong).
- "harmonic": the membrane (discrete harmonic) fill of the RGB and of the range over the holes, on the sphere
  and wrapping in longitude (`inpaint_erp(..., "harmonic")`, i.e. `panowan.data.inpaint.harmonic_fill`).
- "depth_steered": the same membrane, steered by depth (`panowan.data.depth_fill.depth_steered_fill`): the range
  first, with natural boundaries on the near side of depth edges, then the RGB from the boundary pixels whose
  depth agrees with the filled depth.
- "room_shell": the room's floor, ceiling and walls fitted to view 0 (`panowan.data.room_shell`); each hole pixel
  from the known pixels of the surface its ray meets, mixed with the harmonic fill where furniture may hide it.
  It reads the room's poses and view 0 (`run_baseline`), and takes the walls to lie along the world's x and z axes.
- "shell_gate": a *learned* fill, not a classical one: the room-shell fill's candidates mixed per hole pixel by a
  small MLP trained on other rooms' ground truth (`panowan.data.shell_gate`, the embedded gate).

The classical fills (`CLASSICAL_FILLS`: every baseline but "copy" and the learned "shell_gate") are the model's
rivals in the summaries (`panowan.eval.summary`); `DEFAULT_BASELINES` is what `panowan eval --baselines` (no
names) and `panowan demo` compare with.

View 0 is complete in the input, so every baseline returns it unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from panowan.data.depth_fill import depth_steered_fill
from panowan.data.inpaint import inpaint_erp
from panowan.data.room_shell import fit_room, room_shell_fill

CLASSICAL_FILLS = ("telea", "ns", "harmonic", "depth_steered", "room_shell")
LEARNED_FILLS = ("shell_gate",)
SHELL_FILLS = ("room_shell", "shell_gate")
"""The fills that read the room: the view's pose and the shell fitted to view 0."""
BASELINES = ("copy", *CLASSICAL_FILLS, *LEARNED_FILLS)
DEFAULT_BASELINES = (*CLASSICAL_FILLS, *LEARNED_FILLS, "copy")


def baseline_view(cond_rgb: np.ndarray, cond_depth: np.ndarray, known_HW: np.ndarray, method: str, room=None):
    """One view's baseline prediction: (rgb H x W x 3 uint8, depth H x W float32 metres). The `SHELL_FILLS` also
    need `room`: (the view's `Pose` in the data's world frame, the room's `RoomShell`), as `run_baseline` passes."""
    hole = ~known_HW
    rgb = np.where(known_HW[..., None], cond_rgb, 0).astype(np.uint8)
    depth = np.where(known_HW, cond_depth, 0).astype(np.float32)
    if method == "copy" or not hole.any():
        return rgb, depth
    if known_HW.sum() == 0:
        raise ValueError("cannot inpaint a view with no known pixel")
    if method == "depth_steered":
        return depth_steered_fill(rgb, depth, known_HW)
    if method in SHELL_FILLS:
        if room is None:
            raise ValueError(
                f"the {method} baseline needs the view's pose and the room's shell (run_baseline)"
            )
        if method == "shell_gate":
            from panowan.data.shell_gate import shell_gate_fill

            return shell_gate_fill(rgb, depth, known_HW, *room)
        return room_shell_fill(rgb, depth, known_HW, *room)
    return inpaint_erp(rgb, hole, method), inpaint_erp(depth, hole, method).astype(np.float32)


def read_condition(info, view: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A target view's condition as the baselines read it: (rgb `H,W,3` uint8, range `H,W` metres, known `H,W`
    bool), `info` from `panowan.data.dataset.validate_room`."""
    from panowan.data.dataset import known_mask
    from panowan.data.io import read_depth, read_mask, read_rgb

    paths, size, room = info.paths, info.size, info.paths.root
    depth = read_depth(paths.cond_depth(view), size, room)
    mask_file = read_mask(paths.cond_mask(view), size, room) if info.has_mask.get(view) else None
    known = known_mask(depth, mask_file, "known", paths, view)
    return read_rgb(paths.cond_rgb(view), size, room), depth, known


def read_reference(info) -> tuple[np.ndarray, np.ndarray]:
    """View 0's full panorama: (rgb `H,W,3` uint8, range `H,W` metres, 0 where it is not finite and positive)."""
    from panowan.data.io import read_depth, read_rgb

    paths, size, room = info.paths, info.size, info.paths.root
    depth = read_depth(paths.ref_depth, size, room)
    return read_rgb(paths.ref_rgb, size, room), np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(
        np.float32
    )


def run_baseline(data_root: str | os.PathLike, output_dir: str | os.PathLike, method: str,
                 rooms: list[str] | None = None, *, point_stride: int = 1) -> list[Path]:  # fmt: skip
    """Write `method`'s predictions for every view of every room (or of `rooms`, ids 'area/room')."""
    import torch

    from panowan.data.layout import scan_rooms
    from panowan.sample.pipeline import write_room

    if method not in BASELINES:
        raise ValueError(f"unknown baseline {method!r}; choose one of {BASELINES}")
    from panowan.data.dataset import validate_room

    written = []
    for room in scan_rooms(data_root):
        info = validate_room(room)
        if rooms is not None and info.paths.room_id not in rooms:
            continue
        paths = info.paths
        shell = fit_room(info) if method in SHELL_FILLS else None
        rgbs, depths = [], []
        for view, pose in zip(info.views, info.poses, strict=True):
            room_view = None if shell is None else (pose, shell)
            rgb, depth = (
                read_reference(info)
                if view == 0
                else baseline_view(*read_condition(info, view), method, room_view)
            )
            rgbs.append(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
            depths.append(torch.from_numpy(depth)[None])
        out = write_room(
            Path(output_dir) / paths.room_id, info.views, torch.stack(rgbs), torch.stack(depths), info.poses,
            {"room": paths.room_id, "baseline": method}, point_stride=point_stride,
        )  # fmt: skip
        written.append(out)
    return written
