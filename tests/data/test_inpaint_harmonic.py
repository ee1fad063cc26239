"""The harmonic (membrane) fill of `panowan.data.inpaint`: analytic solutions, a dense solve, the seam, dtypes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from panowan.data.inpaint import HARMONIC_METRICS, harmonic_fill, inpaint_erp


def _row_profile(h: int, w: int, metric: str) -> np.ndarray:
    """A function of the row alone that is exactly discrete-harmonic in the interior rows: the flux between
    rows r and r+1, vertical weight x (f[r+1] - f[r]), is the same for every r."""
    if metric == "flat":
        return 2.0 + 0.25 * np.arange(h)
    boundary_cos = [math.cos(math.pi / 2 - (r + 1) * math.pi / h) for r in range(h - 1)]
    return 2.0 + np.concatenate([[0.0], np.cumsum([0.05 / c for c in boundary_cos])])


def _reference_solve(image: np.ndarray, hole: np.ndarray, metric: str) -> np.ndarray:
    """The same discrete problem, assembled pixel by pixel as a dense matrix and solved by numpy."""
    h, w = hole.shape
    cells = [(r, c) for r in range(h) for c in range(w) if hole[r, c]]
    number = {rc: k for k, rc in enumerate(cells)}
    a = np.zeros((len(cells), len(cells)))
    b = np.zeros((len(cells), image.shape[2]))
    for k, (r, c) in enumerate(cells):
        if metric == "flat":
            edges = [((r, (c - 1) % w), 1.0), ((r, (c + 1) % w), 1.0)]
            edges += [((r - 1, c), 1.0)] if r > 0 else []
            edges += [((r + 1, c), 1.0)] if r < h - 1 else []
        else:
            lat = math.pi / 2 - (r + 0.5) * math.pi / h
            horiz = (w / (2 * h)) ** 2 / math.cos(lat)
            edges = [((r, (c - 1) % w), horiz), ((r, (c + 1) % w), horiz)]
            edges += [((r - 1, c), math.sin(r * math.pi / h))] if r > 0 else []  # cos(latitude of boundary)
            edges += [((r + 1, c), math.sin((r + 1) * math.pi / h))] if r < h - 1 else []
        for (nr, nc), weight in edges:
            a[k, k] += weight
            if hole[nr, nc]:
                a[k, number[(nr, nc)]] -= weight
            else:
                b[k] += weight * image[nr, nc]
    x = np.linalg.solve(a, b)
    out = image.astype(np.float64).copy()
    for k, (r, c) in enumerate(cells):
        out[r, c] = x[k]
    return out


@pytest.mark.parametrize("metric", HARMONIC_METRICS)
def test_exactly_harmonic_field_across_the_seam_is_reproduced(metric):
    """A row profile harmonic for the operator, constant along rows; the hole spans the seam and many rows."""
    h, w = 24, 48
    truth = np.repeat(_row_profile(h, w, metric)[:, None], w, axis=1)
    hole = np.zeros((h, w), bool)
    hole[3:20, -10:] = True
    hole[5:18, :7] = True  # one component across column 0 / W-1
    hole[8:12, 20:30] = True
    image = np.where(hole, -123.0, truth)  # values under the hole are ignored
    out = harmonic_fill(image, hole, metric)
    np.testing.assert_allclose(out, truth, rtol=0, atol=1e-10)
    assert (out[~hole] == truth[~hole]).all()


@pytest.mark.parametrize("metric", HARMONIC_METRICS)
def test_pole_rows_are_reflecting(metric):
    """Whole rows missing at a pole: with the neighbour beyond the pole dropped, the fill is the nearest row."""
    h, w = 16, 32
    profile = np.linspace(1.0, 5.0, h)
    truth = np.repeat(profile[:, None], w, axis=1)
    hole = np.zeros((h, w), bool)
    hole[:3] = True
    hole[-2:] = True
    out = harmonic_fill(np.where(hole, 0.0, truth), hole, metric)
    np.testing.assert_allclose(out[:3], profile[3], atol=1e-10)
    np.testing.assert_allclose(out[-2:], profile[-3], atol=1e-10)


@pytest.mark.parametrize("metric", HARMONIC_METRICS)
def test_matches_a_dense_solve_of_the_same_system(metric):
    g = np.random.default_rng(3)
    h, w = 8, 16
    image = g.random((h, w, 2))
    hole = g.random((h, w)) < 0.45
    hole[0, :5] = hole[-1, 10:] = True  # pole rows
    hole[2:6, 0] = hole[2:6, -1] = True  # the seam
    out = harmonic_fill(image, hole, metric)
    np.testing.assert_allclose(out, _reference_solve(image, hole, metric), rtol=0, atol=1e-10)
    # discrete maximum principle: no value outside the known range
    assert out.min() >= image[~hole].min() - 1e-12 and out.max() <= image[~hole].max() + 1e-12


def test_seam_wrap_commutes_with_rolling():
    """A hole across column 0 fills exactly as the rolled image's fill, rolled back."""
    g = np.random.default_rng(5)
    h, w = 16, 32
    image = g.random((h, w, 3))
    hole = np.zeros((h, w), bool)
    hole[4:12, -5:] = hole[6:10, :6] = True
    out = harmonic_fill(image, hole)
    for shift in (7, 16, 29):
        rolled = harmonic_fill(np.roll(image, shift, axis=1), np.roll(hole, shift, axis=1))
        np.testing.assert_allclose(np.roll(rolled, -shift, axis=1), out, rtol=0, atol=1e-12)
    # the seam is no border: the hole next to column 0 takes values from column W-1 too
    half = np.zeros((h, w))
    half[:, w // 2 :] = 1.0
    seam_hole = np.zeros((h, w), bool)
    seam_hole[:, :2] = seam_hole[:, -2:] = True
    fill = harmonic_fill(half, seam_hole)
    np.testing.assert_allclose(fill[:, [-2, -1, 0, 1]], np.tile([0.8, 0.6, 0.4, 0.2], (h, 1)), atol=1e-12)


def test_dtypes_and_through_inpaint_erp():
    g = np.random.default_rng(7)
    h, w = 32, 64
    rgb = g.integers(0, 256, (h, w, 3), dtype=np.uint8)
    depth = (g.random((h, w)) + 1).astype(np.float32)
    hole = np.zeros((h, w), bool)
    hole[10:20, 30:50] = True
    out_rgb = inpaint_erp(rgb, hole, "harmonic")
    out_depth = inpaint_erp(depth, hole, "harmonic")
    assert out_rgb.dtype == np.uint8 and out_rgb.shape == rgb.shape
    assert out_depth.dtype == np.float32 and out_depth.shape == depth.shape
    np.testing.assert_array_equal(out_rgb[~hole], rgb[~hole])
    np.testing.assert_array_equal(out_depth[~hole], depth[~hole])
    exact = harmonic_fill(rgb.astype(np.float64), hole)
    np.testing.assert_array_equal(out_rgb, np.clip(np.rint(exact), 0, 255).astype(np.uint8))
    np.testing.assert_allclose(out_depth, harmonic_fill(depth.astype(np.float64), hole), rtol=1e-6)
    assert (out_depth[hole] >= depth[~hole].min()).all()
    np.testing.assert_array_equal(inpaint_erp(rgb, np.zeros((h, w), bool), "harmonic"), rgb)


def test_no_known_pixel_is_an_error():
    image = np.ones((8, 16), np.float32)
    with pytest.raises(ValueError, match="no known pixel"):
        harmonic_fill(image, np.ones((8, 16), bool))
    with pytest.raises(ValueError, match="no known pixel"):
        inpaint_erp(image, np.ones((8, 16), bool), "harmonic")
    with pytest.raises(ValueError, match="metric"):
        harmonic_fill(image, np.eye(8, 16, dtype=bool), "cubic")
    with pytest.raises(ValueError, match="differ in size"):
        harmonic_fill(image, np.zeros((8, 8), bool))


def test_room_dataset_takes_harmonic_condition_fills(prepared_root):
    from panowan.data.dataset import RoomDataset

    zero = RoomDataset(prepared_root, num_frames=5)
    harm = RoomDataset(prepared_root, num_frames=5, cond_fill="harmonic", cond_depth_fill="harmonic")
    a, b = zero[0], harm[0]
    known = (b.mask[:, 0] > 0.5).numpy()  # F x H x W
    hole = ~known
    assert hole.any()
    rgb_a, rgb_b = a.cond_rgb.numpy().transpose(0, 2, 3, 1), b.cond_rgb.numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(rgb_b[known], rgb_a[known])  # known pixels untouched
    assert (rgb_a[hole] == 0).all() and (rgb_b[hole] != 0).any(axis=-1).mean() > 0.9
    depth_a, depth_b = a.cond_depth[:, 0].numpy(), b.cond_depth[:, 0].numpy()
    np.testing.assert_array_equal(depth_b[known], depth_a[known])
    assert (depth_a[hole] == 0).all() and (depth_b[hole] != 0).mean() > 0.9  # the holes hold the fill now


def test_screened_membrane_reproduces_a_plane_inverse_range():
    """`membrane_solve(screen_N=2 cos(lat) dphi^2)` solves (Delta + 2) f = 0, whose solutions include every
    linear function of the ray direction, so a hole inside one plane gets that plane's inverse range back; the
    plain membrane bends it (benchmarks/plane_depth_probe.py)."""
    import torch

    from panowan.data.inpaint import membrane_edges, membrane_solve
    from panowan.geometry.erp import erp_directions

    h, w = 64, 128
    normal = np.array([0.3, -0.8, 0.2]) / np.linalg.norm([0.3, -0.8, 0.2])
    facing = erp_directions(h, w, dtype=torch.float64).numpy() @ normal
    inverse = np.maximum(facing, 0.05) / 1.5  # 1 / range of the plane n . x = 1.5 where it faces the camera
    rows, cols = np.nonzero(facing > 0.7)
    hole = np.zeros((h, w), bool)
    r0, c0 = int(rows.mean()), int(cols.mean())
    hole[r0 - 4 : r0 + 4, c0 - 8 : c0 + 8] = True
    assert (facing[hole] > 0.7).all()
    edges = membrane_edges(hole)
    hole_rows = np.nonzero(hole)[0]
    screen = 2 * np.cos(np.pi / 2 - (hole_rows + 0.5) * np.pi / h) * (np.pi / h) ** 2
    values = inverse.reshape(-1, 1)
    screened = membrane_solve(values, edges, screen_N=screen)[:, 0]
    plain = membrane_solve(values, edges)[:, 0]
    truth = inverse[hole]
    assert np.abs(screened / truth - 1).max() < 1e-4
    assert np.abs(plain / truth - 1).max() > 1e-2
