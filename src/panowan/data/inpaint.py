"""Classical inpainting of ERP images, seam-aware: OpenCV's Telea / Navier-Stokes, and a harmonic fill.

Used by the classical baselines (`panowan.eval.baselines`) and, for models whose `rgb_condition_fill` (or
`depth_condition_fill`) is one of them, to fill the holes of the condition before it is encoded
(`RoomDataset(cond_fill=..., cond_depth_fill=...)`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INPAINT_METHODS = ("telea", "ns", "harmonic")
HARMONIC_METRICS = ("sphere", "flat")
INPAINT_RADIUS = 3


def _wrap_pad(x: np.ndarray, pad: int) -> np.ndarray:
    """Pad columns (axis 1) with the wrapped columns of the other side."""
    return np.concatenate([x[:, -pad:], x, x[:, :pad]], axis=1)


def inpaint_erp(
    image: np.ndarray, hole_HW: np.ndarray, method: str, radius: int = INPAINT_RADIUS
) -> np.ndarray:
    """Inpaint the `hole_HW` pixels of an ERP image (H x W x 3 uint8, or H x W float32) across the seam.

    `cv2.inpaint` with Telea's fast marching ("telea") or Navier-Stokes ("ns"). Each side is padded with a
    quarter of the width from the other side, so holes that touch the seam see content from across it.
    "harmonic": the membrane fill of `harmonic_fill` (`radius` unused).
    """
    if method not in INPAINT_METHODS:
        raise ValueError(f"unknown inpainting method {method!r} (one of {INPAINT_METHODS})")
    if not hole_HW.any():
        return image.copy()
    if method == "harmonic":
        return harmonic_fill(image, hole_HW)
    import cv2

    if method == "telea" and image.dtype == np.float32:
        return _telea_float(image, hole_HW, radius)
    flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
    pad = max(1, image.shape[1] // 4)
    src = np.ascontiguousarray(_wrap_pad(image, pad))
    mask = np.ascontiguousarray(_wrap_pad(hole_HW.astype(np.uint8) * 255, pad))
    out = cv2.inpaint(src, mask, radius, flag)
    return np.ascontiguousarray(out[:, pad:-pad])


def _telea_float(image_HW: np.ndarray, hole_HW: np.ndarray, radius: int) -> np.ndarray:
    """Telea on a float32 map through 16 bits: OpenCV's float32 Telea is wrong (on a linear ramp it misses by 26%
    where its 16-bit path misses by 1.7% and Navier-Stokes by 1.3%; opencv/opencv#25404, still so in 5.0). The
    known range maps onto 0..65535, so the rounding is 1/65535 of that range."""
    known = image_HW[~hole_HW]
    lo, hi = float(known.min()), float(known.max())
    scale = 65535.0 / (hi - lo) if hi > lo else 1.0
    u16 = np.where(hole_HW, 0, np.rint((image_HW - lo) * scale)).astype(np.uint16)
    out = inpaint_erp(u16, hole_HW, "telea", radius).astype(np.float64) / scale + lo
    return np.where(hole_HW, out, image_HW).astype(np.float32)


@dataclass(frozen=True)
class MembraneEdges:
    """The stencil of the ERP membrane over the hole pixels, numbered in the order of `np.nonzero(hole_HW)`:
    one entry per stencil direction (left, right, up, down) of parallel arrays over the hole pixels that have a
    neighbour that way: `p` the hole pixel's number, `weight` the edge weight, `q` the neighbour's number or -1
    if it is known, `flat` the neighbour's flat index (row * W + col)."""

    n: int
    p: tuple[np.ndarray, ...]
    weight: tuple[np.ndarray, ...]
    q: tuple[np.ndarray, ...]
    flat: tuple[np.ndarray, ...]


def membrane_edges(hole_HW: np.ndarray, metric: str = "sphere") -> MembraneEdges:
    """The membrane's edges over the hole (`harmonic_fill` documents the metrics); columns wrap."""
    h, w = hole_HW.shape
    if metric == "sphere":
        phi = np.pi / 2 - (np.arange(h) + 0.5) * np.pi / h  # row-centre latitude
        edge = np.cos(np.pi / 2 - np.arange(h + 1) * np.pi / h)  # cos(latitude) of the row boundaries
        edge[[0, -1]] = 0.0  # exactly 0 at the poles (not 6e-17)
        horizontal = (w / (2.0 * h)) ** 2 / np.cos(phi)  # (dphi / dlambda)^2 / cos(phi_r)
        up, down = edge[:-1], edge[1:]
    elif metric == "flat":
        horizontal, up, down = np.ones(h), np.ones(h), np.ones(h)
        up[0] = down[-1] = 0.0
    else:
        raise ValueError(f"unknown harmonic metric {metric!r} (one of {HARMONIC_METRICS})")
    rows, cols = np.nonzero(hole_HW)
    index = np.full((h, w), -1, np.int64)
    index[rows, cols] = np.arange(rows.size)
    ps, wts, qs, flats = [], [], [], []
    for weight, nr, nc in ((horizontal[rows], rows, (cols - 1) % w), (horizontal[rows], rows, (cols + 1) % w),
                           (up[rows], rows - 1, cols), (down[rows], rows + 1, cols)):  # fmt: skip
        keep = weight > 0  # drops the neighbour beyond a pole (its weight is 0)
        q_r, q_c = nr[keep], nc[keep]
        ps.append(np.nonzero(keep)[0]), wts.append(weight[keep])
        qs.append(index[q_r, q_c]), flats.append(q_r * w + q_c)
    return MembraneEdges(rows.size, tuple(ps), tuple(wts), tuple(qs), tuple(flats))


