"""The "hard" generator: rooms in which a good part of every target view is hidden from view 0.

Layouts: one large box, an L of two boxes, or two rooms side by side joined by a doorway (a
door-sized box through the wall between them, as a third room box, with a lintel object above the
door). Rectangular rooms usually, the others sometimes, get a full-height partition wall with a gap.
Furniture is larger and more of it (tall cabinets, bookshelves with books, wardrobes, sofas, beds,
tables and desks on legs, columns, low cabinets, stools, balls), framed pictures hang on the walls,
and walls / floors / ceilings get structured textures (tiles with grout, bricks, panels, planks).
Cameras are scattered over the free space (1-4 m from view 0, `CLEARANCE` from everything), not on a
walk; they are ordered as a greedy nearest-neighbour tour from view 0.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import replace

import numpy as np

from panowan.data.synth.furniture import footprint, make_furniture, make_partition, make_pictures
from panowan.data.synth.raycast import cast_rays
from panowan.data.synth.scene import (
    CLEARANCE,
    Box,
    Light,
    Material,
    Scene,
    _distance_to_objects,
    _material_words,
    _random_material,
    centred_scene,
    color_name,
    is_free,
)

LAYOUTS = ("rectangular", "L-shaped", "two-room")
_LAYOUT_P = (0.3, 0.3, 0.4)
TARGET_DISTANCE = (1.0, 4.0)
"""Range (m) of the distance from view 0 to every other view."""
OTHER_ROOM_P = 0.1
"""In a two-room layout, the chance that a target may lie in the room view 0 is not in (it must
still see view 0 through the door): such views are mostly unseen."""
REFERENCE_CLEARANCE = (0.5, 0.8)
"""View 0 keeps this far (m) from the walls and from the objects: a reference camera pressed against
a partition or a wardrobe would hide half the room from every other view."""


def _swap_xz(boxes):
    return [(lo[[2, 1, 0]], hi[[2, 1, 0]]) for lo, hi in boxes]


def _make_layout(rng: np.random.Generator):
    """(room boxes, layout, height, size_xz, door) with door = (lo, hi) of the door box or None."""
    height = rng.uniform(2.5, 3.2)
    layout = str(rng.choice(LAYOUTS, p=_LAYOUT_P))
    door = None
    if layout == "rectangular":
        wx, wz = rng.uniform(4.5, 8.0), rng.uniform(4.0, 7.5)
        boxes = [(np.array([0.0, -height, 0.0]), np.array([wx, 0.0, wz]))]
        size = (wx, wz)
    elif layout == "L-shaped":  # a second box overlapping the first along one side
        wx, wz = rng.uniform(3.5, 7.0), rng.uniform(3.5, 6.5)
        wx2, wz2 = rng.uniform(2.0, 0.75 * wx), rng.uniform(2.0, 4.5)
        x0 = 0.0 if rng.uniform() < 0.5 else wx - wx2
        boxes = [(np.array([0.0, -height, 0.0]), np.array([wx, 0.0, wz])),
                 (np.array([x0, -height, wz - 0.5]), np.array([x0 + wx2, 0.0, wz + wz2]))]  # fmt: skip
        size = (wx, wz + wz2)
    else:  # two rooms along z, a wall of `thick` between them, a door through it
        wx, wz = rng.uniform(3.5, 6.5), rng.uniform(3.0, 5.5)
        wx2, wz2 = rng.uniform(2.5, 6.0), rng.uniform(2.5, 5.0)
        thick = rng.uniform(0.12, 0.25)
        x0 = rng.uniform(-(wx2 - 1.6), wx - 1.6)  # room B overlaps room A by >= 1.6 m in x
        shared = (max(0.0, x0), min(wx, x0 + wx2))
        door_w = rng.uniform(0.8, min(1.2, shared[1] - shared[0] - 0.3))
        dx = rng.uniform(shared[0] + 0.15, shared[1] - 0.15 - door_w)
        boxes = [(np.array([0.0, -height, 0.0]), np.array([wx, 0.0, wz])),
                 (np.array([x0, -height, wz + thick]), np.array([x0 + wx2, 0.0, wz + thick + wz2]))]  # fmt: skip
        # The door box overlaps both rooms by 2 cm so that the union of boxes is connected for rays.
        boxes.append((np.array([dx, -height, wz - 0.02]), np.array([dx + door_w, 0.0, wz + thick + 0.02])))
        door = (
            np.array([dx, -rng.uniform(2.0, min(2.25, height - 0.2)), wz]),
            np.array([dx + door_w, 0.0, wz + thick]),
        )
        size = (max(wx, x0 + wx2) - min(0.0, x0), wz + thick + wz2)
    if rng.uniform() < 0.5:
        boxes = _swap_xz(boxes)
        door = None if door is None else (door[0][[2, 1, 0]], door[1][[2, 1, 0]])
        size = size[::-1]
    return boxes, layout, height, size, door


def _with(m: Material, **changes) -> Material:
    return replace(m, **changes)


def _surface(rng, kinds, sat, val, scale, direction=None) -> Material:
    """A room-surface material; structured kinds get a grout colour and, for bricks, a course axis."""
    m = _random_material(rng, kinds, sat, val, scale)
    grout = np.full(3, rng.uniform(0.15, 0.9)) * rng.uniform(0.9, 1.0, 3)
    m = _with(m, color_c=grout, line=float(rng.uniform(0.04, 0.09)))
    if m.kind == "bricks":
        m = _with(m, direction=np.array([0.0, 1.0, 0.0]) if direction is None else direction)
    return m


def _materials(rng):
    wall = _surface(
        rng, ["plain", "noise", "stripes", "tiles", "bricks", "panels"], (0.05, 0.4), (0.6, 0.95), (0.2, 0.6)
    )
    axis = np.array([1.0, 0.0, 0.0]) if rng.uniform() < 0.5 else np.array([0.0, 0.0, 1.0])
    floor = _surface(
        rng, ["wood", "tiles", "bricks", "checker", "noise"], (0.1, 0.5), (0.3, 0.8), (0.3, 0.9), axis
    )
    ceiling = _surface(rng, ["plain", "noise", "tiles"], (0.0, 0.1), (0.85, 1.0), (0.5, 1.2))
    return wall, floor, ceiling


def _in_sight(boxes, objects, a: np.ndarray, b: np.ndarray) -> bool:
    """True if the segment a -> b meets no object and no wall."""
    probe = Scene(boxes, None, None, None, objects, [], 0.0, [])  # materials are not needed to trace
    d = (b - a) / np.linalg.norm(b - a)
    t, _, _ = cast_rays(probe, a, d[None])
    return bool(t[0] > np.linalg.norm(b - a))


def _cameras(rng, boxes, objects, num_views: int, layout: str) -> list[np.ndarray] | None:
    """View 0 anywhere free (`REFERENCE_CLEARANCE`), the others free, 1-4 m from it and in its sight,
    in a two-room layout mostly in view 0's room; ordered as a nearest-neighbour tour from view 0."""
    world = (boxes, objects)
    cam_h = rng.uniform(1.3, 1.7)
    rooms = boxes[:2] if layout == "two-room" else boxes  # the door box holds no camera anyway
    volumes = np.array([np.prod(hi - lo) for lo, hi in rooms])

    def sample(room: int | None = None) -> tuple[int, np.ndarray]:
        k = int(rng.choice(len(rooms), p=volumes / volumes.sum())) if room is None else room
        lo, hi = rooms[k]
        q = lo + rng.uniform(0, 1, 3) * (hi - lo)
        q[1] = -cam_h + rng.normal(0, 0.05)
        return k, q

    first = None
    for _ in range(300):
        home, q = sample()
        wall, obj = REFERENCE_CLEARANCE
        if is_free(world, q, wall) and _distance_to_objects(objects, q) >= obj:
            first = q
            break
    if first is None:
        return None
    others: list[np.ndarray] = []
    for _ in range(200 * num_views):
        if len(others) == num_views - 1:
            break
        same = layout == "two-room" and rng.uniform() >= OTHER_ROOM_P
        _, q = sample(home if same else None)
        near = TARGET_DISTANCE[0] <= np.linalg.norm(q - first) <= TARGET_DISTANCE[1]
        if near and is_free(world, q) and _in_sight(boxes, objects, first, q):
            others.append(q)
    if len(others) < num_views - 1:
        return None
    path = [first]
    while others:
        k = int(np.argmin([np.linalg.norm(q - path[-1]) for q in others]))
        path.append(others.pop(k))
    return path


