"""The room's shell (floor, ceiling, walls) fitted to view 0's RGB-D, and a fill of a target view's holes from it.

Most of what view 0 does not see in a target view is the shell behind furniture (83% of the hole pixels of the hard
synthetic rooms, `benchmarks/hole_oracles.py`), and a plane fitted to what view 0 does see of it knows where that
shell lies: which surface a hole pixel shows and at what depth. The membrane fills blend every side of a hole.

Conventions (those of the data, NOTES.md): world frame with y vertical and pointing down (upright panoramas), so
the floor is the largest y and the ceiling the smallest. Walls are vertical planes x = c or z = c of the world
frame (Manhattan and aligned with the world axes, as the synthetic rooms are; a scan whose walls are not needs its
yaw aligned first).

1. `fit_room_shell`: floor and ceiling heights from the extremes of view 0's points; wall candidates from the
   peaks of the x (z) coordinates of points whose normal lies along x (z) near the ceiling (furniture does not
   reach it), kept if their support spans half the room's height. Each wall keeps a grid of cells (`CELL` metres)
   over its extent that view 0 sees *through* (a door, the open side of an L): the plane is absent there.
2. `cast_room_shell`: every ray meets the nearest surface of that shell (label and range).
3. `room_shell_fill`: the known pixels get the label of the surface they lie on (or none: furniture), the hole
   pixels the label the cast gives; each hole pixel of a surface is filled by the ERP membrane with Dirichlet
   values at the known pixels of that same surface only (`data.depth_fill.steered_membrane`). A hole pixel may
   instead show a hidden side of furniture, so the result is mixed with the harmonic fill by p, the membrane of
   the known pixels' "on the shell" indicator, and p is 0 where the depth-steered fill's range is below `IN_FRONT`
   times the shell's (the fill sees something in front of it); the range likewise, from the cast range where it
   is also under twice the depth-steered one (a wrong plane is then ignored).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from panowan.data.depth_fill import fill_depth_from_background, steered_membrane
from panowan.data.inpaint import cast_like, harmonic_fill
from panowan.geometry.erp import erp_directions_N3

CELL = 0.05
"""Side (m) of the see-through cells of a wall."""
ON_PLANE = 0.03
"""A point within this distance (m) of a surface lies on it."""
IN_FRONT = 0.8
"""A hole pixel whose depth-steered range is below this fraction of the shell's range is taken to show furniture."""
FLOOR, CEILING, FURNITURE = 0, 1, -1
"""Surface labels: floor, ceiling, wall k is 2 + k, and FURNITURE for a known point on no surface of the shell."""


@dataclass(frozen=True)
class Wall:
    """The plane `axis` (0: x, 2: z) = `offset`, between `lo` and `hi` along the other horizontal axis;
    `see_through[i, j]` is True where view 0 sees through the cell at (`q0` + i CELL, `y0` + j CELL)."""

    axis: int
    offset: float
    lo: float
    hi: float
    q0: float
    y0: float
    see_through: np.ndarray


@dataclass(frozen=True)
class RoomShell:
    floor_y: float
    ceiling_y: float
    walls: tuple[Wall, ...]


