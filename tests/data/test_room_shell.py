"""The room's shell fitted to view 0 and the fill from it (`panowan.data.room_shell`), against the synthetic
rooms' own ray caster (an independent computation of the same geometry)."""

from __future__ import annotations

import numpy as np
import pytest

from panowan.data.depth_fill import depth_steered_fill
from panowan.data.room_shell import FLOOR, RoomShell, Wall, cast_room_shell, fit_room_shell, room_shell_fill
from panowan.data.synth import cast_rays, make_scene, render_view, room_seed
from panowan.geometry.erp import erp_directions_N3
from panowan.geometry.pose import Pose

H, W = 128, 256


@pytest.fixture(scope="module")
def room():
    """A rectangular hard room (seed chosen so: 21 objects, a partition) and its shell fitted to view 0."""
    scene = make_scene(room_seed(11, 14), 2, "hard")
    assert scene.layout == "rectangular"
    _, range0 = render_view(scene, scene.poses[0], H, W)
    pose = scene.poses[0]
    shell = fit_room_shell(range0, pose)
    return scene, shell


def _rays(pose) -> tuple[np.ndarray, np.ndarray]:
    return pose.position.double().numpy(), erp_directions_N3(H, W) @ pose.rotation.double().numpy()


def test_fit_finds_floor_ceiling_and_every_wall(room):
    scene, shell = room
    lo, hi = scene.room_boxes[0]
    assert shell.floor_y == pytest.approx(hi[1], abs=0.01) and shell.ceiling_y == pytest.approx(
        lo[1], abs=0.01
    )
    for axis in (0, 2):
        for face in (lo[axis], hi[axis]):
            assert min(abs(w.offset - face) for w in shell.walls if w.axis == axis) < 0.02


def test_cast_from_another_view_meets_the_empty_room(room):
    scene, shell = room
    origin, dirs = _rays(scene.poses[1])
    t_true, _, mat = cast_rays(scene, origin, dirs, objects=False)
    label, t = cast_room_shell(origin, dirs, shell)
    assert (np.abs(t - t_true) / t_true < 0.01).mean() > 0.95
    floor_rays = mat == 1  # material 1: the floor
    assert (label[floor_rays] == FLOOR).mean() > 0.95


def test_a_seen_through_cell_removes_the_plane():
    wall = Wall(axis=2, offset=2.0, lo=-1.0, hi=1.0, q0=-1.3, y0=-1.0, see_through=np.zeros((53, 41), bool))
    shell = RoomShell(floor_y=1.0, ceiling_y=-1.0, walls=(wall,))
    ray = np.array([[0.0, 0.0, 1.0]])
    assert cast_room_shell(np.zeros(3), ray, shell)[1][0] == pytest.approx(2.0)
    wall.see_through[26, 20] = True  # the cell at q = 0, y = 0
    label, t = cast_room_shell(np.zeros(3), ray, shell)
    assert label[0] == -1 and np.isinf(t[0])


def test_fill_keeps_known_pixels_and_gets_a_wall_hole_depth_right(room):
    scene, shell = room
    pose = scene.poses[1]
    rgb, rng = render_view(scene, pose, H, W)
    origin, dirs = _rays(pose)
    _, _, mat = cast_rays(scene, origin, dirs)
    mat = mat.reshape(H, W)
    # an 8x8 block of wall pixels, its neighbours on the wall too
    rows, cols = np.nonzero(mat == 0)
    r, c = next(
        (r, c)
        for r, c in zip(rows, cols, strict=True)
        if 8 <= r < H - 16 and (mat[r - 4 : r + 12, c - 4 : c + 12] == 0).all()
    )
    known = np.ones((H, W), bool)
    known[r : r + 8, c : c + 8] = False
    out_rgb, out_range = room_shell_fill(rgb, np.where(known, rng, 0), known, pose, shell)
    assert out_rgb.dtype == np.uint8 and out_range.dtype == np.float32
    np.testing.assert_array_equal(out_rgb[known], rgb[known])
    np.testing.assert_array_equal(out_range[known], rng[known])
    hole = ~known
    error = np.abs(out_range[hole] - rng[hole]).max() / rng[hole].min()
    _, steered = depth_steered_fill(rgb, np.where(known, rng, 0), known)
    assert error < 1e-4  # the plane's range (the fitted offset is the median of its points)
    assert np.abs(steered[hole] - rng[hole]).max() / rng[hole].min() > 100 * error  # a membrane bends it


def test_fill_by_label_keeps_each_surface_to_its_own_boundary():
    """A hole across two surfaces of constant colour is filled with each surface's own
    colour exactly (the membrane with Dirichlet values from its own label only), where the plain membrane blends."""
    from panowan.data.inpaint import harmonic_fill
    from panowan.data.room_shell import fill_by_label

    label = np.zeros((16, 32), np.int64)
    label[:, 16:] = 1
    image = np.where(label[..., None] == 0, 10.0, 200.0).repeat(3, -1)
    known = np.ones((16, 32), bool)
    known[4:12, 10:22] = False
    base = harmonic_fill(np.where(known[..., None], image, 0), ~known)
    out = fill_by_label(base, known, label)
    np.testing.assert_allclose(out, image, atol=1e-9)
    assert np.abs(base - image)[~known].max() > 50  # the plain membrane does blend the two


def test_bad_input_is_refused_and_a_hole_off_the_shell_keeps_the_harmonic_fill():
    from panowan.eval.baselines import baseline_view

    with pytest.raises(ValueError, match="no pixel with a valid range"):
        fit_room_shell(np.zeros((16, 32)), Pose.identity())
    rgb = np.full((16, 32, 3), 100, np.uint8)
    known = np.ones((16, 32), bool)
    known[6:9, 10:14] = False
    with pytest.raises(ValueError, match="needs the view's pose"):
        baseline_view(rgb, np.ones((16, 32), np.float32), known, "room_shell")
    # A shell far from every pixel: no known pixel lies on its surfaces and the cast range is implausible, so the
    # hole keeps the harmonic fill (here the constant 100) and the depth-steered range.
    empty = RoomShell(floor_y=1e6, ceiling_y=-1e6, walls=())
    out_rgb, out_range = room_shell_fill(rgb, np.ones((16, 32)), known, Pose.identity(), empty)
    assert (out_rgb == 100).all() and np.allclose(out_range, 1.0)
