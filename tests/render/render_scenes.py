"""Box rooms with furniture as quads, written as glb / ply / obj with trimesh, and their analytic ray casting.

A scene is a list of `Quad`s (corner `p0`, edges `e1`, `e2`; the face looks along e1 x e2; UV (0,0) at p0,
(1,0) at p0 + e1, (0,1) at p0 + e2, in trimesh's convention: v up from the texture's bottom row). The room
faces inward, furniture outward. Built y-up, then turned so that `up` is the world's up axis; the room is
offset from the origin so that a renderer that recentred would be caught.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOM_LO = np.array([10.0, -0.5, 3.0])  # y-up frame: x, up, z
ROOM_SIZE = np.array([6.0, 2.6, 5.0])
FURNITURE = [  # (lo, hi) in room coordinates (offsets from ROOM_LO), y up
    (np.array([1.0, 0.0, 1.0]), np.array([2.2, 0.75, 2.0])),  # table
    (np.array([5.2, 0.0, 0.0]), np.array([6.0, 2.0, 1.5])),  # wardrobe against two walls
]
QUADRANTS = np.array([[[230, 30, 30], [30, 200, 30]], [[30, 30, 220], [220, 220, 40]]], np.uint8)
"""Texture quadrants as [row][column] of the image: top-left red, top-right green, bottom-left blue,
bottom-right yellow; so u < 0.5, v > 0.5 (top-left in the image) is red."""


@dataclass
class Quad:
    p0: np.ndarray
    e1: np.ndarray
    e2: np.ndarray
    colour: np.ndarray  # uint8 RGB (vertex / face colour)
    part: int  # 0 room, 1 furniture


def up_rotation(up: str) -> np.ndarray:
    """Matrix M taking the y-up build frame to the file's frame (M @ e_y = the up axis)."""
    return {"y": np.eye(3), "z": np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]),
            "-y": np.diag([1.0, -1.0, -1.0])}[up]  # fmt: skip


def box_quads(lo: np.ndarray, hi: np.ndarray, inward: bool, part: int, rng) -> list[Quad]:
    """The six faces of the box [lo, hi], facing inward (a room) or outward (furniture), random colours."""
    quads = []
    for axis in range(3):
        a, b = [k for k in range(3) if k != axis]
        for side, plane in ((0, lo[axis]), (1, hi[axis])):
            p0 = lo.copy()
            p0[axis] = plane
            e1, e2 = np.zeros(3), np.zeros(3)
            e1[a], e2[b] = hi[a] - lo[a], hi[b] - lo[b]
            normal_sign = np.cross(e1, e2)[axis]  # e1 x e2 along +axis or -axis
            outward = 1.0 if side == 1 else -1.0
            want = -outward if inward else outward
            if np.sign(normal_sign) != want:
                e1, e2 = e2, e1
            quads.append(Quad(p0, e1, e2, rng.integers(20, 236, 3).astype(np.uint8), part))
    return quads


def make_quads(up: str = "y", furniture: bool | list = True, room_size=ROOM_SIZE) -> list[Quad]:
    """The room (and `FURNITURE`, or the given (lo, hi) boxes, or none), turned so that `up` is up."""
    rng = np.random.default_rng(5)
    room_size = np.asarray(room_size, float)
    quads = box_quads(ROOM_LO, ROOM_LO + room_size, True, 0, rng)
    if furniture:
        for lo, hi in FURNITURE if furniture is True else furniture:
            quads += box_quads(ROOM_LO + lo, ROOM_LO + hi, False, 1, rng)
    m = up_rotation(up)
    return [Quad(m @ q.p0, m @ q.e1, m @ q.e2, q.colour, q.part) for q in quads]


def _arrays(quads: list[Quad], grid: int = 1):
    """(vertices, faces, uv, vertex colours) of the quads, each cut into grid x grid cells (2 triangles each,
    wound along e1 x e2)."""
    a, b = (
        x.reshape(-1, 1)
        for x in np.meshgrid(np.linspace(0, 1, grid + 1), np.linspace(0, 1, grid + 1), indexing="ij")
    )
    i, j = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    k = (i * (grid + 1) + j).reshape(-1)
    cell = np.concatenate(
        [np.stack([k, k + grid + 1, k + grid + 2], 1), np.stack([k, k + grid + 2, k + 1], 1)]
    )
    per = (grid + 1) ** 2
    v = np.concatenate([q.p0 + a * q.e1 + b * q.e2 for q in quads])
    f = np.concatenate([cell + n * per for n in range(len(quads))])
    uv = np.tile(np.hstack([a, b]), (len(quads), 1))
    colours = np.repeat(np.array([q.colour for q in quads]), per, axis=0)
    return v, f, uv, colours


