"""Procedural rooms rendered exactly by analytic ray casting, written in the seed layout (NOTES.md).

A scene is a closed room (one axis-aligned box, or two overlapping boxes forming an L) with furniture
(axis-aligned boxes, vertical capped cylinders, spheres), solid procedural textures (checker, stripes,
value noise, wood rings; evaluated at the 3D hit point, so no UV mapping is needed), and Lambertian
shading from a few point lights plus ambient (no shadows). Every ray of an ERP view is cast in
vectorised float64 numpy; the range written is the exact distance along the unit ray.

Coordinates: world axes like the camera's (x right, y **down**, z forward) with view 0's camera centre at
the origin, so the pose JSON positions are already relative to view 0. Cameras only yaw: the
world->camera rotation of view i is `yaw_matrix(yaw_i)`. The floor is at y = +camera height of view 0.

`make_scene(seed, num_views)` is deterministic in `seed`; `render_view(scene, pose, H, W)` renders any pose.
"""

from __future__ import annotations

import colorsys
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from panowan.data.layout import RoomPaths
from panowan.geometry.pose import Pose, pose_to_json, yaw_matrix

CLEARANCE = 0.3
"""Minimum distance (m) from a camera centre to any object or wall."""
_EPS = 1e-9


# ----------------------------------------------------------------------------------------- scene types
@dataclass(frozen=True)
class Material:
    """A solid texture: `kind` in plain | checker | stripes | noise | wood; colours are linear RGB in [0, 1]."""

    kind: str
    color_a: np.ndarray
    color_b: np.ndarray
    scale: float = 0.5
    """Cell size / stripe period / ring spacing / noise wavelength in metres."""
    direction: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0, 0.0]))
    """Stripe normal, or wood ring axis (unit vector)."""
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3))
    seed: int = 0
    """Seed of the value-noise lattice."""


@dataclass(frozen=True)
class Box:
    lo: np.ndarray
    hi: np.ndarray
    material: Material
    name: str = "box"


@dataclass(frozen=True)
class Cylinder:
    """Vertical cylinder (axis along y) with caps at y0 < y1."""

    center_xz: np.ndarray
    radius: float
    y0: float
    y1: float
    material: Material
    name: str = "cylinder"


@dataclass(frozen=True)
class Sphere:
    center: np.ndarray
    radius: float
    material: Material
    name: str = "sphere"


@dataclass(frozen=True)
class Light:
    position: np.ndarray
    intensity: np.ndarray
    """RGB intensity; irradiance falls off as 1 / (1 + (d / falloff)^2)."""
    falloff: float = 4.0


@dataclass(frozen=True)
class Scene:
    """A room: `room_boxes` [(lo_3, hi_3)] whose union is the free space (all share the y range)."""

    room_boxes: list[tuple[np.ndarray, np.ndarray]]
    wall: Material
    floor: Material
    ceiling: Material
    objects: list[Box | Cylinder | Sphere]
    lights: list[Light]
    ambient: float
    poses: list[Pose]
    description: str = ""