def make_hard_scene(seed: int, num_views: int = 9) -> Scene:
    """A random "hard" room with `num_views` poses scattered over its free space, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    boxes, layout, height, size, door = _make_layout(rng)
    wall, floor, ceiling = _materials(rng)
    structure: list = []
    if door is not None:  # the wall above the door, in the wall's material
        lo, hi = door
        structure.append(
            Box(np.array([lo[0], -height, lo[2]]), np.array([hi[0], lo[1], hi[2]]), wall, "lintel")
        )
    main = boxes[0] if layout != "L-shaped" else boxes[int(rng.integers(2))]
    if rng.uniform() < (0.85 if layout == "rectangular" else 0.35):
        part_mat = (
            wall
            if rng.uniform() < 0.5
            else _surface(rng, ["panels", "plain", "noise"], (0.05, 0.5), (0.5, 0.9), (0.2, 0.5))
        )
        partition = make_partition(rng, main[0], main[1], height, part_mat)
        if partition is not None:
            structure.append(partition)
    reserved = [footprint(o) for o in structure if o.name == "partition wall"]
    reserved = [(lo - 0.25, hi + 0.25) for lo, hi in reserved]
    if door is not None:  # keep 0.9 m in front of the door free on both sides
        lo, hi = door
        thin = 0 if (hi - lo)[0] < (hi - lo)[2] else 2
        pad = np.array([0.9, 0.9]) * (np.array([0, 2]) == thin) + 0.2
        reserved.append((lo[[0, 2]] - pad, hi[[0, 2]] + pad))
    area = sum((hi - lo)[0] * (hi - lo)[2] for lo, hi in boxes[:2])
    for attempt in range(30):
        count = int(rng.integers(5, 6 + int(area / 5))) if attempt < 15 else 3
        furniture, items = make_furniture(rng, boxes, height, count, reserved)
        objects = structure + furniture
        path = _cameras(rng, boxes, objects, num_views, layout)
        if path is not None:
            break
    else:
        raise RuntimeError(f"synth: no camera positions found for hard seed {seed}")
    pictures = make_pictures(rng, boxes, height, int(rng.integers(2, 7)), objects, reserved)
    pictures = [p for p in pictures if min(_distance_to_objects([p], c) for c in path) >= CLEARANCE]
    objects = objects + pictures
    lights = []
    for k in range(max(len(boxes[:2]), int(rng.integers(2, 5)))):
        lo, hi = boxes[k] if k < len(boxes[:2]) else boxes[int(rng.integers(len(boxes[:2])))]
        pos = lo + 0.3 + rng.uniform(0, 1, 3) * (hi - lo - 0.6)
        pos[1] = -height + 0.3
        tint = np.array(colorsys.hsv_to_rgb(rng.uniform(0.05, 0.6), rng.uniform(0, 0.25), 1.0))
        lights.append(Light(pos, tint * rng.uniform(0.5, 0.9)))
    yaw = rng.uniform(-math.pi, math.pi, num_views)
    ambient = float(rng.uniform(0.15, 0.3))
    scene = centred_scene(boxes, wall, floor, ceiling, objects, lights, ambient, path, yaw, layout)
    return replace(scene, description=describe_hard(scene, size, items, len(pictures) // 2))


def describe_hard(scene: Scene, size_xz, items: list[tuple[str, Material]], pictures: int) -> str:
    """A one-paragraph text prompt for a hard room."""
    shape = {"rectangular": "a rectangular indoor room", "L-shaped": "an L-shaped indoor room",
             "two-room": "two indoor rooms joined by a doorway"}[scene.layout]  # fmt: skip
    things = [f"a {_material_words(m)} {name}" for name, m in items]
    listing = (
        ", ".join(things[:-1]) + (" and " if len(things) > 1 else "") + things[-1] if things else "nothing"
    )
    partition = any(o.name == "partition wall" for o in scene.objects)
    text = (
        f"{shape[0].upper()}{shape[1:]}, about {size_xz[0]:.0f} by {size_xz[1]:.0f} metres, with "
        f"{_material_words(scene.wall)} walls, a {_material_words(scene.floor)} floor and a "
        f"{color_name(scene.ceiling.color_a)} ceiling."
    )
    if partition:
        text += " A partition wall divides the space."
    text += f" It contains {listing}."
    if pictures:
        text += f" {pictures} framed picture{'s hang' if pictures > 1 else ' hangs'} on the walls."
    n = len(scene.lights)
    return text + f" It is lit by {n} ceiling light{'s' if n > 1 else ''}."
