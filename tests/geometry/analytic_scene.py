"""An analytic test scene: a box room with boxes and spheres inside, rendered exactly by ray casting.

World frame like the camera frame at identity: x right, y down, z forward. Everything float64.
Independent of panowan's reprojection (it only uses the ERP and pose conventions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from panowan.geometry.erp import erp_directions
from panowan.geometry.pose import Pose, yaw_matrix

F64 = torch.float64
ROOM_LO = (-3.0, -1.2, -2.5)  # ceiling 1.2 m above the cameras' height, floor 1.6 m below
ROOM_HI = (3.5, 1.6, 4.0)
BOXES = (  # (lo, hi) corners
    ((1.0, 0.8, 1.5), (2.0, 1.6, 2.6)),
    ((-2.5, 0.4, -1.8), (-1.6, 1.6, -0.6)),
    ((-1.0, 1.0, 2.5), (0.2, 1.6, 3.2)),
    ((2.4, -1.2, -1.5), (3.5, 0.2, -0.8)),  # a cupboard hanging from the ceiling against a wall
)
SPHERES = (((-1.2, 0.9, 1.4), 0.45), ((1.6, 0.3, -1.3), 0.35), ((0.9, -0.6, 3.2), 0.3))
# ids: 0-5 room faces, then boxes, then spheres
NUM_SURFACES = 6 + len(BOXES) + len(SPHERES)


@dataclass
class Render:
    range_HW: torch.Tensor  # float64 metres
    image_3HW: torch.Tensor  # float32 in [0, 1]
    surface_HW: torch.Tensor  # int64 surface id
    points_HW3: torch.Tensor  # world points, float64


def _safe(d: torch.Tensor) -> torch.Tensor:
    return torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)


def cast(origin_3: torch.Tensor, dirs_N3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance along unit world rays from `origin_3` to the first surface, and the surface id."""
    o = origin_3.to(F64)
    d = _safe(dirs_N3.to(F64))
    lo, hi = torch.tensor(ROOM_LO, dtype=F64), torch.tensor(ROOM_HI, dtype=F64)
    t_exit = torch.maximum((lo - o) / d, (hi - o) / d)  # N, 3: exit distance per axis
    t, axis = t_exit.min(1)
    surface = axis * 2 + (d.gather(1, axis[:, None]).squeeze(1) > 0).long()
    for k, (blo, bhi) in enumerate(BOXES):
        t1 = (torch.tensor(blo, dtype=F64) - o) / d
        t2 = (torch.tensor(bhi, dtype=F64) - o) / d
        near = torch.minimum(t1, t2).amax(1)
        far = torch.maximum(t1, t2).amin(1)
        hit = (near <= far) & (near > 0) & (near < t)
        t = torch.where(hit, near, t)
        surface = torch.where(hit, torch.full_like(surface, 6 + k), surface)
    for k, (centre, radius) in enumerate(SPHERES):
        oc = o - torch.tensor(centre, dtype=F64)
        b = (d * oc).sum(1)
        disc = b * b - (oc * oc).sum() + radius * radius
        near = -b - disc.clamp(min=0).sqrt()
        hit = (disc > 0) & (near > 0) & (near < t)
        t = torch.where(hit, near, t)
        surface = torch.where(hit, torch.full_like(surface, 6 + len(BOXES) + k), surface)
    return t, surface


def shade(points_N3: torch.Tensor, surface_N: torch.Tensor) -> torch.Tensor:
    """A smooth procedural texture per surface: colours `[N, 3]` in [0, 1]."""
    g = torch.Generator().manual_seed(7)
    base = torch.rand(NUM_SURFACES, 3, generator=g, dtype=F64) * 0.6 + 0.2
    x, y, z = points_N3.unbind(1)
    pattern = 0.15 * torch.sin(4 * x + 1.3 * y) * torch.cos(3 * z - 0.7 * y)
    return (base[surface_N] + pattern[:, None]).clamp(0, 1).to(torch.float32)


def render(pose: Pose, height: int, width: int) -> Render:
    """Exact ERP render of the scene from `pose` (world -> camera rotation, camera centre)."""
    dirs_cam = erp_directions(height, width, dtype=F64).reshape(-1, 3)
    dirs_world = dirs_cam @ pose.rotation.to(F64)  # R^T d_cam, as rows
    t, surface = cast(pose.position, dirs_world)
    points = pose.position.to(F64) + dirs_world * t[:, None]
    image = shade(points, surface).T.reshape(3, height, width)
    return Render(
        t.reshape(height, width), image, surface.reshape(height, width), points.reshape(height, width, 3)
    )


def make_pose(position, yaw: float = 0.0) -> Pose:
    return Pose(yaw_matrix(yaw), torch.tensor(position, dtype=F64))


VIEW0 = make_pose((0.2, 0.0, 0.5), 0.4)
# Targets 0.3 - 1.0 m from view 0, at other yaws (and one at another height).
TARGETS = (
    make_pose((0.5, 0.0, 0.5), -0.8),
    make_pose((-0.3, 0.1, 0.9), 1.9),
    make_pose((0.8, -0.2, -0.1), 3.0),
    make_pose((0.2, 0.0, 1.5), -2.2),
)


def distance(pose_a: Pose, pose_b: Pose) -> float:
    return float((pose_a.position - pose_b.position).norm())


def depth_edges(render_: Render, radius: int = 2, rel: float = 0.01) -> torch.Tensor:
    """Pixels within `radius` of a depth edge: 4-neighbours on different surfaces whose ranges differ
    by more than `rel` (the seam wraps). `edges_HW` bool."""
    r, s = render_.range_HW, render_.surface_HW
    edge = torch.zeros_like(r, dtype=torch.bool)
    for dv, du in ((0, 1), (1, 0)):
        r2 = torch.roll(r, shifts=(-dv, -du), dims=(0, 1))
        s2 = torch.roll(s, shifts=(-dv, -du), dims=(0, 1))
        e = (s != s2) & ((r - r2).abs() > rel * torch.minimum(r, r2))
        if dv:
            e[-1] = False  # no vertical wrap
        edge |= e | torch.roll(e, shifts=(dv, du), dims=(0, 1))
    padded = torch.cat((edge[:, -radius:], edge, edge[:, :radius]), 1).float()[None, None]
    grown = torch.nn.functional.max_pool2d(padded, 2 * radius + 1, stride=1, padding=(radius, 0))
    return grown[0, 0] > 0


def shared_with(render_: Render, source: Pose) -> torch.Tensor:
    """Target pixels whose 3D point is visible from `source` (its distance from the source centre is
    within 1% of the source's range along that direction). `shared_HW` bool."""
    offset = render_.points_HW3.reshape(-1, 3) - source.position.to(F64)
    dist = offset.norm(dim=1)
    t0, _ = cast(source.position, offset / dist[:, None])
    return ((dist - t0).abs() <= 0.01 * t0).reshape(render_.range_HW.shape)


def quality(rep_range, rep_valid, target: Render, source: Pose) -> tuple[float, float]:
    """(fraction of valid pixels within 2% of the direct render, fraction of shared non-edge pixels valid)."""
    truth = target.range_HW
    good = (rep_range.to(F64) - truth).abs() <= 0.02 * truth
    accuracy = float(good[rep_valid].float().mean())
    mask = shared_with(target, source) & ~depth_edges(target)
    coverage = float(rep_valid[mask].float().mean())
    return accuracy, coverage


def yaw_of(pose: Pose) -> float:
    return math.atan2(float(pose.rotation[0, 2]), float(pose.rotation[0, 0]))
