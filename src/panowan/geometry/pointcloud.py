"""Back-projection of ERP RGB-D panoramas to world-frame point clouds.

A pixel with range r (radial distance along its ray, metres) and camera-frame ray d_cam (erp.py) is the
world point  X = position + R^T (r d_cam),  R the pose's world -> camera rotation.
"""

from __future__ import annotations

import torch

from panowan.geometry.erp import check_erp_size, erp_directions
from panowan.geometry.pose import Pose


def valid_range(range_HW: torch.Tensor) -> torch.Tensor:
    """Pixels whose range is a usable sample: finite and > 0 (everything else is a hole). `valid_HW` bool."""
    return torch.isfinite(range_HW) & (range_HW > 0)


def backproject_erp(
    range_HW: torch.Tensor,
    pose: Pose,
    image_CHW: torch.Tensor | None = None,
    valid_HW: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """World points `points_N3` of the valid pixels (row-major order) and their colours `colors_NC` (or None).

    A pixel is used where `valid_HW` (if given) is True and its range is finite and > 0. Points are
    computed in float64 and returned in `range_HW`'s floating dtype (float32 for integer input).
    """
    if range_HW.dim() != 2:
        raise ValueError(f"backproject_erp needs range_HW of shape [H, W]; got {tuple(range_HW.shape)}")
    height, width = range_HW.shape
    check_erp_size(height, width)
    if image_CHW is not None and (image_CHW.dim() != 3 or tuple(image_CHW.shape[1:]) != (height, width)):
        raise ValueError(
            f"image_CHW {tuple(image_CHW.shape)} does not match range_HW {tuple(range_HW.shape)}"
        )
    if valid_HW is not None and tuple(valid_HW.shape) != (height, width):
        raise ValueError(f"valid_HW {tuple(valid_HW.shape)} does not match range_HW {tuple(range_HW.shape)}")
    valid = valid_range(range_HW)
    if valid_HW is not None:
        valid = valid & valid_HW.to(torch.bool)
    dirs_N3 = erp_directions(height, width, dtype=torch.float64, device=range_HW.device)[valid]
    cam_N3 = dirs_N3 * range_HW[valid].to(torch.float64)[:, None]
    pose64 = pose.to(dtype=torch.float64, device=range_HW.device)
    points_N3 = pose64.camera_to_world(cam_N3)
    out_dtype = range_HW.dtype if range_HW.is_floating_point() else torch.float32
    colors = image_CHW[:, valid].T.contiguous() if image_CHW is not None else None
    return points_N3.to(out_dtype), colors
