"""Ray casting a `MeshData`: first hits through Embree (trimesh + embreex), colours at the hits, ERP views.

The caster is Embree 4 through embreex (the binding trimesh itself uses for `trimesh.ray.ray_pyembree`;
called directly so that one call returns distance, triangle and barycentric coordinates): a maintained,
BVH-based CPU ray caster, far faster than trimesh's pure-python intersector, which is the fallback (with
a warning) when embreex is missing and needs `rtree`.

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

from panowan.data.render.mesh_io import FACE, INSTALL_HINT, TEXTURE, VERTEX, MeshData, require_trimesh
from panowan.geometry.erp import erp_directions_N3
from panowan.geometry.pose import Pose

log = logging.getLogger(__name__)
CHUNK = 1 << 18
"""Rays per Embree call: bounds the temporary arrays (a few hundred MB at most for supersampled views)."""


def _embree_available(backend: str) -> bool:
    """Whether to cast with Embree: "embree" demands it, "triangle" refuses it, "auto" takes it if installed."""
    if backend == "triangle":
        return False
    try:
        import embreex  # noqa: F401
    except ImportError:
        if backend == "embree":
            raise ValueError(f"embreex is not installed; {INSTALL_HINT}") from None
        warnings.warn("embreex is not installed: using trimesh's pure-python ray caster (100x slower); "
                      + INSTALL_HINT, stacklevel=3)  # fmt: skip
        return False
    return True


@dataclass
class Hits:
    """First hits of N rays: `t_N` (inf where missed), `tri_N` (-1 where missed) and `bary_N2` (u, v): the hit
    is (1 - u - v) v0 + u v1 + v v2 of its triangle (0 where missed)."""

    t: np.ndarray
    tri: np.ndarray
    bary: np.ndarray

    @property
    def hit(self) -> np.ndarray:
        return self.tri >= 0


class Caster:
    """First-hit ray casting and colour lookup on one mesh (build once, cast many views).

    Embree scenes hold float32 vertices; they are stored relative to the mesh's bounding-box centre, so that
    scans far from their origin keep their precision (ranges agree with float64 casting to ~1e-6 m in a room).
    """

    def __init__(self, mesh: MeshData, backend: str = "auto") -> None:
        if backend not in ("auto", "embree", "triangle"):
            raise ValueError(f"unknown ray caster {backend!r}; expected auto, embree or triangle")
        self.mesh = mesh
        self.normals = mesh.face_normals_F3
        self.embree = _embree_available(backend)
        if self.embree:
            from embreex import rtcore_scene
            from embreex.mesh_construction import TriangleMesh

            lo, hi = mesh.vertices_V3.min(axis=0), mesh.vertices_V3.max(axis=0)
            self.shift = (lo + hi) / 2
            self.scene = rtcore_scene.EmbreeScene()
            TriangleMesh(scene=self.scene, vertices=(mesh.vertices_V3 - self.shift).astype(np.float32),
                         indices=mesh.faces_F3.astype(np.int32))  # fmt: skip
        else:
            trimesh = require_trimesh()
            try:
                import rtree  # noqa: F401  (trimesh's triangle intersector builds an rtree)
            except ModuleNotFoundError:
                raise ValueError(f"neither embreex nor rtree is installed; {INSTALL_HINT}") from None
            from trimesh.ray import ray_triangle

            tm = trimesh.Trimesh(mesh.vertices_V3, mesh.faces_F3, process=False, validate=False)
            self.intersector = ray_triangle.RayMeshIntersector(tm)

    @property
    def name(self) -> str:
        return "embree (embreex)" if self.embree else "trimesh ray_triangle (pure python)"

    def cast(self, origins_N3: np.ndarray, dirs_N3: np.ndarray) -> Hits:
        """First hit of each ray (unit `dirs`), in chunks of `CHUNK` rays."""
        n = len(dirs_N3)
        origins_N3 = np.broadcast_to(origins_N3, (n, 3))
        t, tri, bary = np.full(n, np.inf), np.full(n, -1, np.int64), np.zeros((n, 2), np.float32)
        for s in range(0, n, CHUNK):
            part = slice(s, min(s + CHUNK, n))
            cast = self._cast_embree if self.embree else self._cast_triangle
            t[part], tri[part], bary[part] = cast(origins_N3[part], dirs_N3[part])
        return Hits(t, tri, bary)

    def _cast_embree(self, o: np.ndarray, d: np.ndarray):
        out = self.scene.run((o - self.shift).astype(np.float32), d.astype(np.float32), output=1)
        tri = out["primID"].astype(np.int64)
        t = np.where(tri >= 0, out["tfar"].astype(np.float64), np.inf)
        return t, tri, np.stack((out["u"], out["v"]), axis=1)

    def _cast_triangle(self, o: np.ndarray, d: np.ndarray):
        from trimesh.triangles import points_to_barycentric

        o, d = np.ascontiguousarray(o, np.float64), np.ascontiguousarray(d, np.float64)
        t, tri, bary = np.full(len(d), np.inf), np.full(len(d), -1, np.int64), np.zeros((len(d), 2))
        idx_tri, idx_ray, loc = self.intersector.intersects_id(
            o, d, multiple_hits=False, return_locations=True
        )
        if len(idx_ray):
            dist = np.einsum("ij,ij->i", loc - o[idx_ray], d[idx_ray])
            order = np.lexsort((dist, idx_ray))  # several hits per ray can come back: keep the nearest
            first = order[np.r_[True, idx_ray[order][1:] != idx_ray[order][:-1]]]
            rays = idx_ray[first]
            t[rays], tri[rays] = dist[first], idx_tri[first]
            b = points_to_barycentric(self.mesh.vertices_V3[self.mesh.faces_F3[idx_tri[first]]], loc[first])
            bary[rays] = b[:, 1:]
        return t, tri, bary

    def colours(self, hits: Hits) -> np.ndarray:
        """RGB_N3 float32 in [0, 1] at the hits (0 where missed): face colour, barycentric vertex colour, or
        the texture bilinearly sampled at the barycentric UV (wrapping: UVs repeat)."""
        m, out = self.mesh, np.zeros((len(hits.t), 3), np.float32)
        idx = np.nonzero(hits.hit)[0]
        if not len(idx):
            return out
        tri = hits.tri[idx]
        out[idx] = m.face_rgb_F3[tri]
        mode = m.face_mode_F[tri]
        if not (mode != FACE).any():
            return out
        uv = np.clip(np.nan_to_num(hits.bary[idx]), 0.0, 1.0)  # hits on an edge can fall a hair outside
        weights = np.concatenate([1.0 - uv.sum(axis=1, keepdims=True), uv], axis=1)
        faces = m.faces_F3[tri]
        if (sel := mode == VERTEX).any():
            out[idx[sel]] = np.einsum("nk,nkc->nc", weights[sel], m.vertex_rgb_V3[faces[sel]])
        textured = np.nonzero(mode == TEXTURE)[0]
        texture_id = m.face_texture_F[tri[textured]]
        for k in np.unique(texture_id):  # only the textures this view sees (a scan has hundreds)
            sel = textured[texture_id == k]
            tex_uv = np.einsum("nk,nkc->nc", weights[sel], m.vertex_uv_V2[faces[sel]])
            out[idx[sel]] = sample_texture(m.textures[k], tex_uv) * m.face_rgb_F3[tri[sel]]
        return out

    def backfacing(self, hits: Hits, dirs_N3: np.ndarray) -> np.ndarray:
        """True where the ray hit the back of a face (normal along the ray): seen from inside a closed object
        or from outside a scanned building."""
        out = np.zeros(len(hits.t), bool)
        h = hits.hit
        out[h] = np.einsum("ij,ij->i", self.normals[hits.tri[h]], dirs_N3[h]) > 0
        return out


def sample_texture(texture_HW3: np.ndarray, uv_N2: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a uint8 texture -> RGB_N3 float32 in [0, 1]; trimesh's UV convention (u right, v up
    from the bottom row, as OBJ; trimesh flips glTF's on loading), wrapping (glTF's default sampler)."""
    h, w = texture_HW3.shape[:2]
    x = uv_N2[:, 0] * w - 0.5
    y = (1.0 - uv_N2[:, 1]) * h - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    x1, y1 = (x0 + 1) % w, (y0 + 1) % h
    x0, y0 = x0 % w, y0 % h
    tex = texture_HW3
    top = tex[y0, x0] * (1 - fx) + tex[y0, x1] * fx
    bottom = tex[y1, x0] * (1 - fx) + tex[y1, x1] * fx
    return ((top * (1 - fy) + bottom * fy) / 255.0).astype(np.float32)


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
    # Row vectors: d_world^T = d_cam^T R (einsum: several times faster than BLAS for an N x 3 by 3 x 3 product).
    return np.einsum("nk,kc->nc", erp_directions_N3(height, width), pose.rotation.numpy())


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
