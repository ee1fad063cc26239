"""Equirectangular (ERP) pixel <-> ray conventions.

Convention (matches the existing HM3D-style data, see NOTES.md):

- Camera frame: x right, y down, z forward.
- An H x W panorama (W = 2H); pixel (u, v) has its centre at (u + 0.5, v + 0.5).
- Longitude  phi   = ((u + 0.5) / W - 0.5) * 2 pi      in (-pi, pi)
- Latitude   theta = (0.5 - (v + 0.5) / H) * pi        in (-pi/2, pi/2), positive up
- Direction  d     = (sin(phi) cos(theta), -sin(theta), cos(phi) cos(theta))

So the centre column looks along +z, the top row looks up (-y), and column u = W - 1 is the
left neighbour of column u = 0 (the seam wraps).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch


def check_erp_size(height: int, width: int) -> None:
    """Raise ValueError unless the panorama is 2:1."""
    if height <= 0 or width != 2 * height:
        raise ValueError(f"an ERP panorama must be 2:1 (W = 2H); got H={height}, W={width}")


def pixel_to_angles(
    u: torch.Tensor, v: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates (any shape, pixel centres at integers) -> (phi, theta) in radians."""
    phi = ((u + 0.5) / width - 0.5) * (2 * math.pi)
    theta = (0.5 - (v + 0.5) / height) * math.pi
    return phi, theta


def angles_to_directions(phi: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """(phi, theta) of any shape -> unit directions `[..., 3]` in the camera frame."""
    cos_t = torch.cos(theta)
    return torch.stack((torch.sin(phi) * cos_t, -torch.sin(theta), torch.cos(phi) * cos_t), dim=-1)


def erp_directions(
    height: int, width: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """Unit ray directions of every pixel centre, camera frame: `dirs_HW3`.

    Computed in float64 and cast, so float32 results are correctly rounded.
    """
    check_erp_size(height, width)
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float64, device=device),
        torch.arange(width, dtype=torch.float64, device=device),
        indexing="ij",
    )
    phi, theta = pixel_to_angles(u, v, height, width)
    return angles_to_directions(phi, theta).to(dtype)


@functools.lru_cache(maxsize=8)
def erp_directions_N3(height: int, width: int) -> np.ndarray:
    """`erp_directions` in float64 as a read-only numpy `N3` (row-major over the pixels), cached per size:
    for the CPU ray casters (`data.synth`, `data.render`), which cast every pixel of many views of one size."""
    dirs = erp_directions(height, width, dtype=torch.float64).reshape(-1, 3).numpy()
    dirs.setflags(write=False)
    return dirs


def directions_to_pixels(dirs: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Directions `[..., 3]` (need not be unit length) -> continuous pixel coordinates `[..., 2]` as (u, v).

    u lies in [-0.5, W - 0.5) (wrapped), v in [-0.5, H - 0.5]; integer values are pixel centres.
    """
    x, y, z = dirs.unbind(-1)
    phi = torch.atan2(x, z)
    theta = torch.atan2(-y, torch.sqrt(x * x + z * z))
    u = (phi / (2 * math.pi) + 0.5) * width - 0.5
    v = (0.5 - theta / math.pi) * height - 0.5
    u = torch.remainder(u + 0.5, width) - 0.5
    return torch.stack((u, v), dim=-1)


def latitude_weights(height: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """cos(latitude) of each row centre, `w_H`: the relative solid angle of an ERP pixel in that row."""
    v = torch.arange(height, dtype=torch.float64, device=device)
    theta = (0.5 - (v + 0.5) / height) * math.pi
    return torch.cos(theta).to(dtype)
