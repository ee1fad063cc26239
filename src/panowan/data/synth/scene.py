"""Scene types of the synthetic rooms, solid procedural textures, colour words and free-space tests."""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field, replace

import numpy as np

from panowan.geometry.pose import Pose

CLEARANCE = 0.3
"""Minimum distance (m) from a camera centre to any object or wall."""
_EPS = 1e-9


# ----------------------------------------------------------------------------------------- scene types
@dataclass(frozen=True)
class Material:
    """A solid texture; colours are linear RGB in [0, 1].

    `kind`: plain | checker | stripes | noise | wood (3D solid textures), or the structured kinds of
    the hard rooms, drawn in the plane of the surface hit (from its normal): tiles (a checker of
    `scale` cells with `color_c` grout lines), bricks (staggered courses along `direction`, each brick
    its own tone between `color_a` and `color_b`, `color_c` mortar) and panels (vertical boards
    `scale` wide with dark seams).
    """

    kind: str
    color_a: np.ndarray
    color_b: np.ndarray
    scale: float = 0.5
    """Cell size / stripe period / ring spacing / noise wavelength in metres."""
    direction: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0, 0.0]))
    """Stripe normal, or wood ring axis (unit vector)."""
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3))
    seed: int = 0
    """Seed of the value-noise lattice (and of the brick / panel tones)."""
    color_c: np.ndarray | None = None
    """Grout / mortar / seam colour of tiles, bricks and panels (default: 0.35 x `color_b`)."""
    line: float = 0.06
    """Grout / seam width as a fraction of a cell."""


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
    layout: str = ""
    """rectangular | L-shaped | two-room (what the generator built; not written to disk)."""


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


def _in_plane_axes(normal_N3: np.ndarray | None, n: int, along: int) -> tuple[np.ndarray, np.ndarray]:
    """Per point, the world axis `along` (or, where that is the normal axis, the next one) and the
    other in-plane axis of the axis-aligned surface with normal `normal_N3` (None: treated as y up)."""
    normal_axis = np.full(n, 1) if normal_N3 is None else np.abs(normal_N3).argmax(axis=1)
    first = np.where(normal_axis == along, (along + 1) % 3, along)
    return first, 3 - first - normal_axis


def _near_line(x: np.ndarray, width: float) -> np.ndarray:
    """True within `width / 2` of an integer."""
    f = x - np.floor(x)
    return np.minimum(f, 1 - f) < width / 2


def _structured(m: Material, q: np.ndarray, normal_N3: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(tone t in [0, 1], line mask) of the tiles / bricks / panels kinds at scaled points `q`."""
    rows = np.arange(len(q))
    if m.kind == "tiles":
        u_axis, v_axis = _in_plane_axes(normal_N3, len(q), 0)
        u, v = q[rows, u_axis], q[rows, v_axis]
        t = ((np.floor(u).astype(np.int64) + np.floor(v).astype(np.int64)) % 2).astype(np.float64)
        return t, _near_line(u, m.line) | _near_line(v, m.line)
    if m.kind == "bricks":  # courses half a brick high along `direction`, every other one shifted
        course_axis, run_axis = _in_plane_axes(normal_N3, len(q), int(np.abs(m.direction).argmax()))
        c = 2.0 * q[rows, course_axis]
        k = np.floor(c).astype(np.int64)
        r = q[rows, run_axis] + 0.5 * (k % 2)
        j = np.floor(r).astype(np.int64)
        t = _hash01(k, j, np.zeros_like(k), m.seed)
        return t, _near_line(c, 2 * m.line) | _near_line(r, m.line)
    if m.kind == "panels":  # vertical boards: the in-plane axis that is not y
        _, run_axis = _in_plane_axes(normal_N3, len(q), 1)
        r = q[rows, run_axis]
        j = np.floor(r).astype(np.int64)
        return _hash01(j, np.ones_like(j), j, m.seed), _near_line(r, m.line)
    raise ValueError(f"unknown material kind {m.kind!r}")


def shade_material(m: Material, p_N3: np.ndarray, normal_N3: np.ndarray | None = None) -> np.ndarray:
    """Albedo `N x 3` of material `m` at world points `p_N3` (with the surface normals `normal_N3`,
    which only the structured kinds tiles / bricks / panels use)."""
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
        t, line = _structured(m, q, normal_N3)
        albedo = m.color_a + t[:, None] * (m.color_b - m.color_a)
        grout = 0.35 * m.color_b if m.color_c is None else m.color_c
        return np.where(line[:, None], grout, albedo)
    return m.color_a + t[:, None] * (m.color_b - m.color_a)


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
    "tiles": "tiled",
    "bricks": "brick-patterned",
    "panels": "panelled",
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


def centred_scene(
    boxes, wall, floor, ceiling, objects, lights, ambient: float, path, yaw, layout: str
) -> Scene:
    """The scene with view 0's camera centre moved to the origin (the convention of the package docstring): room
    boxes, objects and lights shifted, one yaw-only pose per path point."""
    from panowan.geometry.pose import yaw_matrix

    shift = path[0].copy()
    poses = [Pose(yaw_matrix(float(a)), torch_from(p - shift)) for a, p in zip(yaw, path)]
    return Scene(
        room_boxes=[(lo - shift, hi - shift) for lo, hi in boxes],
        wall=wall, floor=floor, ceiling=ceiling,
        objects=[_shift(o, shift) for o in objects],
        lights=[replace(lt, position=lt.position - shift) for lt in lights],
        ambient=ambient, poses=poses, layout=layout,
    )  # fmt: skip
