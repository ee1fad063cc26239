"""Furniture, partition walls and pictures of the "hard" rooms: multi-box items placed without overlap.

Coordinates as in the generators before the final shift: floor at y = 0, ceiling at y = -height
(y points down), room boxes `(lo_3, hi_3)`. An item is a list of parts (`Box` / `Cylinder` /
`Sphere`) built in a local frame whose footprint is `[0, sx] x [0, sz]` with its back along z = 0,
then turned by a multiple of 90 degrees and moved into place.
"""

from __future__ import annotations

import numpy as np

from panowan.data.synth.scene import Box, Cylinder, Material, Sphere, _random_material

_KINDS = ["plain", "checker", "stripes", "noise", "wood"]

# name, (width range, depth range, height range), against a wall?
CATALOGUE = (
    ("tall cabinet", (0.6, 1.2), (0.4, 0.6), (1.7, 2.2), True),
    ("bookshelf", (0.8, 1.6), (0.3, 0.45), (1.5, 2.2), True),
    ("wardrobe", (1.0, 1.8), (0.55, 0.65), (1.9, 2.3), True),
    ("sofa", (1.6, 2.4), (0.8, 0.95), (0.8, 0.9), True),
    ("bed", (1.4, 2.0), (1.9, 2.1), (0.45, 0.6), True),
    ("desk", (1.0, 1.6), (0.55, 0.75), (0.72, 0.78), True),
    ("table", (0.8, 1.8), (0.6, 1.1), (0.72, 0.78), False),
    ("square column", (0.3, 0.6), (0.3, 0.6), (None, None), False),
    ("round column", (0.15, 0.35), None, (None, None), False),
    ("low cabinet", (0.4, 1.0), (0.4, 0.8), (0.4, 0.9), False),
    ("round stool", (0.2, 0.35), None, (0.4, 0.7), False),
    ("ball", (0.15, 0.45), None, None, False),
)
_WEIGHTS = np.array([3, 2, 1.5, 2, 1, 1.5, 3, 1.5, 1.5, 2, 1, 1], dtype=np.float64)


def _parts(name: str, s: np.ndarray, height: float, material: Material, rng) -> list:
    """Parts of item `name` of size `s` = (sx, sy, sz) in the local frame (y = 0 floor, -y up)."""
    sx, sy, sz = s

    def box(x0, y0, z0, x1, y1, z1, part=name, mat=material):
        return Box(np.array([x0, -y1, z0]), np.array([x1, -y0, z1]), mat, part)

    if name in ("table", "desk"):
        top, leg = rng.uniform(0.04, 0.07), rng.uniform(0.04, 0.07)
        parts = [box(0, sy - top, 0, sx, sy, sz)]
        for x0 in (0.03, sx - 0.03 - leg):
            for z0 in (0.03, sz - 0.03 - leg):
                parts.append(box(x0, 0, z0, x0 + leg, sy - top, z0 + leg, f"{name} leg"))
        return parts
    if name == "sofa":
        seat, arm = rng.uniform(0.38, 0.46), rng.uniform(0.15, 0.25)
        cushion = _random_material(rng, _KINDS, (0.3, 0.9), (0.3, 0.9))
        return [
            box(0, 0, 0, sx, sy, 0.22),  # back, against the wall
            box(arm, 0, 0.22, sx - arm, seat, sz, "sofa seat", cushion),
            box(0, 0, 0.22, arm, 0.62, sz, "sofa arm"),
            box(sx - arm, 0, 0.22, sx, 0.62, sz, "sofa arm"),
        ]
    if name == "bed":
        return [box(0, 0, 0.06, sx, sy, sz), box(0, 0, 0, sx, sy + rng.uniform(0.3, 0.6), 0.06, "headboard")]
    if name == "bookshelf":  # a carcass with an open front: back, sides, top and shelves
        t, n = 0.03, max(2, int(sy / 0.4))
        parts = [box(0, 0, 0, sx, sy, t), box(0, 0, 0, t, sy, sz), box(sx - t, 0, 0, sx, sy, sz)]
        parts += [
            box(t, k * (sy - t) / n, t, sx - t, k * (sy - t) / n + t, sz, "shelf") for k in range(n + 1)
        ]
        books = _random_material(rng, ["stripes", "noise"], (0.5, 0.9), (0.3, 0.8), (0.04, 0.1))
        books = Material(books.kind, books.color_a, books.color_b, books.scale, np.array([1.0, 0.0, 1.0]) / 2**0.5,
                         books.offset, books.seed)  # fmt: skip
        for k in range(n):  # a row of books on every shelf
            y0 = k * (sy - t) / n + t
            h = min(rng.uniform(0.18, 0.3), (sy - t) / n - t - 0.04)
            x1 = t + (sx - 2 * t) * rng.uniform(0.4, 0.95)
            parts.append(box(t + 0.01, y0, t, x1, y0 + h, sz * rng.uniform(0.6, 0.9), "books", books))
        return parts
    if name in ("square column",):
        return [box(0, 0, 0, sx, height, sz)]
    return [box(0, 0, 0, sx, sy, sz)]


