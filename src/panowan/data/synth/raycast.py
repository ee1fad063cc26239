"""Analytic ray casting of a `Scene`: exact ranges (float64) and Lambertian shading of ERP views."""

from __future__ import annotations

import numpy as np

from panowan.data.synth.scene import _EPS, Box, Cylinder, Scene, Sphere, shade_material
from panowan.geometry.erp import erp_directions_N3
from panowan.geometry.pose import Pose


# ---------------------------------------------------------------------------------------- intersections
def _safe(d: np.ndarray) -> np.ndarray:
    """Direction components with exact zeros replaced by a tiny same-signed value (slab division)."""
    return np.where(np.abs(d) < 1e-300, 1e-300, d)


def _slabs(o: np.ndarray, inv_d: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Per-ray slab intervals of an axis-aligned box: (t_near, near_axis, t_far, far_axis)."""
    t0 = (lo - o) * inv_d
    t1 = (hi - o) * inv_d
    tmin, tmax = np.minimum(t0, t1), np.maximum(t0, t1)
    near_axis, far_axis = tmin.argmax(axis=1), tmax.argmin(axis=1)
    rows = np.arange(len(inv_d))
    return tmin[rows, near_axis], near_axis, tmax[rows, far_axis], far_axis


def _axis_normal(axis: np.ndarray, d: np.ndarray, sign: float) -> np.ndarray:
    """Unit normals along `axis` per ray, pointing against (sign=-1) or with (sign=+1) the ray."""
    n = np.zeros_like(d)
    rows = np.arange(len(d))
    n[rows, axis] = sign * np.sign(d[rows, axis])
    return n


def _hit_room(scene: Scene, o: np.ndarray, d: np.ndarray, inv_d: np.ndarray):
    """Exit distance from the union of room boxes (ray starts inside), inward normal, surface id.

    Surface ids: 0 wall, 1 floor, 2 ceiling. The exit is the end of the chain of box intervals that
    contains t = 0 (two passes suffice for two boxes).
    """
    intervals = [_slabs(o, inv_d, lo, hi) for lo, hi in scene.room_boxes]
    n = len(d)
    t_exit = np.full(n, -np.inf)
    axis = np.zeros(n, dtype=np.int64)
    inside = [np.all((o >= lo - _EPS) & (o <= hi + _EPS)) for lo, hi in scene.room_boxes]
    assert any(inside), "camera outside the room"
    for _ in range(len(intervals)):
        for (t_near, _, t_far, far_axis), inside_b in zip(intervals, inside):
            reach = np.ones(n, bool) if inside_b else (t_near <= t_exit + 1e-7)
            take = reach & (t_far > t_exit)
            t_exit = np.where(take, t_far, t_exit)
            axis = np.where(take, far_axis, axis)
    normal = _axis_normal(axis, d, -1.0)
    rows = np.arange(n)
    surface = np.where(axis == 1, np.where(d[rows, 1] > 0, 1, 2), 0)
    return t_exit, normal, surface


def _hit_box(lo: np.ndarray, hi: np.ndarray, o: np.ndarray, inv_cols: list[np.ndarray]) -> np.ndarray:
    """`_hit_object` of a box, one contiguous axis column at a time (the same floats as the row-wise
    slab test, several times faster than reducing N x 3 arrays along their short axis)."""
    t_near = t_far = None
    for i in range(3):
        t0, t1 = (lo[i] - o[i]) * inv_cols[i], (hi[i] - o[i]) * inv_cols[i]
        near, far = np.minimum(t0, t1), np.maximum(t0, t1)
        t_near = near if t_near is None else np.maximum(t_near, near)
        t_far = far if t_far is None else np.minimum(t_far, far)
    return np.where((t_near <= t_far) & (t_near > _EPS), t_near, np.inf)


def _hit_object(obj, o: np.ndarray, d: np.ndarray, inv_d: np.ndarray) -> np.ndarray:
    """Distance `t_N` to the first hit in front of the camera; inf where missed."""
    inf = np.inf
    if isinstance(obj, Box):
        return _hit_box(obj.lo, obj.hi, o, [np.ascontiguousarray(inv_d[:, i]) for i in range(3)])
    if isinstance(obj, Sphere):
        oc = o - obj.center
        b = d @ oc
        disc = b * b - (oc @ oc - obj.radius**2)
        t = -b - np.sqrt(np.maximum(disc, 0))
        return np.where((disc > 0) & (t > _EPS), t, inf)
    assert isinstance(obj, Cylinder)
    ox, oz = o[0] - obj.center_xz[0], o[2] - obj.center_xz[1]
    a = d[:, 0] ** 2 + d[:, 2] ** 2
    b = d[:, 0] * ox + d[:, 2] * oz
    c = ox * ox + oz * oz - obj.radius**2
    disc = b * b - a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = (-b - np.sqrt(np.maximum(disc, 0))) / a
    y_side = o[1] + t_side * d[:, 1]
    t_best = np.where(
        (disc > 0) & (a > 1e-18) & (t_side > _EPS) & (y_side >= obj.y0) & (y_side <= obj.y1), t_side, inf
    )
    for y_cap in (obj.y0, obj.y1):
        t_cap = (y_cap - o[1]) * inv_d[:, 1]
        px, pz = o[0] + t_cap * d[:, 0] - obj.center_xz[0], o[2] + t_cap * d[:, 2] - obj.center_xz[1]
        t_best = np.where(
            (t_cap > _EPS) & (px * px + pz * pz <= obj.radius**2) & (t_cap < t_best), t_cap, t_best
        )
    return t_best


def _object_normal(obj, p_M3: np.ndarray) -> np.ndarray:
    """Outward unit normals `M x 3` at points `p_M3` on the surface of `obj`."""
    if isinstance(obj, Sphere):
        return (p_M3 - obj.center) / obj.radius
    if isinstance(obj, Box):
        gaps = np.concatenate((np.abs(p_M3 - obj.lo), np.abs(p_M3 - obj.hi)), axis=1)  # nearest face wins
        face = gaps.argmin(axis=1)
        n = np.zeros_like(p_M3)
        n[np.arange(len(p_M3)), face % 3] = np.where(face < 3, -1.0, 1.0)
        return n
    radial = (
        np.stack((p_M3[:, 0] - obj.center_xz[0], np.zeros(len(p_M3)), p_M3[:, 2] - obj.center_xz[1]), 1)
        / obj.radius
    )
    tol = 1e-9 * max(1.0, abs(obj.y0), abs(obj.y1))
    cap = np.where(
        np.abs(p_M3[:, 1] - obj.y0) <= tol, -1.0, np.where(np.abs(p_M3[:, 1] - obj.y1) <= tol, 1.0, 0.0)
    )
    return np.where(cap[:, None] != 0, np.stack((np.zeros_like(cap), cap, np.zeros_like(cap)), 1), radial)


def cast_rays(scene: Scene, origin_3: np.ndarray, dirs_N3: np.ndarray, objects: bool = True):
    """Trace unit world rays from one origin: (t_N, normal_N3, material_id_N), ids 0-2 room, 3+k object k.
    `objects=False` traces the room's shell alone (walls, floor, ceiling), as if it were empty."""
    d = dirs_N3
    inv_d = 1.0 / _safe(d)
    t, normal, mat = _hit_room(scene, origin_3, d, inv_d)
    if not objects:
        return t, normal, mat
    inv_cols = [np.ascontiguousarray(inv_d[:, i]) for i in range(3)]
    for k, obj in enumerate(scene.objects):
        if isinstance(obj, Box):
            t_obj = _hit_box(obj.lo, obj.hi, origin_3, inv_cols)
        else:
            t_obj = _hit_object(obj, origin_3, d, inv_d)
        closer = t_obj < t
        t = np.where(closer, t_obj, t)
        mat = np.where(closer, 3 + k, mat)
    for k, obj in enumerate(scene.objects):
        sel = mat == 3 + k
        if sel.any():
            normal[sel] = _object_normal(obj, origin_3 + t[sel, None] * d[sel])
    return t, normal, mat


def albedo_and_light(scene: Scene, points_N3: np.ndarray, normal_N3: np.ndarray, mat_N: np.ndarray):
    """(albedo `N x 3`, light `N x 3`, float32) at surface points with their normals and material ids (as from
    `cast_rays`): the two factors of a rendered pixel's linear colour (Lambertian: no view dependence, no shadows)."""
    albedo = np.empty(points_N3.shape, np.float32)
    materials = [scene.wall, scene.floor, scene.ceiling] + [o.material for o in scene.objects]
    for k, m in enumerate(materials):
        sel = mat_N == k
        if sel.any():
            albedo[sel] = shade_material(m, points_N3[sel], normal_N3[sel])
    points32, normal32 = points_N3.astype(np.float32), normal_N3.astype(np.float32)
    light = np.full(len(points_N3), scene.ambient, np.float32)[:, None].repeat(3, 1)
    for lt in scene.lights:
        to_light = lt.position.astype(np.float32) - points32
        dist = np.sqrt(np.einsum("ij,ij->i", to_light, to_light))
        cos = np.maximum(np.einsum("ij,ij->i", normal32, to_light) / np.maximum(dist, 1e-6), 0.0)
        light += (cos / (1 + (dist / lt.falloff) ** 2))[:, None] * lt.intensity.astype(np.float32)
    return albedo, light


def render_view(scene: Scene, pose: Pose, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Render an ERP view: (`rgb_HW3` uint8, `range_HW` float32 metres along each pixel's unit ray).

    `pose` is world->camera in the scene's coordinates (the poses written to pose_XXXX.json).
    Geometry is float64; shading float32 (it only has to be good to 8 bits).
    """
    rotation = pose.rotation.detach().cpu().double().numpy()
    origin = pose.position.detach().cpu().double().numpy()
    dirs = erp_directions_N3(height, width) @ rotation  # d_world = R^T d_cam, row-vector form
    t, normal, mat = cast_rays(scene, origin, dirs)
    assert np.all(np.isfinite(t)) and np.all(t > 0), "a ray left the closed room"
    albedo, light = albedo_and_light(scene, origin + t[:, None] * dirs, normal, mat)
    linear = np.clip(albedo * light, 0, 1)
    rgb = np.round(255 * linear ** np.float32(1 / 2.2)).astype(np.uint8)  # display gamma
    return rgb.reshape(height, width, 3), t.astype(np.float32).reshape(height, width)
