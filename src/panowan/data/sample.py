"""The `Sample` contract of the room dataset: `DepthNorm`, `Sample`, `Batch` and `collate`.

Contract (docs/ARCHITECTURE.md). One `Sample` is one room, F selected views (F = 4k + 1, view 0 first):

- `rgb` [F,3,H,W] float32 in [-1, 1]: ground truth (output/panorama_XXXX.png).
- `depth` [F,1,H,W] float32: ground-truth range normalised by the room's `DepthNorm`, clamped to
  [-1, 1]; 0 where `depth_valid` is False (never interpret those values).
- `depth_valid` [F,1,H,W] bool: ground-truth depth finite and > 0 (0 marks a hole in the file).
- `cond_rgb` [F,3,H,W] float32 in [-1, 1]: view 0 reprojected into each view, unknown pixels 0 (or, with
  `cond_fill="telea"` or "ns", OpenCV's fill of them); view 0 is its full input panorama.
- `cond_depth` [F,1,H,W] float32: normalised reprojected range, unknown 0 (or `cond_depth_fill`'s fill).
- `cond_depth_m` [F,1,H,W] float32: the same known range in metres, unclamped, 0 where no depth is known: what
  a completion pastes back at known pixels (a target view can see nearer or farther than the normalised
  range, built from view 0, reaches; the clamped `cond_depth` would move those pixels).
- `mask` [F,1,H,W] float32: 1 where the conditioning is known; all ones for view 0.
- `plucker` [F,6,H,W] float32: Plücker maps relative to view 0.
- `prompt` (description.txt), `room_id` ("area/room"), `view_indices` (original view numbers, model
  order), `depth_norm` (`DepthNorm`).

`panowan.data.dataset.RoomDataset` assembles `Sample`s; room and depth checks are in
`panowan.data.room_checks`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

LOG_MARGIN = math.log(2.0)
"""Margin (in log-depth) added on each side of view 0's depth range: depths from half view 0's minimum
to twice its maximum map into [-1, 1]."""
MIN_HALF_RANGE = 0.25


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
    cond_depth_m: torch.Tensor
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
    cond_depth_m: torch.Tensor
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