def _place(parts: list, turns: int, size_xz: tuple[float, float], origin_xz: np.ndarray) -> list:
    """Turn local box parts by `turns` quarter turns, (x, z) -> (sz - z, x) each, which keeps the
    footprint in the positive quadrant and moves the back (z = 0) to +x, +z, -x; then translate."""
    out = []
    for p in parts:
        lo, hi = p.lo.copy(), p.hi.copy()
        sx, sz = size_xz
        for _ in range(turns % 4):
            lo[0], lo[2], hi[0], hi[2] = sz - hi[2], lo[0], sz - lo[2], hi[0]
            sx, sz = sz, sx
        lo[[0, 2]] += origin_xz
        hi[[0, 2]] += origin_xz
        out.append(Box(lo, hi, p.material, p.name))
    return out


def _turned_size(size_xz: tuple[float, float], turns: int) -> tuple[float, float]:
    return (size_xz[1], size_xz[0]) if turns % 2 else size_xz


def _overlaps(lo: np.ndarray, hi: np.ndarray, footprints: list, margin: float = 0.05) -> bool:
    return any(np.all(lo < f_hi + margin) and np.all(hi > f_lo - margin) for f_lo, f_hi in footprints)


def _outside_rooms(boxes, p: np.ndarray) -> bool:
    return not any(np.all(p > lo) and np.all(p < hi) for lo, hi in boxes)


_WALL_NORMALS = (np.array([0.0, -1.0]), np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([-1.0, 0.0]))


def _against_wall(rng, boxes, lo_room, hi_room, size_xz) -> tuple[np.ndarray, int] | None:
    """(origin_xz, turns) of a footprint with its back against a real wall of room box (lo, hi), or None.

    Wall w (0: z = lo, 1: x = hi, 2: z = hi, 3: x = lo) takes w quarter turns of the item.
    """
    wall = int(rng.integers(4))
    size = np.array(_turned_size(size_xz, wall))
    span = (hi_room - lo_room)[[0, 2]] - size - 0.1
    if span.min() <= 0:
        return None
    o = lo_room[[0, 2]] + 0.05 + rng.uniform(0, 1, 2) * span
    gap = 0.02
    if wall == 0:
        o[1] = lo_room[2] + gap
    elif wall == 1:
        o[0] = hi_room[0] - gap - size[0]
    elif wall == 2:
        o[1] = hi_room[2] - gap - size[1]
    else:
        o[0] = lo_room[0] + gap
    # The back must rest on a real wall (not on the open side of an L): just behind it is no room.
    normal = _WALL_NORMALS[wall]
    back = o + size / 2 + normal * (size / 2 + 0.08)
    along = np.array([normal[1], normal[0]]) * (size / 2 - 0.02)
    if all(_outside_rooms(boxes, np.array([q[0], -1.0, q[1]])) for q in (back, back + along, back - along)):
        return o, wall
    return None


def make_furniture(rng, boxes, height: float, count: int, reserved: list) -> tuple[list, list[tuple]]:
    """Up to `count` items in the room boxes, not overlapping each other nor the `reserved` footprints.

    Returns (parts, items) where items are (name, material) for the description.
    """
    parts_all: list = []
    items: list[tuple[str, Material]] = []
    footprints = list(reserved)
    volumes = np.array([np.prod(hi - lo) for lo, hi in boxes])
    for _ in range(count):
        k = int(rng.choice(len(CATALOGUE), p=_WEIGHTS / _WEIGHTS.sum()))
        name, a, b, h, wall = CATALOGUE[k]
        material = _random_material(rng, _KINDS, (0.3, 0.9), (0.3, 0.95))
        lo_room, hi_room = boxes[int(rng.choice(len(boxes), p=volumes / volumes.sum()))]
        for _try in range(25):
            if b is None:  # round: cylinder or sphere
                r = rng.uniform(*a)
                span = (hi_room - lo_room)[[0, 2]] - 2 * r - 0.1
                if span.min() <= 0:
                    continue
                c = lo_room[[0, 2]] + 0.05 + r + rng.uniform(0, 1, 2) * span
                flo, fhi = c - r, c + r
                if _overlaps(flo, fhi, footprints):
                    continue
                if name == "ball":
                    parts = [Sphere(np.array([c[0], -r, c[1]]), float(r), material, name)]
                else:
                    hh = height if h[0] is None else rng.uniform(*h)
                    parts = [Cylinder(c.copy(), float(r), -hh, 0.0, material, name)]
            else:
                size = np.array([rng.uniform(*a), rng.uniform(*h) if h[0] else height, rng.uniform(*b)])
                if wall:
                    placed = _against_wall(rng, boxes, lo_room, hi_room, (size[0], size[2]))
                    if placed is None:
                        continue
                    origin, turns = placed
                else:
                    turns = int(rng.integers(2))
                    w, d = _turned_size((size[0], size[2]), turns)
                    span = (hi_room - lo_room)[[0, 2]] - np.array([w, d]) - 0.1
                    if span.min() <= 0:
                        continue
                    origin = lo_room[[0, 2]] + 0.05 + rng.uniform(0, 1, 2) * span
                w, d = _turned_size((size[0], size[2]), turns)
                flo, fhi = origin, origin + np.array([w, d])
                if _overlaps(flo, fhi, footprints):
                    continue
                local = _parts(name, size, height, material, rng)
                parts = _place(local, turns, (size[0], size[2]), origin)
            footprints.append((flo, fhi))
            parts_all.extend(parts)
            items.append((name, material))
            break
    return parts_all, items