# ---------------------------------------------------------------------------------------------- textures
def _hash01(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic lattice hash of integer coordinates -> floats in [0, 1)."""
    with np.errstate(over="ignore"):
        h = (ix.astype(np.uint64) * np.uint64(0x9E3779B185EBCA87)) ^ (
            iy.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        )
        h ^= iz.astype(np.uint64) * np.uint64(0x165667B19E3779F9) ^ np.uint64(
            seed * 0x27D4EB2F165667C5 % 2**64
        )
        h ^= h >> np.uint64(31)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(29)
    return (h >> np.uint64(11)).astype(np.float64) / float(2**53)


def value_noise(p_N3: np.ndarray, seed: int) -> np.ndarray:
    """Trilinearly interpolated lattice noise (smoothstep weights) in [0, 1], unit wavelength."""
    base = np.floor(p_N3)
    f = p_N3 - base
    w = f * f * (3 - 2 * f)
    i = base.astype(np.int64)
    out = np.zeros(len(p_N3))
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                weight = (
                    (w[:, 0] if dx else 1 - w[:, 0])
                    * (w[:, 1] if dy else 1 - w[:, 1])
                    * (w[:, 2] if dz else 1 - w[:, 2])
                )
                out += weight * _hash01(i[:, 0] + dx, i[:, 1] + dy, i[:, 2] + dz, seed)
    return out


def shade_material(m: Material, p_N3: np.ndarray) -> np.ndarray:
    """Albedo `N x 3` of material `m` at world points `p_N3`."""
    q = (p_N3 + m.offset) / m.scale
    if m.kind == "plain":
        t = np.zeros(len(q))
    elif m.kind == "checker":
        t = (np.floor(q).astype(np.int64).sum(axis=1) % 2).astype(np.float64)
    elif m.kind == "stripes":
        t = (np.floor(q @ m.direction).astype(np.int64) % 2).astype(np.float64)
    elif m.kind == "noise":
        t = 0.65 * value_noise(q, m.seed) + 0.35 * value_noise(q * 3.1, m.seed + 1)
    elif m.kind == "wood":
        radial = q - np.outer(q @ m.direction, m.direction)
        r = np.linalg.norm(radial, axis=1) + 0.6 * value_noise(q * 2.0, m.seed)
        t = (r - np.floor(r)) ** 3
    else:
        raise ValueError(f"unknown material kind {m.kind!r}")
    return m.color_a + t[:, None] * (m.color_b - m.color_a)


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


def _hit_object(obj, o: np.ndarray, d: np.ndarray, inv_d: np.ndarray) -> np.ndarray:
    """Distance `t_N` to the first hit in front of the camera; inf where missed."""
    inf = np.inf
    if isinstance(obj, Box):
        t0, t1 = (obj.lo - o) * inv_d, (obj.hi - o) * inv_d
        t_near, t_far = np.minimum(t0, t1).max(axis=1), np.maximum(t0, t1).min(axis=1)
        return np.where((t_near <= t_far) & (t_near > _EPS), t_near, inf)
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


@lru_cache(maxsize=8)
def _directions(height: int, width: int) -> np.ndarray:
    from panowan.geometry.erp import erp_directions

    return erp_directions(height, width, dtype=__import__("torch").float64).numpy().reshape(-1, 3)


def cast_rays(scene: Scene, origin_3: np.ndarray, dirs_N3: np.ndarray):
    """Trace unit world rays from one origin: (t_N, normal_N3, material_id_N), ids 0-2 room, 3+k object k."""
    d = dirs_N3
    inv_d = 1.0 / _safe(d)
    t, normal, mat = _hit_room(scene, origin_3, d, inv_d)
    for k, obj in enumerate(scene.objects):
        t_obj = _hit_object(obj, origin_3, d, inv_d)
        closer = t_obj < t
        t = np.where(closer, t_obj, t)
        mat = np.where(closer, 3 + k, mat)
    for k, obj in enumerate(scene.objects):
        sel = mat == 3 + k
        if sel.any():
            normal[sel] = _object_normal(obj, origin_3 + t[sel, None] * d[sel])
    return t, normal, mat


def render_view(scene: Scene, pose: Pose, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Render an ERP view: (`rgb_HW3` uint8, `range_HW` float32 metres along each pixel's unit ray).

    `pose` is world->camera in the scene's coordinates (the poses written to pose_XXXX.json).
    Geometry is float64; shading float32 (it only has to be good to 8 bits).
    """
    rotation = pose.rotation.detach().cpu().double().numpy()
    origin = pose.position.detach().cpu().double().numpy()
    dirs = _directions(height, width) @ rotation  # d_world = R^T d_cam, row-vector form
    t, normal, mat = cast_rays(scene, origin, dirs)
    assert np.all(np.isfinite(t)) and np.all(t > 0), "a ray left the closed room"
    points = origin + t[:, None] * dirs
    albedo = np.empty(points.shape, np.float32)
    materials = [scene.wall, scene.floor, scene.ceiling] + [o.material for o in scene.objects]
    for k, m in enumerate(materials):
        sel = mat == k
        if sel.any():
            albedo[sel] = shade_material(m, points[sel])
    points32, normal32 = points.astype(np.float32), normal.astype(np.float32)
    light = np.full(len(points), scene.ambient, np.float32)[:, None].repeat(3, 1)
    for lt in scene.lights:
        to_light = lt.position.astype(np.float32) - points32
        dist = np.sqrt(np.einsum("ij,ij->i", to_light, to_light))
        cos = np.maximum(np.einsum("ij,ij->i", normal32, to_light) / np.maximum(dist, 1e-6), 0.0)
        light += (cos / (1 + (dist / lt.falloff) ** 2))[:, None] * lt.intensity.astype(np.float32)
    linear = np.clip(albedo * light, 0, 1)
    rgb = np.round(255 * linear ** np.float32(1 / 2.2)).astype(np.uint8)  # display gamma
    return rgb.reshape(height, width, 3), t.astype(np.float32).reshape(height, width)


# -------------------------------------------------------------------------------------- scene generation
_HUE_NAMES = (
    (15, "red"),
    (40, "orange"),
    (65, "yellow"),
    (160, "green"),
    (200, "teal"),
    (255, "blue"),
    (290, "purple"),
    (335, "pink"),
    (360, "red"),
)
_TEXTURE_WORDS = {
    "plain": "plain",
    "checker": "checkered",
    "stripes": "striped",
    "noise": "mottled",
    "wood": "wood-grain",
}


def color_name(rgb: np.ndarray) -> str:
    """A rough English colour name of a linear RGB colour (for prompts)."""
    hue, light, sat = colorsys.rgb_to_hls(*[float(x) for x in rgb])
    if sat < 0.18 or light < 0.12 or light > 0.9:
        return "white" if light > 0.75 else "black" if light < 0.2 else "grey"
    name = next(n for limit, n in _HUE_NAMES if hue * 360 <= limit)
    return ("light " if light > 0.65 else "dark " if light < 0.3 else "") + name


def _random_color(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*sat), rng.uniform(*val)))


