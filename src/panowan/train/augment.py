"""Geometry-exact augmentation: yaw rotation of every view of a room by a whole-pixel ERP roll.

Rolling an H x W ERP panorama right by s pixels (`out[..., u] = in[..., u - s]`, columns wrap) is the
same image a camera rotated about its y axis by `a = 2 pi s / W` would see: with R the world -> camera
rotation, the rotated camera has `R' = yaw_matrix(a) @ R` (geometry.pose.yaw_matrix moves content by +a
in longitude) and the same centre. Depth is radial range, unchanged by a rotation, so every per-pixel map
of the view (RGB, depth, validity, condition, mask) rolls with it.

Plücker maps are relative to view 0 (`d_ref = R_0 R_f^T d_cam`, `m = p_ref x d_ref`). With every view f
rotated by its own `a_f`: `d_ref' (u) = Y(a_0) d_ref(u - s_f)` and `p_ref' = Y(a_0) p_ref`, so the new map
is view f's map rolled by s_f with both 3-vectors (direction, moment) rotated by view 0's yaw Y(a_0). This
is exactly `plucker_erp` of the rotated poses, not an approximation (tested against it).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from panowan.geometry.pose import Pose, yaw_matrix

# Per-view maps of a Batch that roll with the view (each B,F,C,H,W).
ROLLED_FIELDS = ("rgb", "depth", "depth_valid", "cond_rgb", "cond_depth", "cond_depth_m", "mask")


def shift_angle(shift_px: int | torch.Tensor, width: int) -> torch.Tensor:
    """Yaw angle (radians, float64) of a roll by `shift_px` pixels in a panorama `width` wide."""
    return torch.as_tensor(shift_px, dtype=torch.float64) * (2 * math.pi / width)


def roll_views(x_BFCHW: torch.Tensor, shifts_BF: torch.Tensor) -> torch.Tensor:
    """Roll every view (b, f) horizontally by its own whole-pixel shift: `out[b,f,...,u] = x[b,f,...,u - s]`."""
    b, f = x_BFCHW.shape[:2]
    assert shifts_BF.shape == (b, f), (shifts_BF.shape, x_BFCHW.shape)
    rows = [
        torch.stack([torch.roll(x_BFCHW[i, j], int(shifts_BF[i, j]), dims=-1) for j in range(f)])
        for i in range(b)
    ]
    return torch.stack(rows)


def rotate_vectors(x_B3HW_like: torch.Tensor, rotation_B33: torch.Tensor, dim: int) -> torch.Tensor:
    """Apply one 3x3 rotation per batch element to the 3-vectors stored along `dim` (batch dim 0)."""
    x = x_B3HW_like.movedim(dim, -1)
    r = rotation_B33.to(dtype=torch.float64, device=x.device)
    r = r.view(r.shape[0], *([1] * (x.dim() - 2)), 3, 3)
    out = (r @ x.to(torch.float64).unsqueeze(-1)).squeeze(-1)
    return out.to(x.dtype).movedim(-1, dim)


def roll_plucker(plucker_BF6HW: torch.Tensor, shifts_BF: torch.Tensor) -> torch.Tensor:
    """Plücker maps (relative to view 0) of the yaw-rotated views: roll each view by its shift, then
    rotate direction and moment by view 0's yaw (the new reference frame)."""
    width = plucker_BF6HW.shape[-1]
    rolled = roll_views(plucker_BF6HW, shifts_BF)
    ref = yaw_matrix(shift_angle(shifts_BF[:, 0], width))  # B,3,3
    directions = rotate_vectors(rolled[:, :, 0:3], ref, dim=2)
    moments = rotate_vectors(rolled[:, :, 3:6], ref, dim=2)
    return torch.cat([directions, moments], dim=2)


def rotate_poses(poses: Pose, shifts_F: torch.Tensor, width: int) -> Pose:
    """World -> camera poses of views rolled by `shifts_F` pixels: `R' = yaw_matrix(2 pi s / W) R`,
    the same centre (F-stacked poses)."""
    yaw = yaw_matrix(shift_angle(shifts_F, width)).to(poses.rotation)
    return Pose(yaw @ poses.rotation, poses.position)


def random_shifts(
    batch: int, frames: int, width: int, generator: torch.Generator, step: int = 1
) -> torch.Tensor:
    """Uniform whole-pixel shifts `B,F` (int64), multiples of `step` in [0, W)."""
    if width % step:
        raise ValueError(f"yaw shift step {step} must divide the panorama width {width}")
    return torch.randint(0, width // step, (batch, frames), generator=generator) * step


def yaw_roll(batch, shifts_px: torch.Tensor):
    """A copy of `batch` (a `panowan.data.dataset.Batch`) with view (b, f) rotated in yaw by a roll of
    `shifts_px[b, f]` pixels (`B,F` or `F` for every batch element): every per-view map rolled, the
    Plücker maps recomputed for the rotated poses. Prompts, depth normalisation and ids are unchanged."""
    b, f = batch.rgb.shape[:2]
    shifts = torch.as_tensor(shifts_px, dtype=torch.int64)
    if shifts.dim() == 1:
        shifts = shifts.expand(b, -1)
    if tuple(shifts.shape) != (b, f):
        raise ValueError(f"yaw shifts must be [B, F] = [{b}, {f}] or [F]; got {tuple(shifts.shape)}")
    changes = {name: roll_views(getattr(batch, name), shifts) for name in ROLLED_FIELDS}
    changes["plucker"] = roll_plucker(batch.plucker, shifts)
    return dataclasses.replace(batch, **changes)
