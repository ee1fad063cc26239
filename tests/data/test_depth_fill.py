"""The depth-steered fill (`panowan.data.depth_fill`): constructed holes with known answers, the fallback, the seam,
dtypes and determinism, and its wiring as a baseline and as a condition fill."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panowan.data.depth_fill import (
    depth_steered_fill,
    fill_depth_from_background,
    fill_rgb_on_surface,
)
from panowan.data.inpaint import harmonic_fill

H, W = 32, 64
NEAR, FAR = 1.0, 4.0
RED, BLUE = (200, 30, 30), (20, 40, 220)


def edge_scene(first: int = 20, last: int = 26):
    """A near box (columns < `first`, red, 1 m) beside a far plane (columns >= `last`, blue, 4 m), the hole the
    full-height strip between them: the disocclusion beside the box, whose truth is the far plane."""
    rgb = np.zeros((H, W, 3), np.uint8)
    depth = np.full((H, W), FAR, np.float32)
    rgb[:] = BLUE
    rgb[:, :first], depth[:, :first] = RED, NEAR
    known = np.ones((H, W), bool)
    known[:, first:last] = False
    return (
        np.where(known[..., None], rgb, 0).astype(np.uint8),
        np.where(known, depth, 0).astype(np.float32),
        known,
    )


def test_hole_at_a_depth_edge_takes_the_far_side():
    """Depth: the far plane's (Dirichlet there, Neumann on the box); colour: the far side's, where the plain
    membrane blends both sides (so the test tells them apart)."""
    rgb, depth, known = edge_scene()
    out_rgb, out_depth = depth_steered_fill(rgb, depth, known)
    hole = ~known
    np.testing.assert_allclose(out_depth[hole], FAR, rtol=1e-6)
    assert (out_rgb[hole] == BLUE).all()
    plain = harmonic_fill(depth, hole)
    assert plain[hole].min() < 0.8 * FAR  # the harmonic fill pulls the near box in
    assert (harmonic_fill(rgb, hole)[hole][:, 0] > 60).any()  # and its red


@pytest.mark.parametrize("space", ["range", "inverse", "log"])
def test_hole_inside_a_plane_equals_the_harmonic_fill(space):
    """No depth edge at the hole: every boundary pixel is background and agrees with the filled depth, so both
    the depth (in the chosen space) and the colour are the plain membrane of `harmonic_fill`."""
    g = np.random.default_rng(3)
    rows, cols = np.mgrid[0:H, 0:W]
    depth = (3.0 + 0.05 * np.sin(cols * 2 * np.pi / W) + 0.01 * rows).astype(np.float64)
    rgb = g.random((H, W, 3)) * 255
    hole = np.zeros((H, W), bool)
    hole[8:20, 25:40] = True
    hole[12:15, 50:53] = True
    out_rgb, out_depth = depth_steered_fill(rgb, np.where(hole, 0, depth), ~hole, depth_space=space)
    forward = {"range": lambda d: d, "inverse": lambda d: 1 / d, "log": np.log}[space]
    backward = {"range": lambda d: d, "inverse": lambda d: 1 / d, "log": np.exp}[space]
    np.testing.assert_allclose(out_depth, backward(harmonic_fill(forward(depth), hole)), rtol=1e-10)
    np.testing.assert_allclose(out_rgb, harmonic_fill(rgb, hole), rtol=1e-10)


def test_plane_constant_fill_is_exact():
    """A hole in a constant-depth, constant-colour plane is filled with exactly that depth and colour."""
    rgb = np.full((H, W, 3), 90, np.uint8)
    depth = np.full((H, W), 2.5, np.float32)
    known = np.ones((H, W), bool)
    known[5:12, 10:30] = False
    out_rgb, out_depth = depth_steered_fill(rgb, depth, known)
    assert (out_rgb == 90).all()
    np.testing.assert_allclose(out_depth, 2.5, rtol=1e-6)


def test_dtypes_shapes_known_pixels_and_determinism():
    rgb, depth, known = edge_scene()
    a_rgb, a_depth = depth_steered_fill(rgb, depth, known)
    b_rgb, b_depth = depth_steered_fill(rgb, depth, known)
    assert a_rgb.dtype == np.uint8 and a_rgb.shape == rgb.shape
    assert a_depth.dtype == np.float32 and a_depth.shape == depth.shape
    np.testing.assert_array_equal(a_rgb[known], rgb[known])
    np.testing.assert_array_equal(a_depth[known], depth[known])
    assert a_rgb.tobytes() == b_rgb.tobytes() and a_depth.tobytes() == b_depth.tobytes()
    gray, _ = depth_steered_fill(rgb[..., 0].astype(np.float32), depth, known)  # H x W colour
    assert gray.dtype == np.float32 and gray.shape == (H, W)
    np.testing.assert_allclose(gray[~known], BLUE[0], rtol=1e-6)


def test_seam_wrap_is_rolling_invariant():
    """The strip moved across the seam (columns wrap in the membrane and in the local background test) fills as
    it does in the middle."""
    rgb, depth, known = edge_scene()
    want_rgb, want_depth = depth_steered_fill(rgb, depth, known)
    shift = W - 22  # the hole now spans columns 62, 63, 0, .. 3
    rolled = [np.roll(x, shift, axis=1) for x in (rgb, depth, known)]
    got_rgb, got_depth = depth_steered_fill(*rolled)
    assert not rolled[2][:, [0, W - 1]].any()
    np.testing.assert_array_equal(got_rgb, np.roll(want_rgb, shift, axis=1))
    np.testing.assert_allclose(got_depth, np.roll(want_depth, shift, axis=1), rtol=1e-6)


def test_part_without_background_falls_back_to_the_harmonic_fill():
    """A one-pixel hole inside the near box, close to the strip's far side: every pixel around it has a much
    farther boundary pixel within the window, so none is background; that part falls back to the plain membrane
    (the box's depth), and the strip is still filled from the far side."""
    _, depth, known = edge_scene(20, 24)  # the far side at column 24, within 8 columns of columns 16 - 18
    known[16, 17] = False
    valid = known & (depth > 0)
    out, fell_back = fill_depth_from_background(np.where(valid, depth, 1.0), valid)
    assert fell_back == 1
    np.testing.assert_allclose(out[16, 17], NEAR, rtol=1e-9)
    np.testing.assert_allclose(out[:, 20:24], FAR, rtol=1e-9)


def test_colour_without_agreeing_boundary_falls_back_to_the_harmonic_fill():
    """When no boundary pixel's depth agrees with the filled depth beside it, the colour is the plain membrane."""
    g = np.random.default_rng(5)
    rgb = g.random((H, W, 3)) * 255
    depth = np.ones((H, W))
    hole = np.zeros((H, W), bool)
    hole[10:20, 10:20] = True
    depth[hole] = 10.0  # nothing around it is at 10 m
    np.testing.assert_allclose(fill_rgb_on_surface(rgb, depth, ~hole), harmonic_fill(rgb, hole), rtol=1e-12)


def test_known_pixel_with_invalid_depth_keeps_its_colour_and_gets_a_depth():
    rgb, depth, known = edge_scene()
    depth[3, 40] = 0.0  # known colour, no depth
    out_rgb, out_depth = depth_steered_fill(rgb, depth, known)
    assert tuple(out_rgb[3, 40]) == BLUE
    np.testing.assert_allclose(out_depth[3, 40], FAR, rtol=1e-6)


def test_bad_input_is_refused():
    rgb, depth, known = edge_scene()
    with pytest.raises(ValueError, match="differ in size"):
        depth_steered_fill(rgb, depth[:, :-1], known)
    with pytest.raises(ValueError, match="depth space"):
        depth_steered_fill(rgb, depth, known, depth_space="disparity")
    with pytest.raises(ValueError, match="must be >= 0"):
        depth_steered_fill(rgb, depth, known, rgb_tolerance=-0.1)
    with pytest.raises(ValueError, match="no known pixel with a valid depth"):
        depth_steered_fill(rgb, np.zeros_like(depth), known)


def test_baseline_and_summary_know_the_fill():
    """ "depth_steered" is a classical fill: a baseline (the same arrays as the function) and a rival in the
    summaries; and a condition fill a model may name."""
    from panowan.eval.baselines import CLASSICAL_FILLS, baseline_view
    from panowan.eval.summary import best_classical
    from panowan.models.presets import CONDITION_FILLS

    rgb, depth, known = edge_scene()
    got = baseline_view(rgb, depth, known, "depth_steered")
    want = depth_steered_fill(rgb, depth, known)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert "depth_steered" in CLASSICAL_FILLS and "depth_steered" in CONDITION_FILLS
    methods = {m: {"mean": {"hole": {"psnr": p}}} for m, p in (("model", 20.0), ("harmonic", 18.0),
                                                                 ("depth_steered", 19.0))}  # fmt: skip
    assert best_classical(methods)["hole_psnr"]["method"] == "depth_steered"


@pytest.mark.parametrize("method", ["depth_steered", "room_shell"])
def test_condition_fill_matches_the_baseline(prepared_root, method):
    """RoomDataset(cond_fill=method, cond_depth_fill=method): the holes of each view's conditions hold the
    baseline's RGB and (normalised) range; known pixels are as with "zero"."""
    from panowan.data.dataset import RoomDataset, known_mask, validate_room
    from panowan.data.io import read_depth, read_rgb
    from panowan.data.room_shell import fit_room
    from panowan.eval.baselines import baseline_view

    zero = RoomDataset(prepared_root, num_frames=5)[0]
    fill = RoomDataset(prepared_root, num_frames=5, cond_fill=method, cond_depth_fill=method)[0]
    info = validate_room(prepared_root / fill.room_id)
    norm = fill.depth_norm
    checked = 0
    for f, view in enumerate(fill.view_indices):
        known = fill.mask[f, 0].numpy() > 0.5
        np.testing.assert_array_equal(fill.cond_rgb[f].numpy()[:, known], zero.cond_rgb[f].numpy()[:, known])
        if view == 0 or known.all():
            continue
        depth = read_depth(info.paths.cond_depth(view), info.size, info.paths.root)
        view_known = known_mask(depth, None, "known", info.paths, view)
        rgb = read_rgb(info.paths.cond_rgb(view), info.size, info.paths.root)
        room = (info.poses[info.views.index(view)], fit_room(info)) if method == "room_shell" else None
        want_rgb, want_depth = baseline_view(rgb, depth, view_known, method, room)
        hole = ~known
        got = fill.cond_rgb[f].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(got[hole], want_rgb[hole] / 127.5 - 1, atol=1e-6)
        want_n = np.clip((np.log(want_depth) - norm.center) / norm.half_range, -1, 1)
        np.testing.assert_allclose(fill.cond_depth[f, 0].numpy()[hole], want_n[hole], atol=1e-5)
        checked += 1
    assert checked > 0
    assert torch.equal(fill.rgb, zero.rgb) and torch.equal(fill.mask, zero.mask)