def _rays(pose, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(camera centre `3`, unit world ray of every pixel `N3`, row-major) of an ERP view with `pose` (world ->
    camera `geometry.pose.Pose`): d_world = R^T d_cam (`geometry.pointcloud`'s convention), float64."""
    rot = pose.rotation.double().numpy()
    return pose.position.double().numpy(), erp_directions_N3(height, width) @ rot


def _normals(points_HW3: np.ndarray) -> np.ndarray:
    """Unit normals `N3` from the cross product of the column (wrapped) and row differences."""
    dx = np.roll(points_HW3, -1, 1) - np.roll(points_HW3, 1, 1)
    dy = np.zeros_like(points_HW3)
    dy[1:-1] = points_HW3[2:] - points_HW3[:-2]
    n = np.cross(dx, dy)
    return (n / (np.linalg.norm(n, axis=-1, keepdims=True) + 1e-12)).reshape(-1, 3)


def _peaks(values: np.ndarray, bin_m: float = 0.02, min_count: int = 15, apart: int = 5) -> list[float]:
    """Histogram peaks of `values` (local maxima with `min_count`), strongest first, `apart` bins from each other."""
    bins, counts = np.unique(np.round(values / bin_m).astype(np.int64), return_counts=True)
    count = dict(zip(bins.tolist(), counts.tolist(), strict=True))
    peaks = [
        b for b, k in count.items() if k >= min_count and k >= count.get(b - 1, 0) and k > count.get(b + 1, 0)
    ]
    kept: list[int] = []
    for b in sorted(peaks, key=lambda b: -count[b]):
        if all(abs(b - q) > apart for q in kept):
            kept.append(b)
    return [b * bin_m for b in kept]


def _view0_range_at(
    points_N3: np.ndarray, origin_3, rot_33, range_HW: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(view 0's range in the direction of each point, the point's distance from view 0); nearest pixel."""
    import torch

    from panowan.geometry.erp import directions_to_pixels

    h, w = range_HW.shape
    d = (points_N3 - origin_3) @ rot_33.T  # camera frame of view 0
    uv = np.rint(directions_to_pixels(torch.from_numpy(d), h, w).numpy()).astype(np.int64)
    return range_HW[np.clip(uv[:, 1], 0, h - 1), uv[:, 0] % w], np.linalg.norm(d, axis=-1)


def _wall(axis: int, offset: float, support_N3: np.ndarray, shell_y: tuple[float, float], view0) -> Wall:
    other = 2 - axis
    lo, hi = float(support_N3[:, other].min()), float(support_N3[:, other].max())
    qs = np.arange(lo - 0.3, hi + 0.3 + 1e-9, CELL)
    ys = np.arange(shell_y[1], shell_y[0] + 1e-9, CELL)
    q, y = np.meshgrid(qs, ys, indexing="ij")
    cells = np.zeros((*q.shape, 3))
    cells[..., axis], cells[..., other], cells[..., 1] = offset, q, y
    seen, dist = _view0_range_at(cells.reshape(-1, 3), *view0)
    through = (seen > dist * 1.03 + 0.05).reshape(q.shape)  # view 0 saw something beyond the plane there
    return Wall(axis, offset, lo, hi, float(qs[0]), float(ys[0]), through)


def fit_room_shell(range_HW: np.ndarray, pose) -> RoomShell:
    """Fit the shell to view 0 (range `H,W` metres, 0 where unknown; its `Pose`); module docstring, step 1."""
    h, w = range_HW.shape
    origin, dirs = _rays(pose, h, w)
    points = origin + dirs * range_HW.reshape(-1, 1).astype(np.float64)
    valid = np.isfinite(points).all(-1) & (range_HW.reshape(-1) > 0)
    if not valid.any():
        raise ValueError("fit_room_shell: view 0 has no pixel with a valid range")
    normals = _normals(points.reshape(h, w, 3))[valid]
    points = points[valid]
    y = points[:, 1]
    floor, ceiling = float(np.quantile(y, 0.999)), float(np.quantile(y, 0.001))
    upright = (y < floor - 0.05) & (y > ceiling + 0.05)
    near_top = upright & (y < ceiling + 0.25)
    view0 = (origin, pose.rotation.double().numpy(), range_HW.astype(np.float64))
    walls = []
    for axis in (0, 2):
        for offset in _peaks(points[near_top & (np.abs(normals[:, axis]) > 0.95), axis]):
            support = points[upright & (np.abs(points[:, axis] - offset) < ON_PLANE)]
            if support[:, 1].max() - support[:, 1].min() >= 0.5 * (floor - ceiling):
                walls.append(
                    _wall(axis, float(np.median(support[:, axis])), support, (floor, ceiling), view0)
                )
    return RoomShell(floor, ceiling, tuple(walls))


def fit_room(info) -> RoomShell:
    """The shell of a validated room (`data.dataset.validate_room`), fitted to view 0's range file in the world
    frame of its pose."""
    from panowan.data.io import read_depth

    range_HW = read_depth(info.paths.ref_depth, info.size, info.paths.root)
    return fit_room_shell(np.where(np.isfinite(range_HW), range_HW, 0.0), info.poses[info.views.index(0)])


def surface_labels(points_N3: np.ndarray, shell: RoomShell) -> np.ndarray:
    """The shell surface each point lies on (labels above), FURNITURE for none."""
    label = np.full(len(points_N3), FURNITURE, np.int64)
    for k, wall in enumerate(shell.walls):
        other = 2 - wall.axis
        on = np.abs(points_N3[:, wall.axis] - wall.offset) < ON_PLANE
        label[on & (points_N3[:, other] > wall.lo - 0.1) & (points_N3[:, other] < wall.hi + 0.1)] = 2 + k
    label[np.abs(points_N3[:, 1] - shell.floor_y) < ON_PLANE] = FLOOR
    label[np.abs(points_N3[:, 1] - shell.ceiling_y) < ON_PLANE] = CEILING
    return label


def cast_room_shell(
    origin_3: np.ndarray, dirs_N3: np.ndarray, shell: RoomShell
) -> tuple[np.ndarray, np.ndarray]:
    """(label `N`, range `N`) of the nearest shell surface along each world ray; -1 and inf where none is met."""
    n = len(dirs_N3)
    best, label = np.full(n, np.inf), np.full(n, -1, np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        for height, lab in ((shell.floor_y, FLOOR), (shell.ceiling_y, CEILING)):
            t = (height - origin_3[1]) / dirs_N3[:, 1]
            hit = (t > 0) & (t < best)
            best[hit], label[hit] = t[hit], lab
        for k, wall in enumerate(shell.walls):
            other = 2 - wall.axis
            t = (wall.offset - origin_3[wall.axis]) / dirs_N3[:, wall.axis]
            q = np.nan_to_num(origin_3[other] + t * dirs_N3[:, other], posinf=1e9, neginf=-1e9)
            y = np.nan_to_num(origin_3[1] + t * dirs_N3[:, 1], posinf=1e9, neginf=-1e9)
            hit = (t > 0) & (t < best) & (q > wall.lo - 0.3) & (q < wall.hi + 0.3)
            hit &= (y > shell.ceiling_y - 0.05) & (y < shell.floor_y + 0.05)
            i = np.clip(np.round((q - wall.q0) / CELL).astype(np.int64), 0, wall.see_through.shape[0] - 1)
            j = np.clip(np.round((y - wall.y0) / CELL).astype(np.int64), 0, wall.see_through.shape[1] - 1)
            hit &= ~wall.see_through[i, j]
            best[hit], label[hit] = t[hit], 2 + k
    return label, best


def fill_by_label(base_HWC: np.ndarray, known_HW: np.ndarray, label_HW: np.ndarray) -> np.ndarray:
    """Each hole pixel of label l >= 0 by the membrane with Dirichlet values at the known pixels of label l only
    (Neumann at every other neighbour); label < 0, or a part with no known pixel of its label, keeps `base_HWC` (a
    complete float image, whose values a fallback part also reads)."""
    out = base_HWC.astype(np.float64).copy()
    values, hole = out.reshape(known_HW.size, -1), ~known_HW
    flat_label, flat_known = label_HW.reshape(-1), known_HW.reshape(-1)
    for lab in np.unique(label_HW[hole]):
        part = hole & (label_HW == lab)
        if lab < 0 or not (known_HW & (label_HW == lab)).any():
            continue
        solved, _ = steered_membrane(
            values, part, lambda p, flat, lab=lab: flat_known[flat] & (flat_label[flat] == lab)
        )
        out[part] = solved
    return out


@dataclass(frozen=True)
class ShellView:
    """A target view's relation to the room's shell (`shell_view`), every array `H,W`: `label` the surface of each
    pixel (known: the one it lies on, FURNITURE for none; hole: the one its ray meets, -1 for none), `cast_range`
    the range of that surface along the ray (inf for none), `p_shell` the membrane of the known pixels' "on the
    shell" indicator, `in_front` where the depth-steered range lies in front of the shell (furniture likely), and
    the fallbacks `harmonic` (`H,W,3` float64) and `steered` (the depth-steered range)."""

    label: np.ndarray
    cast_range: np.ndarray
    p_shell: np.ndarray
    in_front: np.ndarray
    harmonic: np.ndarray
    steered: np.ndarray

    @property
    def p(self) -> np.ndarray:
        """The weight of the shell's fill at a hole pixel: `p_shell`, and 0 where `in_front`."""
        return self.p_shell * ~self.in_front


def shell_view(
    rgb_HW3: np.ndarray, range_HW: np.ndarray, known_HW: np.ndarray, pose, shell: RoomShell
) -> ShellView:
    """Module docstring, step 3, up to the colours: labels, cast ranges and the shell's weight `p`."""
    hole = ~known_HW
    h, w = known_HW.shape
    origin, dirs = _rays(pose, h, w)
    points = origin + dirs * np.where(known_HW, range_HW, 1.0).reshape(-1, 1)
    cast_label, cast_range = (a.reshape(h, w) for a in cast_room_shell(origin, dirs, shell))
    label = np.where(known_HW, surface_labels(points, shell).reshape(h, w), cast_label)
    harmonic = harmonic_fill(np.where(known_HW[..., None], rgb_HW3, 0).astype(np.float64), hole)
    valid = known_HW & np.isfinite(range_HW) & (range_HW > 0)
    steered, _ = fill_depth_from_background(np.where(valid, range_HW, 1.0), valid)
    # Where the depth-steered fill puts the surface well in front of the shell, furniture is likely: no shell there.
    in_front = ~(steered >= IN_FRONT * np.where(np.isfinite(cast_range), cast_range, 0.0))
    on_shell = np.stack([label >= 0, label < 0], -1).astype(np.float64)
    p_shell = harmonic_fill(np.where(known_HW[..., None], on_shell, 0), hole)[..., 0]
    return ShellView(label, cast_range, p_shell, in_front, harmonic, steered)


def room_shell_fill(rgb_HW3: np.ndarray, range_HW: np.ndarray, known_HW: np.ndarray, pose,
                    shell: RoomShell) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Fill a target view's holes from the room's shell (module docstring, steps 2-3): (rgb in its dtype, range
    float32 metres). `range_HW` is the known pixels' range, `pose` the view's `Pose` (the shell's world frame)."""
    if known_HW.all():
        return rgb_HW3.copy(), range_HW.astype(np.float32)
    sv = shell_view(rgb_HW3, range_HW, known_HW, pose, shell)
    p = sv.p
    rgb = p[..., None] * fill_by_label(sv.harmonic, known_HW, sv.label) + (1 - p[..., None]) * sv.harmonic
    depth = np.where(known_HW, range_HW, shell_range(sv))
    return cast_like(rgb, rgb_HW3.dtype), depth.astype(np.float32)


def shell_range(sv: ShellView) -> np.ndarray:
    """The fill's range of every pixel `H,W` (the hole's is what counts): the shell's cast range mixed with the
    depth-steered one by `p` where the cast is plausible (finite, under twice the steered range, not in front)."""
    plausible = np.isfinite(sv.cast_range) & (sv.cast_range < 2 * sv.steered) & ~sv.in_front
    mixed = sv.p * np.where(plausible, sv.cast_range, 0) + (1 - sv.p) * sv.steered
    return np.where(plausible, mixed, sv.steered)