def _random_material(rng: np.random.Generator, kinds: list[str], sat, val, scale=(0.15, 0.8)) -> Material:
    kind = str(rng.choice(kinds))
    a = _random_color(rng, sat, val)
    b = np.clip(a * rng.uniform(0.45, 0.8) + rng.uniform(-0.08, 0.08, 3), 0, 1)
    if kind == "wood":
        a = np.array(
            colorsys.hsv_to_rgb(rng.uniform(0.05, 0.11), rng.uniform(0.4, 0.7), rng.uniform(0.45, 0.8))
        )
        b = a * 0.55
    direction = rng.normal(size=3)
    if kind == "stripes":
        direction = [
            np.array([0.0, 1.0, 0.0]),
            np.array([1.0, 0.0, 1.0]) / math.sqrt(2),
            np.array([1.0, 0.3, -1.0]),
        ][rng.integers(3)]
    return Material(kind, a, b, float(rng.uniform(*scale)), direction / np.linalg.norm(direction),
                    rng.uniform(0, 10, 3), int(rng.integers(2**31)))  # fmt: skip


def _distance_to_objects(objects: list, p: np.ndarray) -> float:
    best = np.inf
    for obj in objects:
        if isinstance(obj, Box):
            dist = np.linalg.norm(np.maximum(np.maximum(obj.lo - p, p - obj.hi), 0))
        elif isinstance(obj, Sphere):
            dist = np.linalg.norm(p - obj.center) - obj.radius
        else:
            radial = max(math.hypot(p[0] - obj.center_xz[0], p[2] - obj.center_xz[1]) - obj.radius, 0.0)
            dist = math.hypot(radial, max(obj.y0 - p[1], 0.0, p[1] - obj.y1))
        best = min(best, float(dist))
    return best


