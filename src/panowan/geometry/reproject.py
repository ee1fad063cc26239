"""Z-buffered reprojection of an ERP RGB-D panorama into another pose, by mesh rasterisation.

Method (all vectorised torch, on the device of the inputs):

1. The source panorama is a triangle mesh on the sphere of directions: every pixel is a vertex at
   `range * ray`; each 2x2 block of pixels (column W-1 joined to column 0, so the seam is closed) is
   split into two triangles along the diagonal whose end depths agree best, and each pole is closed by
   a fan of triangles around a pole vertex (mean of the first / last row). A triangle is dropped when
   a vertex is a hole (range not finite or <= 0) or when its vertex ranges differ by more than
   `max_relative_gap` (max / min - 1): such a triangle spans a depth discontinuity, and keeping it would
   smear the foreground onto the background. Valid pixels that belong to no kept triangle (isolated
   samples) are drawn as single-pixel points so that nothing known is lost.
2. For the target pose each triangle gets a pixel bounding box in the target ERP (unwrapped across the
   seam; arcs bulging toward a pole and triangles around a pole are widened to the full width), and
   every candidate pixel centre is tested exactly in 3D: with the triangle's vertices P0, P1, P2 in the
   target camera frame, the target ray d = sum(l_i P_i) has all l_i >= 0 iff it hits the triangle,
   at range 1 / sum(l_i) with barycentrics l_i / sum(l_i). The same test works for any triangle shape,
   at the seam and at the poles.
3. Z-buffer: (range float bits << 32 | triangle id) keys are reduced per pixel with
   `scatter_reduce(amin)`, so the nearest surface wins deterministically. The winners' range and
   colour are then recomputed in float64 (exact ray / plane intersection, barycentric colour).

Target pixels that no kept triangle covers are unknown: image 0, range 0, valid False.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from panowan.geometry.erp import check_erp_size, directions_to_pixels, erp_directions
from panowan.geometry.pose import Pose

_NO_HIT = torch.iinfo(torch.int64).max
_BARY_EPS = 1e-5  # tolerance of the inside test, so shared edges leave no cracks


@dataclass(frozen=True)
class Reprojection:
    """Result of `reproject_erp`: `image` [C,H,W], `range` [H,W] float32 metres, `valid` [H,W] bool.

    With F-stacked target poses every field gets a leading F dimension. Unknown pixels have image 0,
    range 0 and valid False.
    """

    image: torch.Tensor
    range: torch.Tensor
    valid: torch.Tensor

    @property
    def image_CHW(self) -> torch.Tensor:
        return self.image

    @property
    def range_HW(self) -> torch.Tensor:
        return self.range

    @property
    def valid_HW(self) -> torch.Tensor:
        return self.valid


def default_max_relative_gap(height: int) -> float:
    """Default depth-discontinuity threshold for an H-row source: 20 pixel angles (about 0.12 at H=512,
    0.087 at H=720), at most 0.25.

    Neighbouring samples of a plane seen at grazing angle alpha differ by about (pi / H) / tan(alpha)
    in relative range, so this keeps surfaces seen at more than ~3 degrees and drops depth edges; the
    cap keeps coarse panoramas from bridging real edges.
    """
    return min(20.0 * math.pi / height, 0.25)


@dataclass(frozen=True)
class ErpMesh:
    """The source panorama as a triangle mesh (see the module docstring). Build with `ErpMesh.build`.

    `vertices_N3` world points (float64; N = H*W + 2, the last two the north and south pole vertices),
    `colors_NC` float32, `triangles_T3` vertex indices of kept triangles, `points_P` indices of
    isolated valid vertices drawn as points.
    """

    vertices_N3: torch.Tensor
    colors_NC: torch.Tensor
    triangles_T3: torch.Tensor
    points_P: torch.Tensor

    @staticmethod
    def build(
        image_CHW: torch.Tensor, range_HW: torch.Tensor, pose: Pose, max_relative_gap: float | None = None
    ) -> ErpMesh:
        height, width = range_HW.shape
        device = range_HW.device
        gap = default_max_relative_gap(height) if max_relative_gap is None else float(max_relative_gap)
        r = range_HW.to(torch.float64).reshape(-1)
        valid = torch.isfinite(r) & (r > 0)
        r = torch.where(valid, r, torch.zeros_like(r))
        dirs = erp_directions(height, width, dtype=torch.float64, device=device).reshape(-1, 3)
        colors = image_CHW.reshape(image_CHW.shape[0], -1).T.to(torch.float32)

        # Pole vertices: straight up / down at the mean range (and colour) of the first / last row.
        pole_r, pole_c, pole_ok = [], [], []
        for row in (slice(0, width), slice((height - 1) * width, height * width)):
            ok = valid[row]
            n = ok.sum().clamp(min=1)
            pole_r.append((r[row] * ok).sum() / n)
            pole_c.append((colors[row] * ok[:, None]).sum(0) / n)
            pole_ok.append(ok.any())
        pole_dirs = torch.tensor([[0.0, -1.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64, device=device)
        r = torch.cat((r, torch.stack(pole_r)))
        valid = torch.cat((valid, torch.stack(pole_ok)))
        dirs = torch.cat((dirs, pole_dirs))
        colors = torch.cat((colors, torch.stack(pole_c)))

        triangles = _grid_triangles(r, valid, height, width)
        log_r = torch.where(valid, r, torch.ones_like(r)).log()
        tri_log = log_r[triangles]
        keep = valid[triangles].all(1) & (tri_log.amax(1) - tri_log.amin(1) <= math.log1p(gap))
        triangles = triangles[keep]

        used = torch.zeros_like(valid)
        used[triangles.reshape(-1)] = True
        points = torch.nonzero(valid & ~used).squeeze(1)

        pose64 = pose.to(dtype=torch.float64, device=device)
        vertices = pose64.camera_to_world(dirs * r[:, None])
        return ErpMesh(vertices, colors, triangles, points)


def _grid_triangles(r: torch.Tensor, valid: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """All candidate triangles `[T, 3]`: two per 2x2 block (seam closed) and the two pole fans."""
    device = r.device
    idx = torch.arange(height * width, device=device).reshape(height, width)
    right = torch.roll(idx, -1, dims=1)  # column u + 1, wrapping W-1 -> 0
    a, b = idx[:-1].reshape(-1), right[:-1].reshape(-1)
    c, d = idx[1:].reshape(-1), right[1:].reshape(-1)
    # Split along the diagonal whose end depths agree best (a hole costs infinity), so a quad that
    # straddles an edge or a hole still keeps its good half.
    log_r = torch.where(valid, r, torch.full_like(r, float("nan"))).log()

    def cost(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num((log_r[i] - log_r[j]).abs(), nan=float("inf"))

    use_ad = cost(a, d) <= cost(b, c)
    t1 = torch.where(use_ad[:, None], torch.stack((a, b, d), 1), torch.stack((a, b, c), 1))
    t2 = torch.where(use_ad[:, None], torch.stack((a, d, c), 1), torch.stack((b, d, c), 1))
    north, south = height * width, height * width + 1
    top, top_next = idx[0], right[0]
    bottom, bottom_next = idx[-1], right[-1]
    fan_n = torch.stack((torch.full_like(top, north), top, top_next), 1)
    fan_s = torch.stack((torch.full_like(bottom, south), bottom_next, bottom), 1)
    return torch.cat((t1, t2, fan_n, fan_s))


def _wrap(du: torch.Tensor, width: int) -> torch.Tensor:
    """Column differences wrapped into [-W/2, W/2)."""
    return torch.remainder(du + width / 2, width) - width / 2


def _bounding_boxes(
    uv_T32: torch.Tensor, up_T: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, ...]:
    """Candidate pixel boxes of triangles from their vertices' target pixel coordinates `uv_T32`.

    `up_T`: the triangle lies in the upper hemisphere (decides which pole a pole-enclosing triangle
    covers). Returns integer (u_min, u_count, v_min, v_count); u_min may lie outside [0, W) (wrap it).
    """
    uv = uv_T32
    u, v = uv[..., 0], uv[..., 1]
    u1 = u[:, :1] + _wrap(u - u[:, :1], width)  # unwrapped next to vertex 0
    winding = (
        _wrap(u[:, 1] - u[:, 0], width) + _wrap(u[:, 2] - u[:, 1], width) + _wrap(u[:, 0] - u[:, 2], width)
    )
    u_lo, u_hi = u1.amin(1), u1.amax(1)
    span = u_hi - u_lo
    # Around a pole (winding +-W) or wider than a quarter turn: take the full width.
    full = (winding.abs() > width / 2) | (span > width / 4)
    # Great-circle edges bulge toward the pole: tan(lat_max) <= tan(lat) / cos(d_phi / 2).
    half_dphi = (torch.where(full, torch.full_like(span, math.pi / 2), span * (math.pi / width))).clamp(
        max=1.55
    )
    lat = (0.5 - (v + 0.5) / height) * math.pi
    # Only the hemisphere-side a vertex is on can bulge (a vertex with lat <= 0 gives no northward bulge).
    lat_n = torch.atan(torch.tan(lat.amax(1).clamp(min=0)) / torch.cos(half_dphi))
    lat_s = -torch.atan(torch.tan((-lat.amin(1)).clamp(min=0)) / torch.cos(half_dphi))
    v_lo = torch.minimum(v.amin(1), (0.5 - lat_n / math.pi) * height - 0.5 + (lat_n <= 0) * height)
    v_hi = torch.maximum(v.amax(1), (0.5 - lat_s / math.pi) * height - 0.5 - (lat_s >= 0) * height)
    around_pole = winding.abs() > width / 2
    up = up_T
    v_lo = torch.where(around_pole & up, torch.zeros_like(v_lo), v_lo)
    v_hi = torch.where(around_pole & ~up, torch.full_like(v_hi, height - 1), v_hi)
    tol = 1e-6
    u_min = torch.where(full, torch.zeros_like(u_lo), torch.ceil(u_lo - tol))
    u_max = torch.where(full, torch.full_like(u_hi, width - 1), torch.floor(u_hi + tol))
    v_min = torch.ceil(v_lo - tol).clamp(0, height - 1)
    v_max = torch.floor(v_hi + tol).clamp(0, height - 1)
    u_count = (u_max - u_min + 1).clamp(min=0).long()
    v_count = (v_max - v_min + 1).clamp(min=0).long()
    return u_min.long(), u_count, v_min.long(), v_count


def _barycentric_rows(cam_T33: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the inverse of [P0 P1 P2] (columns = vertices): `rows_T33` and |det| relative to the scale.

    For a ray d, l = rows @ d solves d = sum(l_i P_i).
    """
    p0, p1, p2 = cam_T33.unbind(1)
    c12, c20, c01 = torch.cross(p1, p2, dim=-1), torch.cross(p2, p0, dim=-1), torch.cross(p0, p1, dim=-1)
    det = (p0 * c12).sum(-1)
    scale = p0.norm(dim=-1) * p1.norm(dim=-1) * p2.norm(dim=-1)
    rows = torch.stack((c12, c20, c01), 1) / det[:, None, None]
    return rows, det.abs() / scale