def membrane_solve(
    values_NC: np.ndarray,
    edges: MembraneEdges,
    weights: tuple[np.ndarray, ...] | None = None,
    screen_N: np.ndarray | None = None,
) -> np.ndarray:
    """Solve the membrane over the hole pixels of `edges`: (n, C) float64 values in the order of its numbering.

    `values_NC` (H W, C) holds the known pixels' values (read at the edges' `flat`). `weights` (default
    `edges.weight`) replaces the edge weights, direction by direction: an edge to a known pixel with weight 0 is
    a natural (Neumann) boundary there instead of a Dirichlet one. Every connected part of the hole needs one
    edge of positive weight to a known pixel, or its system is singular (the caller's invariant). One sparse LU
    (`scipy.sparse.linalg.splu`) solves every channel. `screen_N` (n,), if given, is subtracted from the diagonal:
    the screened membrane (`benchmarks/plane_depth_probe.py`)."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    n = edges.n
    weights = edges.weight if weights is None else weights
    diag, rhs = np.zeros(n), np.zeros((n, values_NC.shape[1]))
    i_off, j_off, v_off = [], [], []
    for p, wt, q, flat in zip(edges.p, weights, edges.q, edges.flat, strict=True):
        diag += np.bincount(p, wt, minlength=n)
        inner, outer = q >= 0, q < 0
        i_off.append(p[inner]), j_off.append(q[inner]), v_off.append(-wt[inner])
        np.add.at(rhs, p[outer], wt[outer, None] * values_NC[flat[outer]])
    if screen_N is not None:
        diag = diag - screen_N
    i_all = np.concatenate([np.arange(n), *i_off])
    j_all = np.concatenate([np.arange(n), *j_off])
    v_all = np.concatenate([diag, *v_off])
    return splu(sp.csc_matrix((v_all, (i_all, j_all)), shape=(n, n))).solve(rhs)


def harmonic_fill(image: np.ndarray, hole_HW: np.ndarray, metric: str = "sphere") -> np.ndarray:
    """Fill the `hole_HW` pixels of an ERP image (H x W or H x W x C, any dtype) with the discrete harmonic
    (membrane) interpolant of the known pixels around them.

    Solves the 5-point Laplace equation on the hole pixels, Dirichlet at the known pixels (their values,
    unchanged in the output), in float64. Columns wrap around (longitude is periodic: the left neighbour of
    column 0 is column W-1); the pole rows are reflecting (Neumann): a neighbour above row 0 or below row H-1
    is dropped from the stencil. One sparse LU (`scipy.sparse.linalg.splu`) solves every channel.

    metric "sphere" (the default) discretises the Laplace-Beltrami operator of the sphere in ERP coordinates
    (latitude phi, longitude lambda): edge weights (dphi / dlambda)^2 / cos(phi_r) between horizontal
    neighbours and cos(phi) of the row boundary between vertical ones. Horizontal neighbours near a pole are
    physically close and couple strongly, so a hole near a pole fills along its circle of latitude, and the
    pole boundaries' weight cos(+-90 deg) = 0 makes them reflecting by itself. "flat" is the plain image
    Laplacian (every weight 1). On the hole PSNR of the synthetic rooms "sphere" scores higher (BENCHMARKS
    of the eval baselines; both far above Telea / Navier-Stokes on depth AbsRel).

    Returns the input's dtype: integers rounded and clipped to their range, floats cast. ValueError if a
    component of the hole has no known pixel to take values from (only when no pixel is known).
    """
    hole = np.asarray(hole_HW, bool)
    if image.shape[:2] != hole.shape:
        raise ValueError(f"harmonic_fill: image {image.shape} and hole {hole.shape} differ in size")
    if not hole.any():
        return image.copy()
    if hole.all():
        raise ValueError("harmonic_fill: no known pixel, the hole has no boundary values to interpolate")
    values = image.reshape(hole.size, -1).astype(np.float64)  # (H W, C)
    out = values.copy()
    out[np.flatnonzero(hole)] = membrane_solve(values, membrane_edges(hole, metric))  # np.nonzero's order
    return cast_like(out.reshape(image.shape), image.dtype)


def cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float64 values as `dtype`: integers rounded and clipped to their range, floats cast."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    return values.astype(dtype)