def _room_clearance(room_boxes, p: np.ndarray) -> float:
    """Distance to the walls/floor/ceiling (conservative for the L junction: the best single box)."""
    return max(float(np.min(np.concatenate((p - lo, hi - p)))) for lo, hi in room_boxes)


def is_free(scene_like, p: np.ndarray, clearance: float = CLEARANCE) -> bool:
    """True if `p` is inside the room and at least `clearance` from every wall and object."""
    boxes, objects = scene_like
    return _room_clearance(boxes, p) >= clearance and _distance_to_objects(objects, p) >= clearance


def _make_room(rng: np.random.Generator):
    height = rng.uniform(2.4, 3.3)
    wx, wz = rng.uniform(3.0, 8.0), rng.uniform(3.0, 8.0)
    boxes = [(np.array([0.0, -height, 0.0]), np.array([wx, 0.0, wz]))]
    shape = "rectangular"
    if rng.uniform() < 0.35:  # an L: a second box overlapping the first along one side
        wx2, wz2 = rng.uniform(1.5, 0.7 * wx), rng.uniform(1.5, 4.0)
        x0 = 0.0 if rng.uniform() < 0.5 else wx - wx2
        boxes.append((np.array([x0, -height, wz - 0.5]), np.array([x0 + wx2, 0.0, wz + wz2])))
        shape = "L-shaped"
    return boxes, shape, height, (wx, wz)


_FURNITURE = (
    ("box", "table", (0.8, 1.8), (0.6, 1.0), (0.7, 0.8)),
    ("box", "cabinet", (0.5, 1.2), (0.4, 0.6), (1.2, 2.0)),
    ("box", "bed", (1.4, 2.0), (1.9, 2.1), (0.4, 0.6)),
    ("box", "low crate", (0.4, 0.8), (0.4, 0.8), (0.3, 0.6)),
    ("cylinder", "round pillar", (0.15, 0.3), None, (None, None)),
    ("cylinder", "round stool", (0.2, 0.35), None, (0.4, 0.7)),
    ("sphere", "ball", (0.15, 0.45), None, None),
)


def _make_objects(rng: np.random.Generator, boxes, height: float, count: int) -> list:
    objects: list = []
    footprints: list[tuple[np.ndarray, np.ndarray]] = []
    kinds = ["plain", "checker", "stripes", "noise", "wood"]
    for _ in range(count):
        kind, name, a, b, h = _FURNITURE[rng.integers(len(_FURNITURE))]
        lo_room, hi_room = boxes[rng.integers(len(boxes))]
        material = _random_material(rng, kinds, (0.35, 0.9), (0.35, 0.95))
        for _try in range(20):
            if kind == "box":
                sx, sz = rng.uniform(*a), rng.uniform(*b)
                if rng.uniform() < 0.5:
                    sx, sz = sz, sx
                half = np.array([sx, 0, sz]) / 2
            else:
                r = rng.uniform(*a)
                half = np.array([r, 0, r])
            span = hi_room - lo_room - 2 * half - 0.1
            if span[0] <= 0 or span[2] <= 0:
                continue
            c = lo_room + 0.05 + half + rng.uniform(0, 1, 3) * span
            flo, fhi = c - half, c + half
            if any(
                np.all(flo[[0, 2]] < f_hi[[0, 2]] + 0.05) and np.all(fhi[[0, 2]] > f_lo[[0, 2]] - 0.05)
                for f_lo, f_hi in footprints
            ):
                continue
            footprints.append((flo, fhi))
            if kind == "box":
                hh = rng.uniform(*h)
                objects.append(
                    Box(np.array([flo[0], -hh, flo[2]]), np.array([fhi[0], 0.0, fhi[2]]), material, name)
                )
            elif kind == "cylinder":
                hh = height if h[0] is None else rng.uniform(*h)
                objects.append(Cylinder(np.array([c[0], c[2]]), float(half[0]), -hh, 0.0, material, name))
            else:
                objects.append(Sphere(np.array([c[0], -half[0], c[2]]), float(half[0]), material, name))
            break
    return objects