def _rasterise(
    rows_T9: torch.Tensor,
    boxes: tuple[torch.Tensor, ...],
    dirs_P3: torch.Tensor,
    zbuf: torch.Tensor,
    height: int,
    width: int,
    id_offset: int,
    budget: int,
) -> None:
    """Test every (triangle, candidate pixel) pair and min-reduce the packed depth keys into `zbuf`."""
    u_min, u_count, v_min, v_count = boxes
    counts = u_count * v_count
    order = torch.nonzero(counts > 0).squeeze(1)
    if order.numel() == 0:
        return
    cum = counts[order].cumsum(0)
    total = int(cum[-1])
    # Chunks of triangles holding about `budget` candidate pairs each (a huge triangle may exceed it).
    marks = torch.arange(budget, max(total, budget), budget, device=cum.device, dtype=cum.dtype)
    cuts = torch.searchsorted(cum, marks) + 1
    bounds = torch.unique(torch.cat((cuts.new_zeros(1), cuts, cuts.new_full((1,), order.numel())))).tolist()
    for start, stop in itertools.pairwise(bounds):
        tri = order[start:stop]
        n = counts[tri]
        pair_tri = torch.repeat_interleave(tri, n)
        first = torch.repeat_interleave(n.cumsum(0) - n, n)
        local = torch.arange(pair_tri.numel(), device=tri.device) - first
        nu = u_count[pair_tri]
        pu = torch.remainder(u_min[pair_tri] + local % nu, width)
        pv = v_min[pair_tri] + torch.div(local, nu, rounding_mode="floor")
        pixel = pv * width + pu
        d = dirs_P3[pixel]
        m = rows_T9[pair_tri]
        lam = torch.stack(
            (
                (m[:, 0:3] * d).sum(1),
                (m[:, 3:6] * d).sum(1),
                (m[:, 6:9] * d).sum(1),
            ),
            1,
        )
        s = lam.sum(1)
        inside = (s > 0) & (lam >= -_BARY_EPS * s[:, None]).all(1)
        depth = (1.0 / s[inside]).to(torch.float32)
        # Positive float32 bits order like the floats, so (bits << 32 | id) sorts by depth first.
        key = (depth.view(torch.int32).to(torch.int64) << 32) | (pair_tri[inside] + id_offset)
        zbuf.scatter_reduce_(0, pixel[inside], key, reduce="amin")


