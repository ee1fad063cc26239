"""ERP pixel <-> ray conventions, quaternions and the pose JSON."""

from __future__ import annotations

import json
import math

import pytest
import torch

from panowan.geometry.erp import directions_to_pixels, erp_directions
from panowan.geometry.pose import (
    Pose,
    PoseFormat,
    load_pose,
    matrix_to_quaternion,
    pose_to_json,
    quaternion_to_matrix,
    relative_poses,
    stack_poses,
    yaw_matrix,
)


def random_quaternions(n: int, seed: int = 0) -> torch.Tensor:
    q = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return q / q.norm(dim=1, keepdim=True)


def test_pixel_ray_pixel_round_trip():
    h, w = 16, 32
    dirs = erp_directions(h, w, dtype=torch.float64)
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(h, w, dtype=torch.float64))
    uv = directions_to_pixels(dirs, h, w)
    v, u = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    assert torch.allclose(uv[..., 0], u.double(), atol=1e-9)
    assert torch.allclose(uv[..., 1], v.double(), atol=1e-9)
    # Scaling a direction does not move its pixel.
    assert torch.allclose(directions_to_pixels(dirs * 3.7, h, w), uv, atol=1e-9)


def test_centre_column_looks_forward_and_top_row_up():
    h, w = 64, 128
    dirs = erp_directions(h, w, dtype=torch.float64)
    centre = (dirs[h // 2 - 1, w // 2 - 1] + dirs[h // 2, w // 2]) / 2  # pixel corners meet on +z
    assert torch.allclose(
        centre / centre.norm(), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), atol=1e-12
    )
    assert (dirs[0, :, 1] < -0.99).all()  # y is down, so the top row looks along -y
    assert (dirs[-1, :, 1] > 0.99).all()
    assert dirs[h // 2, 3 * w // 4, 0] > 0.99  # right of centre looks along +x


def test_seam_columns_are_neighbours():
    h, w = 16, 32
    dirs = erp_directions(h, w, dtype=torch.float64)
    across_seam = (dirs[:, 0] * dirs[:, -1]).sum(-1)
    inside = (dirs[:, 0] * dirs[:, 1]).sum(-1)
    assert torch.allclose(across_seam, inside, atol=1e-12)
    # A direction just left of u = 0 maps to u ~ W - 1 after wrapping.
    uv = directions_to_pixels(dirs[:, -1], h, w)
    assert torch.allclose(uv[:, 0], torch.full((h,), w - 1.0, dtype=torch.float64), atol=1e-9)


def test_quaternion_matrix_round_trip():
    q = random_quaternions(100)
    m = quaternion_to_matrix(q)
    eye = torch.eye(3, dtype=torch.float64).expand(100, 3, 3)
    assert torch.allclose(m @ m.transpose(1, 2), eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(m), torch.ones(100, dtype=torch.float64))
    q2 = matrix_to_quaternion(m)
    # q and -q are the same rotation; matrix_to_quaternion picks w >= 0.
    assert torch.allclose(q2, torch.where(q[:, :1] < 0, -q, q), atol=1e-10)


def write(tmp_path, obj, name="pose.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


def test_pose_json_default_and_alternatives(tmp_path):
    q = random_quaternions(1, seed=3)[0]
    r = quaternion_to_matrix(q)
    pos = [0.5, -1.0, 2.0]
    default = load_pose(write(tmp_path, {"position": pos, "rotation_quaternion": q.tolist()}))
    assert torch.allclose(default.rotation, r) and torch.allclose(
        default.position, torch.tensor(pos).double()
    )
    xyzw = [float(q[1]), float(q[2]), float(q[3]), float(q[0])]
    fmt = PoseFormat(position_key="t", rotation_key="q", quaternion_order="xyzw")
    alt = load_pose(write(tmp_path, {"t": pos, "q": xyzw}, "alt.json"), fmt)
    assert torch.allclose(alt.rotation, r, atol=1e-12)
    # camera_to_world stores the inverse rotation.
    q_inv = torch.tensor([q[0], -q[1], -q[2], -q[3]])
    c2w = load_pose(
        write(tmp_path, {"position": pos, "rotation_quaternion": q_inv.tolist()}, "c2w.json"),
        PoseFormat(direction="camera_to_world"),
    )
    assert torch.allclose(c2w.rotation, r, atol=1e-12)
    # And the writer round-trips.
    back = load_pose(write(tmp_path, pose_to_json(default), "back.json"))
    assert torch.allclose(back.rotation, r, atol=1e-12)


@pytest.mark.parametrize(
    "obj, message",
    [
        ({"pos": [0, 0, 0], "rotation_quaternion": [1, 0, 0, 0]}, "missing key 'position'"),
        ({"position": [0, 0, 0], "quat": [1, 0, 0, 0]}, "missing key 'rotation_quaternion'"),
        ({"position": [0, 0, 0], "rotation_quaternion": [1, 0.2, 0, 0]}, "not a unit quaternion"),
        ({"position": [0, 0], "rotation_quaternion": [1, 0, 0, 0]}, "list of 3 numbers"),
        ({"position": [0, 0, float("nan")], "rotation_quaternion": [1, 0, 0, 0]}, "non-finite"),
    ],
)
def test_bad_pose_json_names_the_file(tmp_path, obj, message):
    path = write(tmp_path, obj, "bad_pose_0003.json")
    with pytest.raises(ValueError, match=message) as info:
        load_pose(path)
    assert "bad_pose_0003.json" in str(info.value)


def test_missing_and_broken_pose_files(tmp_path):
    with pytest.raises(ValueError, match="missing"):
        load_pose(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"position": [0, 0')
    with pytest.raises(ValueError, match=r"broken\.json"):
        load_pose(broken)


def test_relative_poses():
    q = random_quaternions(4, seed=5)
    poses = Pose(
        quaternion_to_matrix(q), torch.randn(4, 3, generator=torch.Generator().manual_seed(1)).double()
    )
    rel = relative_poses(poses)
    assert torch.allclose(rel.rotation[0], torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(rel.position[0], torch.zeros(3, dtype=torch.float64), atol=1e-12)
    # A world point keeps its camera coordinates in every view when the world is re-based on view 0.
    x_world = torch.tensor([[0.3, -0.2, 1.7]], dtype=torch.float64)
    x_ref = Pose(poses.rotation[0], poses.position[0]).world_to_camera(x_world)
    for i in range(4):
        view = Pose(poses.rotation[i], poses.position[i])
        rel_i = Pose(rel.rotation[i], rel.position[i])
        assert torch.allclose(view.world_to_camera(x_world), rel_i.world_to_camera(x_ref), atol=1e-12)
    rel2 = relative_poses(poses, ref_index=2)
    assert torch.allclose(rel2.rotation[2], torch.eye(3, dtype=torch.float64), atol=1e-12)
    with pytest.raises(ValueError, match="out of range"):
        relative_poses(poses, ref_index=4)


def test_stack_and_yaw():
    poses = stack_poses(
        [Pose(yaw_matrix(a), torch.zeros(3, dtype=torch.float64)) for a in (0.0, math.pi / 2)]
    )
    assert poses.rotation.shape == (2, 3, 3)
    # yaw_matrix(a) moves content by +a in longitude: +z in the world lands at phi = a in the camera.
    d_cam = poses.rotation[1] @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    assert math.isclose(math.atan2(float(d_cam[0]), float(d_cam[2])), math.pi / 2, abs_tol=1e-12)