def _make_path(rng: np.random.Generator, boxes, objects, num_views: int) -> list[np.ndarray] | None:
    """A random walk of camera centres through free space (steps 0.3-0.9 m, smooth heading), or None."""
    world = (boxes, objects)
    cam_h = rng.uniform(1.2, 1.7)
    p = None
    for _ in range(300):
        lo, hi = boxes[rng.integers(len(boxes))]
        q = lo + rng.uniform(0, 1, 3) * (hi - lo)
        q[1] = -cam_h
        if is_free(world, q):
            p = q
            break
    if p is None:
        return None
    path, heading = [p], rng.uniform(0, 2 * math.pi)
    while len(path) < num_views:
        for attempt in range(80):
            turn = rng.normal(0, 0.5 if attempt < 20 else 2.0)
            step = rng.uniform(0.3, 0.9)
            h = heading + turn
            q = path[-1] + step * np.array([math.cos(h), 0.0, math.sin(h)])
            q[1] = -cam_h + rng.normal(0, 0.04)
            if all(is_free(world, path[-1] + s * (q - path[-1])) for s in (0.25, 0.5, 0.75, 1.0)):
                path.append(q)
                heading = h
                break
        else:
            return None
    return path


def make_scene(seed: int, num_views: int = 9) -> Scene:
    """A random room with a camera path of `num_views` poses, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    boxes, shape, height, (wx, wz) = _make_room(rng)
    wall = _random_material(
        rng, ["plain", "stripes", "noise", "checker"], (0.05, 0.35), (0.7, 0.95), (0.2, 0.6)
    )
    floor = _random_material(rng, ["wood", "checker", "noise", "plain"], (0.1, 0.5), (0.35, 0.8), (0.25, 0.7))
    ceiling = _random_material(rng, ["plain", "noise"], (0.0, 0.1), (0.85, 1.0), (0.5, 1.5))
    for attempt in range(40):
        objects = _make_objects(rng, boxes, height, int(rng.integers(2, 8)) if attempt < 20 else 1)
        path = _make_path(rng, boxes, objects, num_views)
        if path is not None:
            break
    else:
        raise RuntimeError(f"synth: no camera path found for seed {seed}")
    lights = []
    for _ in range(int(rng.integers(1, 4))):
        lo, hi = boxes[rng.integers(len(boxes))]
        pos = lo + 0.2 + rng.uniform(0, 1, 3) * (hi - lo - 0.4)
        pos[1] = -height + 0.3
        tint = np.array(colorsys.hsv_to_rgb(rng.uniform(0.05, 0.6), rng.uniform(0, 0.25), 1.0))
        lights.append(Light(pos, tint * rng.uniform(0.6, 1.1)))
    yaw = rng.uniform(-math.pi, math.pi) + np.cumsum(rng.normal(0, 0.35, num_views))
    shift = path[0].copy()  # view 0's centre becomes the origin
    poses = [Pose(yaw_matrix(float(a)), torch_from(p - shift)) for a, p in zip(yaw, path)]
    scene = Scene(
        room_boxes=[(lo - shift, hi - shift) for lo, hi in boxes],
        wall=wall, floor=floor, ceiling=ceiling,
        objects=[_shift(o, shift) for o in objects],
        lights=[replace(lt, position=lt.position - shift) for lt in lights],
        ambient=float(rng.uniform(0.15, 0.3)),
        poses=poses,
    )  # fmt: skip
    return replace(scene, description=describe(scene, shape, (wx, wz)))


def torch_from(array: np.ndarray):
    import torch

    return torch.tensor(np.asarray(array, dtype=np.float64))


def _shift(obj, shift: np.ndarray):
    if isinstance(obj, Box):
        return replace(obj, lo=obj.lo - shift, hi=obj.hi - shift)
    if isinstance(obj, Sphere):
        return replace(obj, center=obj.center - shift)
    return replace(obj, center_xz=obj.center_xz - shift[[0, 2]], y0=obj.y0 - shift[1], y1=obj.y1 - shift[1])


def _material_words(m: Material) -> str:
    return f"{_TEXTURE_WORDS[m.kind]} {color_name(m.color_a)}" if m.kind != "wood" else "wooden"


def describe(scene: Scene, shape: str, size_xz: tuple[float, float]) -> str:
    """A one-paragraph text prompt for the room."""
    things = [f"a {_material_words(o.material)} {o.name}" for o in scene.objects]
    listing = (
        ", ".join(things[:-1]) + (" and " if len(things) > 1 else "") + things[-1] if things else "nothing"
    )
    return (
        f"A {shape} indoor room about {size_xz[0]:.0f} by {size_xz[1]:.0f} metres, with {_material_words(scene.wall)} walls, "
        f"a {_material_words(scene.floor)} floor and a {color_name(scene.ceiling.color_a)} ceiling. "
        f"It contains {listing}. It is lit by {len(scene.lights)} ceiling light{'s' if len(scene.lights) > 1 else ''}."
    )


# ------------------------------------------------------------------------------------------------ writing
def room_seed(seed: int, index: int) -> int:
    """The scene seed of room `index` of a dataset generated with `seed` (independent streams)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def write_room(scene: Scene, room_dir: str | os.PathLike, height: int, width: int) -> Path:
    """Render every pose of `scene` and write the room in the seed layout (all writes atomic)."""
    from panowan.utils.atomic import atomic_save_npy, atomic_write_image, atomic_write_json, atomic_write_text

    paths = RoomPaths(Path(room_dir))
    for view, pose in enumerate(scene.poses):
        rgb, rng_hw = render_view(scene, pose, height, width)
        atomic_write_image(paths.gt_rgb(view), rgb)
        atomic_save_npy(paths.gt_depth(view), rng_hw)
        atomic_write_json(paths.pose(view), pose_to_json(pose))
        if view == 0:
            atomic_write_image(paths.ref_rgb, rgb)
            atomic_save_npy(paths.ref_depth, rng_hw)
    atomic_write_text(paths.description, scene.description + "\n")
    return paths.root


