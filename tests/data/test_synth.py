"""Synthetic rooms: determinism, speed, pose files, and exact ranges against analytic references."""

from __future__ import annotations

import hashlib
import math
import time

import numpy as np
import pytest
import torch

from panowan.data.layout import RoomPaths, scan_rooms
from panowan.data.synth import (
    Box,
    Light,
    Material,
    Scene,
    Sphere,
    is_free,
    make_scene,
    render_view,
    room_seed,
    synth_rooms,
)
from panowan.geometry.pose import Pose, load_pose, yaw_matrix


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_files_other_seed_differs(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        synth_rooms(tmp_path / name, 2, 3, 16, 32, seed=seed)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a.keys() == b.keys() and len(a) == 2 * (3 * 3 + 3)  # per view png+npy+pose; input pano+depth+text
    assert all(a[k] == b[k] for k in a)
    assert any(a[k] != c[k] for k in a)


@pytest.mark.slow
def test_eight_rooms_nine_views_256x512_is_fast(tmp_path):
    # CPU time of this process (one worker), so other jobs sharing the machine do not make it flaky.
    start_cpu, start = time.process_time(), time.perf_counter()
    synth_rooms(tmp_path, 8, 9, 256, 512, seed=0, workers=1)
    cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start
    assert len(scan_rooms(tmp_path)) == 8 and len(list(tmp_path.rglob("panorama_*_depth.npy"))) == 8 * 10
    print(f"synth 8 rooms x 9 views at 256x512: {cpu:.1f} s CPU, {wall:.1f} s wall")
    assert cpu < 30, f"synth of 8 x 9 views at 256x512 took {cpu:.1f} s of CPU"


def test_pose_json_round_trip_and_relative_to_view0(tmp_path):
    synth_rooms(tmp_path, 1, 4, 16, 32, seed=2)
    paths = RoomPaths(scan_rooms(tmp_path)[0])
    scene = make_scene(room_seed(2, 0), 4)
    for v, pose in enumerate(scene.poses):
        loaded = load_pose(paths.pose(v))
        torch.testing.assert_close(loaded.rotation, pose.rotation, atol=1e-12, rtol=0)
        torch.testing.assert_close(loaded.position, pose.position, atol=1e-12, rtol=0)
    assert torch.equal(load_pose(paths.pose(0)).position, torch.zeros(3, dtype=torch.float64))
    # The files written are exactly what render_view gives for the loaded pose.
    _rgb, rng = render_view(scene, load_pose(paths.pose(3)), 16, 32)
    assert np.array_equal(np.load(paths.gt_depth(3)), rng)


def _reference_dirs(h, w):
    """NOTES.md's pixel -> direction formula, written independently with a loop (float64)."""
    d = np.zeros((h, w, 3))
    for v in range(h):
        for u in range(w):
            phi = ((u + 0.5) / w - 0.5) * 2 * math.pi
            theta = (0.5 - (v + 0.5) / h) * math.pi
            d[v, u] = (math.sin(phi) * math.cos(theta), -math.sin(theta), math.cos(phi) * math.cos(theta))
    return d


def test_box_room_with_sphere_range_is_analytic():
    plain = Material("plain", np.full(3, 0.5), np.full(3, 0.5))
    lo, hi = np.array([-2.0, -1.0, -3.0]), np.array([4.0, 1.5, 2.5])
    sphere = Sphere(np.array([0.0, 0.0, 1.5]), 0.5, plain)
    scene = Scene(
        [(lo, hi)], plain, plain, plain, [sphere], [Light(np.array([0.0, -0.5, 0.0]), np.ones(3))], 0.2, []
    )
    yaw = 0.7
    pose = Pose(yaw_matrix(yaw), torch.tensor([0.3, 0.2, -0.4], dtype=torch.float64))
    h, w = 24, 48
    _, rng = render_view(scene, pose, h, w)
    o = pose.position.numpy()
    r = pose.rotation.numpy()
    dirs = _reference_dirs(h, w)
    expected = np.zeros((h, w))
    for v in range(h):
        for u in range(w):
            d = r.T @ dirs[v, u]  # world ray
            t_wall = min(
                (hi[i] - o[i]) / d[i] if d[i] > 0 else (lo[i] - o[i]) / d[i]
                for i in range(3)
                if abs(d[i]) > 1e-15
            )
            oc = o - sphere.center
            b, c = d @ oc, oc @ oc - sphere.radius**2
            disc = b * b - c
            t_sphere = -b - math.sqrt(disc) if disc > 0 and -b - math.sqrt(disc) > 0 else math.inf
            expected[v, u] = min(t_wall, t_sphere)
    assert (expected < 3).any() and (np.abs(expected - np.min(expected)) > 0).any()
    np.testing.assert_allclose(rng, expected, rtol=1e-6)


def test_l_room_box_object_hits_and_free_cameras():
    for seed in range(6):
        scene = make_scene(seed, 5)
        for pose in scene.poses:
            assert is_free((scene.room_boxes, scene.objects), pose.position.numpy())
        rgb, rng = render_view(scene, scene.poses[1], 16, 32)
        assert rgb.dtype == np.uint8 and rng.dtype == np.float32 and np.all(rng > 0.29)
        assert scene.description.startswith("A ") and len(scene.description) > 40


def test_box_face_range_matches_plane_distance():
    plain = Material("checker", np.zeros(3), np.ones(3), 0.3)
    room = (np.array([-5.0, -2.0, -5.0]), np.array([5.0, 1.0, 5.0]))
    table = Box(np.array([-1.0, -0.2, 1.0]), np.array([1.0, 1.0, 2.0]), plain)
    scene = Scene([room], plain, plain, plain, [table], [], 1.0, [])
    _, rng = render_view(scene, Pose.identity(), 32, 64)
    # The centre pixels look along +z (just off the axis): they hit the table front face at z = 1.
    dirs = _reference_dirs(32, 64)
    for v, u in ((15, 31), (16, 32), (17, 30)):
        assert rng[v, u] == pytest.approx(1.0 / dirs[v, u, 2], rel=1e-6)


# sha256 over (relative path, NUL, bytes) of every room file that `synth_rooms(out, 2, 3, 16, 32, seed=0)`
# wrote before the "hard" generator existed: the "easy" generator must stay bit-for-bit what it was.
EASY_ROOMS_SHA256 = "745bbf3f69da86c3dd2bcc6fe864360e12a70dcb68ab51d9d97714716aa43b65"


def _tree_sha256(root) -> tuple[int, str]:
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "synth_stats.json")
    for p in files:
        digest.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes())
    return len(files), digest.hexdigest()


def test_easy_rooms_are_bit_for_bit_what_they_were(tmp_path):
    synth_rooms(tmp_path / "default", 2, 3, 16, 32, seed=0)  # the library default is "easy"
    synth_rooms(tmp_path / "easy", 2, 3, 16, 32, seed=0, difficulty="easy", stats=True)
    assert _tree_sha256(tmp_path / "default") == (24, EASY_ROOMS_SHA256)
    assert _tree_sha256(tmp_path / "easy") == (24, EASY_ROOMS_SHA256)
