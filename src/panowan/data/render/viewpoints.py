"""Viewpoints in the free space of a scanned mesh: upright cameras at a height above the floor.

World frame = the mesh's coordinates (no recentring, no axis swap); `up` is the unit world vector of
`--up_axis`. A candidate camera is a point sampled (area-weighted) on the floor, lifted by the camera
height along `up`. The floor is the set of upward-facing faces (normal . up > 0.9) at the heights that
hold at least `FLOOR_SHARE` of the largest such height bin's area (bins of camera_height / 30), so table
tops and beds do not count and every storey of a building does.

A candidate is accepted when (cheap probe of `PROBE_H x 2 PROBE_H` ERP rays plus straight up and down):
- the first hit straight down is the floor, at the camera height (nothing under the camera in between);
- every probe ray's hit is at least `clearance` away (free space around the camera);
- at most `max_escape` of the probe rays escape or hit beyond `max_range` (inside the scanned area: a scan
  with no ceiling, as ScanNet's, loses at most about the upper half, which the default 0.6 accepts);
- at most `MAX_BACKFACING` of the hits see the back of a face (inside furniture, outside the building);
- at least `MIN_WALLS` of the probe rays 0-20 degrees above the horizon meet the front of a surface within
  `max_range` (walls around the camera: outside a building, even on scanned ground, there are none);
- for views 1.. : the camera is `min_distance`..`max_distance` from view 0 and in line of sight of it.
After the full render a view is checked again (escaped fraction, nearest range) and resampled if it fails.
Everything is drawn from the one seeded generator passed in, so a seed gives the same views.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from panowan.data.render.raycast import Caster, View, render_view
from panowan.geometry.pose import Pose

PROBE_H = 16
FLOOR_SHARE = 0.25
MAX_BACKFACING = 0.2
HORIZON_DEG = 20.0
MIN_WALLS = 0.5
"""At least this share of the probe rays 0-20 degrees above the horizon must meet the front of a surface within
max_range: inside a room, with or without a ceiling, they meet its walls; outside a building, even on scanned
ground, they meet the backs of its walls or nothing."""
RESTARTS = 4
"""How many times a new view 0 is drawn when no target fits around the current one."""


@dataclass(frozen=True)
class ViewpointSettings:
    """Free-space rules (lengths in the mesh's units, metres for the usual scans); see the module docstring."""

    camera_height: float = 1.5
    clearance: float = 0.3
    min_distance: float = 1.0
    max_distance: float = 4.0
    max_escape: float = 0.6
    max_range: float = 30.0
    max_attempts: int = 3000

    def validate(self) -> None:
        if not (self.camera_height > 0 and self.clearance >= 0 and self.max_range > 0):
            raise ValueError(f"need camera_height > 0, clearance >= 0, max_range > 0; got {self}")
        if not 0 <= self.min_distance <= self.max_distance:
            raise ValueError(
                f"need 0 <= min_distance <= max_distance, got {self.min_distance}, {self.max_distance}"
            )
        if not 0 <= self.max_escape <= 1:
            raise ValueError(f"max_escape is a fraction in [0, 1], got {self.max_escape}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")


class NoFreeSpace(ValueError):
    """No viewpoint satisfied the rules; the message says which rule rejected how many candidates."""


def upright_rotation(up_3: np.ndarray, yaw: float) -> np.ndarray:
    """World -> camera rotation (rows: camera x right, y down, z forward in world coordinates) of a level
    camera (its -y along `up`) turned by `yaw` about `up` from a fixed horizontal reference axis."""
    ref = np.eye(3)[int(np.argmin(np.abs(up_3)))]
    f0 = ref - ref.dot(up_3) * up_3
    f0 /= np.linalg.norm(f0)
    forward = math.cos(yaw) * f0 + math.sin(yaw) * np.cross(up_3, f0)
    down = -up_3
    right = np.cross(down, forward)
    return np.stack((right, down, forward))


@dataclass
class Floor:
    """Floor faces of a mesh and their sampling weights (area)."""

    faces: np.ndarray
    weights: np.ndarray

    @staticmethod
    def of(caster: Caster, up_3: np.ndarray, camera_height: float) -> Floor:
        mesh = caster.mesh
        upward = np.nonzero(caster.normals @ up_3 > 0.9)[0]
        area = mesh.face_areas_F[upward]
        if not len(upward) or area.sum() <= 0:
            raise NoFreeSpace(
                f"{mesh.path}: no upward-facing surface (floor) for this up axis; wrong --up_axis?"
            )
        height = mesh.vertices_V3[mesh.faces_F3[upward]].mean(axis=1) @ up_3
        bins = np.floor(height / (camera_height / 30.0)).astype(np.int64)
        _, inverse = np.unique(bins, return_inverse=True)
        per_bin = np.bincount(inverse, weights=area)
        keep = per_bin[inverse] >= FLOOR_SHARE * per_bin.max()
        return Floor(upward[keep], area[keep] / area[keep].sum())

    def around(self, caster: Caster, centre: np.ndarray, radius: float) -> Floor:
        """The faces that may hold a point within `radius` of `centre` (centroid distance minus the face's
        extent): sampling them instead of the whole building keeps targets near view 0 cheap to find, and
        uniform over the same region (points outside are still refused by distance)."""
        tri = caster.mesh.vertices_V3[caster.mesh.faces_F3[self.faces]]
        centroid = tri.mean(axis=1)
        extent = np.linalg.norm(tri - centroid[:, None], axis=2).max(axis=1)
        near = np.linalg.norm(centroid - centre, axis=1) - extent <= radius
        if not near.any():
            return self
        return Floor(self.faces[near], self.weights[near] / self.weights[near].sum())

    def sample(self, caster: Caster, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` points uniformly (by area) on the floor: `N3`."""
        faces = caster.mesh.faces_F3[rng.choice(self.faces, size=n, p=self.weights)]
        tri = caster.mesh.vertices_V3[faces]
        a, b = rng.random((2, n, 1))
        flip = a + b > 1
        a, b = np.where(flip, 1 - a, a), np.where(flip, 1 - b, b)
        return tri[:, 0] + a * (tri[:, 1] - tri[:, 0]) + b * (tri[:, 2] - tri[:, 0])


@dataclass
class ViewpointSampler:
    """Draws accepted camera positions; `rejected` counts the reason of every refused candidate."""

    caster: Caster
    up: np.ndarray
    settings: ViewpointSettings
    rng: np.random.Generator
    rejected: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.floor = Floor.of(self.caster, self.up, self.settings.camera_height)
        import torch

        from panowan.data.render.raycast import world_directions

        probe_pose = Pose(
            torch.from_numpy(upright_rotation(self.up, 0.0)), torch.zeros(3, dtype=torch.float64)
        )
        self.probe_dirs = np.concatenate(
            [world_directions(probe_pose, PROBE_H, 2 * PROBE_H), [-self.up, self.up]]
        )
        elevation = np.degrees(np.arcsin(np.clip(self.probe_dirs[:-2] @ self.up, -1, 1)))
        self.horizon = (elevation > 0) & (elevation <= HORIZON_DEG)

    def check(self, position: np.ndarray, view0: np.ndarray | None) -> str | None:
        """The reason `position` is refused, or None when it is a valid viewpoint."""
        s = self.settings
        if view0 is not None:
            gap = float(np.linalg.norm(position - view0))
            if not s.min_distance <= gap <= s.max_distance:
                return "distance from view 0"
            sight = self.caster.cast(view0[None], ((position - view0) / max(gap, 1e-12))[None])
            if sight.t[0] < gap - 1e-6:
                return "not in sight of view 0"
        hits = self.caster.cast(position[None], self.probe_dirs)
        t_down = hits.t[-2]
        if not abs(t_down - s.camera_height) <= 0.05 * s.camera_height:
            return "floor not right below at the camera height"
        if hits.t[hits.hit].min() < s.clearance:
            return "closer than the clearance to a surface"
        escaped = ~hits.hit[:-2] | (hits.t[:-2] > s.max_range)
        if escaped.mean() > s.max_escape:
            return "too many rays escape (outside the scan?)"
        back = self.caster.backfacing(hits, self.probe_dirs)
        if back[hits.hit].mean() > MAX_BACKFACING:
            return "sees the back of faces (inside an object or outside the scan)"
        walls = (hits.hit & ~back & (hits.t <= s.max_range))[:-2][self.horizon]
        if walls.mean() < MIN_WALLS:
            return "no walls around just above the horizon (outside the scan?)"
        return None

    def draw(self, view0: np.ndarray | None, budget: int) -> tuple[np.ndarray | None, int]:
        """(an accepted camera position or None, candidates tried), at most `budget` candidates."""
        lift = self.settings.camera_height * self.up
        floor = self.floor
        if view0 is not None:  # floor points whose camera can be max_distance from view 0's camera
            floor = self.floor.around(self.caster, view0 - lift, self.settings.max_distance)
        tried = 0
        while tried < budget:
            for point in floor.sample(self.caster, self.rng, min(256, budget - tried)):
                tried += 1
                reason = self.check(point + lift, view0)
                if reason is None:
                    return point + lift, tried
                self.rejected[reason] += 1
        return None, tried


def _accept_render(view: View, settings: ViewpointSettings) -> str | None:
    if view.escaped_fraction > settings.max_escape:
        return "rendered view: too many rays escape"
    if view.min_range < settings.clearance:
        return "rendered view: closer than the clearance"
    return None


def sample_views(caster: Caster, up_3: np.ndarray, settings: ViewpointSettings, num_views: int,
                 rng: np.random.Generator, size: tuple[int, int], supersample: int = 1,
                 on_view=None) -> tuple[list[tuple[Pose, View]], Counter]:  # fmt: skip
    """`num_views` accepted (pose, rendered view) pairs and the rejection counts. Raises NoFreeSpace."""
    import torch

    settings.validate()
    sampler = ViewpointSampler(caster, up_3, settings, rng)
    left = settings.max_attempts
    per_view = max(1, settings.max_attempts // (RESTARTS + 1))
    for _ in range(RESTARTS + 1):  # a view 0 with no target around it (a closet) is drawn again
        views: list[tuple[Pose, View]] = []
        while len(views) < num_views and left > 0:
            view0 = views[0][0].position.numpy() if views else None
            position, tried = sampler.draw(view0, min(per_view, left))
            left -= tried
            if position is None:
                break
            rotation = torch.from_numpy(upright_rotation(up_3, float(rng.uniform(-math.pi, math.pi))))
            pose = Pose(rotation, torch.from_numpy(position))
            view = render_view(caster, pose, *size, supersample=supersample)
            if (reason := _accept_render(view, settings)) is not None:
                sampler.rejected[reason] += 1
                continue
            views.append((pose, view))
            if on_view:
                on_view()
        if len(views) == num_views:
            return views, sampler.rejected
        if left <= 0:
            break
    reasons = ", ".join(f"{n} {r}" for r, n in sampler.rejected.most_common())
    raise NoFreeSpace(
        f"{caster.mesh.path}: no free space for {num_views} views after {settings.max_attempts - left} candidates "
        f"(camera height {settings.camera_height}, clearance {settings.clearance}, targets "
        f"{settings.min_distance}-{settings.max_distance} from view 0; refused: {reasons or 'none'})"
    )