def room_dir(out: str | os.PathLike, index: int) -> Path:
    """out/area_AAA/room_RRRR, four rooms per area."""
    return Path(out) / f"area_{index // 4:03d}" / f"room_{index:04d}"


def _synth_one(job: tuple[str, int, int, int, int, int]) -> str:
    out, index, seed, views, height, width = job
    import torch

    torch.set_num_threads(1)
    scene = make_scene(room_seed(seed, index), views)
    return str(write_room(scene, room_dir(out, index), height, width))


def synth_rooms(out: str | os.PathLike, rooms: int, views: int, height: int, width: int, seed: int = 0,
                workers: int = 1, progress: bool = False) -> list[Path]:  # fmt: skip
    """Generate `rooms` rooms of `views` views each under `out`; returns the room folders."""
    from panowan.geometry.erp import check_erp_size

    check_erp_size(height, width)
    if rooms < 1 or views < 1:
        raise ValueError(f"need at least one room and one view, got rooms={rooms}, views={views}")
    jobs = [(str(out), k, seed, views, height, width) for k in range(rooms)]
    if workers <= 1:
        results = map(_synth_one, jobs)
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_synth_one, jobs)
    if progress:
        from tqdm import tqdm

        results = tqdm(results, total=rooms, desc="synth", unit="room")
    try:
        return [Path(r) for r in results]
    finally:
        if workers > 1:
            pool.shutdown()