def make_partition(rng, lo_room, hi_room, height: float, material: Material):
    """A thin full-height wall across a room box, leaving a gap of >= 1 m to walk around; or None."""
    axis = int(rng.integers(2)) * 2  # 0: the wall runs along x, 2: along z
    other = 2 - axis
    length_room, across_room = hi_room[axis] - lo_room[axis], hi_room[other] - lo_room[other]
    if length_room < 3.0 or across_room < 2.6:
        return None
    thick = rng.uniform(0.08, 0.16)
    length = length_room * rng.uniform(0.4, 0.7)
    pos = lo_room[other] + across_room * rng.uniform(0.35, 0.65)
    start = lo_room[axis] if rng.uniform() < 0.7 else lo_room[axis] + rng.uniform(1.0, length_room - length)
    if rng.uniform() < 0.5 and start == lo_room[axis]:
        start = hi_room[axis] - length  # attached to the opposite wall
    lo, hi = np.array([0.0, -height, 0.0]), np.array([0.0, 0.0, 0.0])
    lo[axis], hi[axis] = start, start + length
    lo[other], hi[other] = pos - thick / 2, pos + thick / 2
    return Box(lo, hi, material, "partition wall")


def make_pictures(rng, boxes, height: float, count: int, objects: list, reserved: list) -> list:
    """Up to `count` framed pictures (a frame box and a canvas box) flat on real walls, clear of objects."""
    out: list = []
    bounds = [_bounds(o) for o in objects] + [(np.array([lo[0], -1e3, lo[1]]), np.array([hi[0], 1e3, hi[1]]))
                                              for lo, hi in reserved]  # fmt: skip
    for _ in range(count):
        frame = _random_material(rng, ["plain", "wood"], (0.0, 0.5), (0.1, 0.6))
        canvas = _random_material(
            rng, ["checker", "stripes", "noise", "tiles"], (0.5, 1.0), (0.4, 1.0), (0.04, 0.25)
        )
        for _try in range(20):
            lo_room, hi_room = boxes[int(rng.integers(len(boxes)))]
            axis = int(rng.integers(2)) * 2  # normal axis of the wall: x or z
            along = 2 - axis
            side = int(rng.integers(2))
            w, h = rng.uniform(0.4, 1.3), rng.uniform(0.3, 0.9)
            centre_y = -min(rng.uniform(1.2, 1.9), height - 0.2 - h / 2)
            span = hi_room[along] - lo_room[along] - w - 0.2
            if span <= 0:
                continue
            a0 = lo_room[along] + 0.1 + rng.uniform() * span
            plane = hi_room[axis] if side else lo_room[axis]
            inward = -1.0 if side else 1.0
            lo, hi = np.zeros(3), np.zeros(3)
            lo[along], hi[along] = a0, a0 + w
            lo[1], hi[1] = centre_y - h / 2, centre_y + h / 2
            depth = rng.uniform(0.025, 0.05)
            lo[axis], hi[axis] = sorted((plane, plane + inward * depth))
            behind = plane - inward * 0.08
            corners = [np.array([0.0, y, 0.0]) for y in (lo[1], hi[1])]
            ok = True
            for c in corners:
                for a in (lo[along], hi[along], (lo[along] + hi[along]) / 2):
                    c = c.copy()
                    c[axis], c[along] = behind, a
                    ok &= _outside_rooms(boxes, c)
            if not ok or any(np.all(lo < b_hi + 0.05) and np.all(hi > b_lo - 0.05) for b_lo, b_hi in bounds):
                continue
            border = min(0.06, w / 6, h / 6)
            clo, chi = lo.copy(), hi.copy()
            clo[along] += border
            chi[along] -= border
            clo[1] += border
            chi[1] -= border
            clo[axis], chi[axis] = sorted((plane, plane + inward * (depth + 0.008)))
            out += [Box(lo, hi, frame, "picture frame"), Box(clo, chi, canvas, "picture")]
            bounds.append((lo, hi))
            break
    return out


def _bounds(obj) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(obj, Box):
        return obj.lo, obj.hi
    if isinstance(obj, Sphere):
        return obj.center - obj.radius, obj.center + obj.radius
    r = obj.radius
    return (np.array([obj.center_xz[0] - r, obj.y0, obj.center_xz[1] - r]),
            np.array([obj.center_xz[0] + r, obj.y1, obj.center_xz[1] + r]))  # fmt: skip


def footprint(obj) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = _bounds(obj)
    return lo[[0, 2]], hi[[0, 2]]
