"""Ray casting a `MeshData`: first hits through Embree (trimesh + embreex), colours at the hits, ERP views.

The caster is Embree 4 through `trimesh.ray.ray_pyembree` (embreex wheels): a maintained, BVH-based
CPU ray caster, several orders of magnitude faster than trimesh's pure-python intersector, which is the
fallback (with a warning) when embreex is missing and needs `rtree`.

Views follow the ERP convention of `panowan.geometry.erp` (camera x right, y down, z forward; pose
rotation world -> camera, so a camera ray d_cam travels along d_world = R^T d_cam). Range is the distance
to the first hit along the unit ray (radial metres, in the mesh's units); rays that hit nothing have
range 0 and colour 0 and are counted.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

from panowan.data.render.mesh_io import INSTALL_HINT, TEXTURE, VERTEX, MeshData, require_trimesh
from panowan.geometry.pose import Pose

log = logging.getLogger(__name__)
CHUNK = 1 << 18
"""Rays per Embree call: bounds the temporary arrays (a few hundred MB at most for supersampled views)."""


def make_intersector(mesh: MeshData, backend: str = "auto"):
    """A trimesh ray intersector over `mesh`: "embree" (embreex), "triangle" (pure python, needs rtree) or
    "auto" (Embree, else the pure-python one with a warning)."""
    trimesh = require_trimesh()
    tm = trimesh.Trimesh(mesh.vertices_V3, mesh.faces_F3, process=False, validate=False)
    if backend in ("auto", "embree"):
        try:
            import embreex  # noqa: F401  (trimesh picks it up; asked first so that its absence is explicit)
            from trimesh.ray import ray_pyembree

            return ray_pyembree.RayMeshIntersector(tm)
        except ImportError:
            if backend == "embree":
                raise ValueError(f"embreex is not installed; {INSTALL_HINT}") from None
            warnings.warn("embreex is not installed: using trimesh's pure-python ray caster (100x slower); "
                          + INSTALL_HINT, stacklevel=2)  # fmt: skip
    try:
        import rtree  # noqa: F401  (trimesh's triangle intersector builds an rtree)
    except ModuleNotFoundError:
        raise ValueError(f"neither embreex nor rtree is installed; {INSTALL_HINT}") from None
    from trimesh.ray import ray_triangle

    return ray_triangle.RayMeshIntersector(tm)


@dataclass
class Hits:
    """First hits of N rays: `t_N` (inf where missed), `tri_N` (-1 where missed), `points_N3` (0 where missed)."""

    t: np.ndarray
    tri: np.ndarray
    points: np.ndarray

    @property
    def hit(self) -> np.ndarray:
        return self.tri >= 0


class Caster:
    """First-hit ray casting and colour lookup on one mesh (build once, cast many views)."""

    def __init__(self, mesh: MeshData, backend: str = "auto") -> None:
        self.mesh = mesh
        self.intersector = make_intersector(mesh, backend)
        self.normals = mesh.face_normals_F3

    def cast(self, origins_N3: np.ndarray, dirs_N3: np.ndarray) -> Hits:
        """First hit of each ray (unit `dirs`), in chunks of `CHUNK` rays."""
        n = len(dirs_N3)
        origins_N3 = np.broadcast_to(origins_N3, (n, 3))
        t, tri, pts = np.full(n, np.inf), np.full(n, -1, np.int64), np.zeros((n, 3))
        for s in range(0, n, CHUNK):
            o, d = (
                np.ascontiguousarray(origins_N3[s : s + CHUNK]),
                np.ascontiguousarray(dirs_N3[s : s + CHUNK]),
            )
            idx_tri, idx_ray, loc = self.intersector.intersects_id(
                o, d, multiple_hits=False, return_locations=True
            )
            if len(idx_ray):
                dist = np.einsum("ij,ij->i", loc - o[idx_ray], d[idx_ray])
                # Several hits per ray can come back (the pure-python caster); keep the nearest.
                order = np.lexsort((dist, idx_ray))
                first = order[np.r_[True, idx_ray[order][1:] != idx_ray[order][:-1]]]
                rays = s + idx_ray[first]
                t[rays], tri[rays], pts[rays] = dist[first], idx_tri[first], loc[first]
        return Hits(t, tri, pts)

    def colours(self, hits: Hits) -> np.ndarray:
        """RGB_N3 float32 in [0, 1] at the hits (0 where missed): face colour, barycentric vertex colour, or
        the texture bilinearly sampled at the barycentric UV (wrapping: UVs repeat)."""
        from trimesh.triangles import points_to_barycentric

        m, out = self.mesh, np.zeros((len(hits.t), 3), np.float32)
        idx = np.nonzero(hits.hit)[0]
        if not len(idx):
            return out
        tri = hits.tri[idx]
        faces = m.faces_F3[tri]
        bary = points_to_barycentric(m.vertices_V3[faces], hits.points[idx]).astype(np.float32)
        bary = np.clip(np.nan_to_num(bary), 0.0, 1.0)  # hits on an edge can fall a hair outside
        mode = m.face_mode_F[tri]
        out[idx] = m.face_rgb_F3[tri]
        if (sel := mode == VERTEX).any():
            out[idx[sel]] = np.einsum("nk,nkc->nc", bary[sel], m.vertex_rgb_V3[faces[sel]])
        for k, texture in enumerate(m.textures):
            sel = (mode == TEXTURE) & (m.face_texture_F[tri] == k)
            if sel.any():
                uv = np.einsum("nk,nkc->nc", bary[sel], m.vertex_uv_V2[faces[sel]])
                out[idx[sel]] = sample_texture(texture, uv) * m.face_rgb_F3[tri[sel]]
        return out

    def backfacing(self, hits: Hits, dirs_N3: np.ndarray) -> np.ndarray:
        """True where the ray hit the back of a face (normal along the ray): seen from inside a closed object
        or from outside a scanned building."""
        out = np.zeros(len(hits.t), bool)
        h = hits.hit
        out[h] = np.einsum("ij,ij->i", self.normals[hits.tri[h]], dirs_N3[h]) > 0
        return out


def sample_texture(texture_HW3: np.ndarray, uv_N2: np.ndarray) -> np.ndarray:
    """Bilinear texture lookup, trimesh's UV convention (u right, v up from the bottom row), wrapping."""
    h, w = texture_HW3.shape[:2]
    x = uv_N2[:, 0] * w - 0.5
    y = (1.0 - uv_N2[:, 1]) * h - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    x1, y1 = (x0 + 1) % w, (y0 + 1) % h
    x0, y0 = x0 % w, y0 % h
    top = texture_HW3[y0, x0] * (1 - fx) + texture_HW3[y0, x1] * fx
    bottom = texture_HW3[y1, x0] * (1 - fx) + texture_HW3[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


@dataclass
class View:
    """One rendered view: `rgb_HW3` uint8, `range_HW` float32 (0 = escaped), `escaped` (rays with no hit)."""

    rgb: np.ndarray
    range: np.ndarray
    escaped: int

    @property
    def escaped_fraction(self) -> float:
        return self.escaped / self.range.size

    @property
    def min_range(self) -> float:
        valid = self.range[self.range > 0]
        return float(valid.min()) if valid.size else float("inf")


def world_directions(pose: Pose, height: int, width: int) -> np.ndarray:
    """Unit world directions `N3` (row-major over the ERP pixels) of a camera at `pose`."""
    import torch

    from panowan.geometry.erp import erp_directions

    dirs = erp_directions(height, width, dtype=torch.float64).reshape(-1, 3).numpy()
    return dirs @ pose.rotation.numpy()  # row vectors: d_world^T = d_cam^T R


def render_view(caster: Caster, pose: Pose, height: int, width: int, supersample: int = 1) -> View:
    """Render one ERP view. Range (and the escape count) come from the pixel-centre rays; with
    `supersample` K > 1 colour is the mean of a K x K grid of rays per pixel over those that hit (anti-aliased
    edges; pixels none of whose rays hit stay 0). Range is never averaged: a mix of two surfaces' distances
    is a point on neither (flying pixels)."""
    origin = pose.position.numpy()[None]
    centre_dirs = world_directions(pose, height, width)
    hits = caster.cast(origin, centre_dirs)
    rng_hw = np.where(hits.hit, hits.t, 0.0).astype(np.float32).reshape(height, width)
    if supersample <= 1:
        rgb = caster.colours(hits).reshape(height, width, 3)
    else:
        k = supersample
        sub = caster.cast(origin, world_directions(pose, k * height, k * width))
        col = caster.colours(sub).reshape(height, k, width, k, 3).sum(axis=(1, 3))
        count = sub.hit.reshape(height, k, width, k).sum(axis=(1, 3))[..., None]
        rgb = np.divide(col, count, out=np.zeros_like(col), where=count > 0)
    rgb8 = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    return View(rgb8, rng_hw, int((~hits.hit).sum()))
