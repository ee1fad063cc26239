"""The "easy" generator: one box or an L of two boxes, 1-7 pieces of furniture, a short camera walk."""

from __future__ import annotations

import colorsys
import math
from dataclasses import replace

import numpy as np

from panowan.data.synth.scene import (
    Box,
    Cylinder,
    Light,
    Scene,
    Sphere,
    _material_words,
    _random_material,
    centred_scene,
    color_name,
    is_free,
)


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


def make_easy_scene(seed: int, num_views: int = 9) -> Scene:
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
    ambient = float(rng.uniform(0.15, 0.3))
    scene = centred_scene(boxes, wall, floor, ceiling, objects, lights, ambient, path, yaw, shape)
    return replace(scene, description=describe(scene, shape, (wx, wz)))


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