class ErpRasteriser:
    """Renders an `ErpMesh` into target poses (reuses the mesh across targets)."""

    def __init__(self, mesh: ErpMesh, *, pair_budget: int = 1 << 21) -> None:
        self.mesh = mesh
        self.pair_budget = pair_budget

    def render(self, pose: Pose, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (image_CHW float32, range_HW float32, valid_HW bool) seen from `pose` at height x width."""
        check_erp_size(height, width)
        mesh = self.mesh
        device = mesh.vertices_N3.device
        pose64 = pose.to(dtype=torch.float64, device=device)
        cam_N3 = pose64.world_to_camera(mesh.vertices_N3)
        dirs64_P3 = erp_directions(height, width, dtype=torch.float64, device=device).reshape(-1, 3)
        dirs_P3 = dirs64_P3.to(torch.float32)
        zbuf = torch.full((height * width,), _NO_HIT, dtype=torch.int64, device=device)

        # Per-triangle work in float32 (the winners are recomputed in float64 by `_shade`).
        tri_cam = cam_N3.to(torch.float32)[mesh.triangles_T3]  # T, 3, 3
        uv_N2 = directions_to_pixels(cam_N3, height, width).to(torch.float32)
        up_T = tri_cam[:, :, 1].sum(1) < 0  # camera y points down
        rows, rel_det = _barycentric_rows(tri_cam)
        boxes = _bounding_boxes(uv_N2[mesh.triangles_T3], up_T, height, width)
        # Triangles seen edge-on (or through the target centre) cover no pixel: skip them.
        boxes = (boxes[0], boxes[1] * (rel_det > 1e-9), boxes[2], boxes[3])
        _rasterise(rows.reshape(-1, 9), boxes, dirs_P3, zbuf, height, width, 0, self.pair_budget)

        n_tri = mesh.triangles_T3.shape[0]
        if mesh.points_P.numel():
            pts = cam_N3[mesh.points_P]
            uv = directions_to_pixels(pts, height, width).round().long()
            pixel = uv[:, 1].clamp(0, height - 1) * width + torch.remainder(uv[:, 0], width)
            depth = pts.norm(dim=-1).to(torch.float32)
            ids = torch.arange(mesh.points_P.numel(), device=device) + n_tri
            zbuf.scatter_reduce_(
                0, pixel, (depth.view(torch.int32).to(torch.int64) << 32) | ids, reduce="amin"
            )
        return self._shade(zbuf, cam_N3, dirs64_P3, n_tri, height, width)

    def _shade(self, zbuf, cam_N3, dirs64_P3, n_tri, height, width):
        """Recompute range (float64 ray / plane intersection) and colour of each pixel's winner."""
        mesh = self.mesh
        channels = mesh.colors_NC.shape[1]
        image = torch.zeros(height * width, channels, dtype=torch.float32, device=zbuf.device)
        range_ = torch.zeros(height * width, dtype=torch.float64, device=zbuf.device)
        hit = zbuf != _NO_HIT
        pixel = torch.nonzero(hit).squeeze(1)
        ident = zbuf[pixel] & 0xFFFFFFFF
        is_tri = ident < n_tri
        tri_pix, tri_id = pixel[is_tri], ident[is_tri]
        verts = mesh.triangles_T3[tri_id]
        rows, _ = _barycentric_rows(cam_N3[verts])
        lam = (rows @ dirs64_P3[tri_pix][:, :, None]).squeeze(-1)
        s = lam.sum(1)
        bary = (lam / s[:, None]).clamp(min=0)
        bary = bary / bary.sum(1, keepdim=True)
        range_[tri_pix] = 1.0 / s
        image[tri_pix] = (bary[:, :, None].to(torch.float32) * mesh.colors_NC[verts]).sum(1)
        pt_pix, pt_vertex = pixel[~is_tri], mesh.points_P[ident[~is_tri] - n_tri]
        range_[pt_pix] = cam_N3[pt_vertex].norm(dim=-1)
        image[pt_pix] = mesh.colors_NC[pt_vertex]
        image_CHW = image.T.reshape(channels, height, width)
        return image_CHW, range_.to(torch.float32).reshape(height, width), hit.reshape(height, width)


def reproject_erp(
    image_CHW: torch.Tensor,
    range_HW: torch.Tensor,
    src: Pose,
    dst: Pose,
    *,
    out_height: int | None = None,
    out_width: int | None = None,
    max_relative_gap: float | None = None,
) -> Reprojection:
    """Reproject an ERP RGB-D panorama seen from `src` into `dst` (z-buffered mesh rasterisation).

    image_CHW: any C channels (float, or integer which is rounded back); range_HW: radial distance in
    metres, non-finite or <= 0 = hole. Poses are world -> camera (pose.py); `dst` may be F-stacked
    (rotation [F,3,3]), then every output gets a leading F and the source mesh is built once.
    Output size defaults to the source size. `max_relative_gap` (max / min - 1 of a triangle's vertex
    ranges above which it is treated as a depth edge) defaults to `default_max_relative_gap(H)`.
    Runs on the device of `range_HW`; geometry in float64, rasterisation tests in float32.
    """
    if range_HW.dim() != 2 or image_CHW.dim() != 3 or tuple(image_CHW.shape[1:]) != tuple(range_HW.shape):
        raise ValueError(
            f"reproject_erp needs image_CHW [C,H,W] and range_HW [H,W] of the same size; got "
            f"{tuple(image_CHW.shape)} and {tuple(range_HW.shape)}"
        )
    height, width = range_HW.shape
    check_erp_size(height, width)
    out_h = height if out_height is None else out_height
    out_w = 2 * out_h if out_width is None else out_width
    image = image_CHW.to(range_HW.device)
    mesh = ErpMesh.build(image, range_HW, src, max_relative_gap)
    rasteriser = ErpRasteriser(mesh)
    stacked = dst.rotation.dim() == 3
    targets = (
        [Pose(dst.rotation[i], dst.position[i]) for i in range(dst.rotation.shape[0])] if stacked else [dst]
    )
    results = [rasteriser.render(t, out_h, out_w) for t in targets]
    images = [_cast_like(r[0], image_CHW) for r in results]
    if not stacked:
        return Reprojection(images[0], results[0][1], results[0][2])
    return Reprojection(
        torch.stack(images), torch.stack([r[1] for r in results]), torch.stack([r[2] for r in results])
    )


def _cast_like(image: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if like.is_floating_point():
        return image.to(like.dtype)
    info = torch.iinfo(like.dtype)
    return image.round().clamp(info.min, info.max).to(like.dtype)