def quad_mesh(quads: list[Quad], grid: int = 1, colours: bool = True):
    """The quads as one trimesh mesh, with vertex colours (each quad its colour) unless `colours` is False."""
    import trimesh

    v, f, _, c = _arrays(quads, grid)
    mesh = trimesh.Trimesh(v, f, process=False)
    if colours:
        mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=np.c_[c, np.full(len(c), 255)])
    return mesh


def texture_image(size: int = 64):
    from PIL import Image

    return Image.fromarray(np.repeat(np.repeat(QUADRANTS, size // 2, 0), size // 2, 1))


def write_ply(path: Path, quads: list[Quad], colours: bool = True) -> Path:
    quad_mesh(quads, colours=colours).export(path)
    return path


def write_glb(path: Path, quads: list[Quad]) -> Path:
    """Room and furniture as two textured parts (one texture each; base colour factor white)."""
    import trimesh

    scene = trimesh.Scene()
    for part in (0, 1):
        v, f, uv, _ = _arrays([q for q in quads if q.part == part])
        if not len(v):
            continue
        material = trimesh.visual.material.PBRMaterial(baseColorTexture=texture_image(),
                                                       baseColorFactor=[255, 255, 255, 255])  # fmt: skip
        mesh = trimesh.Trimesh(
            v, f, visual=trimesh.visual.TextureVisuals(uv=uv, material=material), process=False
        )
        scene.add_geometry(mesh, geom_name=f"part{part}")
    scene.export(path)
    return path


def write_obj(path: Path, quads: list[Quad]) -> Path:
    """One textured part with a material library and its texture beside the obj."""
    import trimesh

    v, f, uv, _ = _arrays(quads)
    material = trimesh.visual.material.SimpleMaterial(image=texture_image(), name="walls")
    mesh = trimesh.Trimesh(
        v, f, visual=trimesh.visual.TextureVisuals(uv=uv, material=material), process=False
    )
    text, resources = trimesh.exchange.obj.export_obj(mesh, return_texture=True, mtl_name="room.mtl")
    path.write_text(text)
    for name, data in resources.items():
        (path.parent / name).write_bytes(data)
    return path


def cast(quads: list[Quad], origin: np.ndarray, dirs_N3: np.ndarray):
    """Exact first hits: (t_N (inf = none), quad index_N (-1), u_N, v_N)."""
    n = len(dirs_N3)
    best_t, best_q = np.full(n, np.inf), np.full(n, -1)
    best_u, best_v = np.zeros(n), np.zeros(n)
    for k, q in enumerate(quads):
        normal = np.cross(q.e1, q.e2)
        denom = dirs_N3 @ normal
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((q.p0 - origin) @ normal) / denom
        hit = origin + t[:, None] * dirs_N3 - q.p0
        u = hit @ q.e1 / (q.e1 @ q.e1)
        v = hit @ q.e2 / (q.e2 @ q.e2)
        ok = (t > 1e-9) & (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1) & (t < best_t)
        best_t, best_q = np.where(ok, t, best_t), np.where(ok, k, best_q)
        best_u, best_v = np.where(ok, u, best_u), np.where(ok, v, best_v)
    return best_t, best_q, best_u, best_v


def quadrant_colour(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Texture colour of (u, v) in trimesh's convention (v up from the image's bottom row)."""
    row = (v < 0.5).astype(int)  # v > 0.5 is the image's top half (row 0)
    col = (u >= 0.5).astype(int)
    return QUADRANTS[row, col]


def box_distance(p: np.ndarray, quads: list[Quad]) -> float:
    """Distance from p to the nearest quad (exact, point-to-rectangle)."""
    best = np.inf
    for q in quads:
        d = p - q.p0
        a = np.clip(d @ q.e1 / (q.e1 @ q.e1), 0, 1)
        b = np.clip(d @ q.e2 / (q.e2 @ q.e2), 0, 1)
        best = min(best, float(np.linalg.norm(d - a * q.e1 - b * q.e2)))
    return best
