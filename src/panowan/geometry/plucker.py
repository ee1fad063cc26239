"""Plücker ray maps of ERP views.

For a view with world -> camera rotation R and camera centre o, pixel (u, v) has the camera-frame ray
d_cam (erp.py) and the world ray d = R^T d_cam (unit) from o. Its Plücker coordinates are
(d, m = o x d): the moment m does not change when o slides along the ray, and m . d = 0.
The caller passes poses already relative to view 0 (`pose.relative_poses`), so view 0's map holds
only directions and a zero moment.
"""

from __future__ import annotations

import torch

from panowan.geometry.erp import erp_directions
from panowan.geometry.pose import Pose


def plucker_erp(poses: Pose, height: int, width: int, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Plücker maps `plucker_F6HW` of F-stacked poses (`rotation_F33`, `position_F3`; one unstacked pose gives F=1).

    Channels 0-2: world ray direction d (unit); channels 3-5: moment o x d. Computed in float64 on the
    poses' device, then cast to `dtype`.
    """
    rotation = poses.rotation.to(torch.float64)
    position = poses.position.to(torch.float64)
    if rotation.dim() == 2:
        rotation, position = rotation[None], position[None]
    if rotation.dim() != 3:
        raise ValueError(f"plucker_erp needs poses with rotation [F,3,3]; got {tuple(poses.rotation.shape)}")
    dirs_cam_HW3 = erp_directions(height, width, dtype=torch.float64, device=rotation.device)
    # d_world = R^T d_cam, written per view as d_cam (row) @ R.
    dirs_FHW3 = torch.einsum("hwi,fij->fhwj", dirs_cam_HW3, rotation)
    dirs_FHW3 = dirs_FHW3 / dirs_FHW3.norm(dim=-1, keepdim=True)
    moment_FHW3 = torch.cross(position[:, None, None, :].expand_as(dirs_FHW3), dirs_FHW3, dim=-1)
    return torch.cat((dirs_FHW3, moment_FHW3), dim=-1).permute(0, 3, 1, 2).contiguous().to(dtype)
