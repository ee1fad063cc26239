"""Coloured point clouds as binary little-endian PLY files, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from panowan.utils.atomic import atomic_write_bytes


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def write_ply(path: str | os.PathLike, points_N3, colors_N3_uint8=None) -> Path:
    """Write `points_N3` (float, stored as float32 x y z) and optional `colors_N3_uint8` (red green blue).

    Accepts torch tensors or numpy arrays. Colours must be uint8 (convert float colours yourself, so
    no scale is guessed).
    """
    points = _as_numpy(points_N3)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"{path}: points must have shape [N, 3]; got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError(f"{path}: points contain non-finite values")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    colors = None
    if colors_N3_uint8 is not None:
        colors = _as_numpy(colors_N3_uint8)
        if colors.shape != (points.shape[0], 3):
            raise ValueError(f"{path}: colors must have shape [{points.shape[0]}, 3]; got {colors.shape}")
        if colors.dtype != np.uint8:
            raise ValueError(f"{path}: colors must be uint8; got {colors.dtype}")
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertices = np.empty(points.shape[0], dtype=fields)
    vertices["x"], vertices["y"], vertices["z"] = points.astype(np.float32).T
    if colors is not None:
        vertices["red"], vertices["green"], vertices["blue"] = colors.T
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {points.shape[0]}"]
    header += [f"property float {n}" for n in "xyz"]
    if colors is not None:
        header += [f"property uchar {n}" for n in ("red", "green", "blue")]
    header.append("end_header")
    data = ("\n".join(header) + "\n").encode("ascii") + vertices.tobytes()
    return atomic_write_bytes(path, data)
