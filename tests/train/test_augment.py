"""Yaw augmentation is exact: a rolled view equals a render with the rotated pose, and rolled Plücker
maps equal `plucker_erp` of the rotated poses (relative to the rotated view 0)."""

from __future__ import annotations

import math

import torch

from panowan.data.dataset import DepthNorm, Sample, collate
from panowan.geometry.erp import erp_directions
from panowan.geometry.plucker import plucker_erp
from panowan.geometry.pose import Pose, quaternion_to_matrix, relative_poses
from panowan.train import augment

H, W = 16, 32


def random_poses(frames: int, seed: int) -> Pose:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(frames, 4, generator=g, dtype=torch.float64)
    return Pose(
        quaternion_to_matrix(q / q.norm(dim=-1, keepdim=True)),
        torch.randn(frames, 3, generator=g, dtype=torch.float64),
    )


def render(pose: Pose) -> torch.Tensor:
    """`3,H,W` colour of a smooth world-direction field seen from `pose` (world ray d = R^T d_cam)."""
    d = erp_directions(H, W, dtype=torch.float64) @ pose.rotation  # HW3 world directions
    return torch.stack(
        [torch.sin(3 * d[..., 0]) + d[..., 1], d[..., 2] * d[..., 0], torch.cos(2 * d[..., 1] + d[..., 2])]
    )


def test_roll_equals_render_with_yaw_rotated_pose() -> None:
    poses = random_poses(3, 0)
    for f, s in enumerate((1, 5, 27)):
        pose = Pose(poses.rotation[f], poses.position[f])
        rolled = torch.roll(render(pose), s, dims=-1)
        rotated = augment.rotate_poses(Pose(pose.rotation[None], pose.position[None]), torch.tensor([s]), W)
        assert torch.allclose(rolled, render(Pose(rotated.rotation[0], rotated.position[0])), atol=1e-12)
    assert math.isclose(float(augment.shift_angle(8, W)), math.pi / 2)


def test_rolled_plucker_equals_plucker_of_rotated_poses() -> None:
    poses = random_poses(5, 1)
    shifts = torch.tensor([3, 0, 7, 31, 16])  # view 0 rotates too: the reference frame changes
    before = plucker_erp(relative_poses(poses), H, W, dtype=torch.float64)  # F6HW
    after = plucker_erp(relative_poses(augment.rotate_poses(poses, shifts, W)), H, W, dtype=torch.float64)
    got = augment.roll_plucker(before[None], shifts[None])[0]
    assert torch.allclose(got, after, atol=1e-12)
    assert not torch.allclose(before, after, atol=1e-3)


def _sample(seed: int) -> Sample:
    g = torch.Generator().manual_seed(seed)
    poses = random_poses(5, seed)
    return Sample(
        rgb=torch.rand(5, 3, H, W, generator=g), depth=torch.rand(5, 1, H, W, generator=g),
        depth_valid=torch.rand(5, 1, H, W, generator=g) > 0.1, cond_rgb=torch.rand(5, 3, H, W, generator=g),
        cond_depth=torch.rand(5, 1, H, W, generator=g), cond_depth_m=torch.rand(5, 1, H, W, generator=g), mask=(torch.rand(5, 1, H, W, generator=g) > 0.5).float(),
        plucker=plucker_erp(relative_poses(poses), H, W), prompt=f"room {seed}", room_id=f"a/r{seed}",
        view_indices=[0, 1, 2, 3, 4], depth_norm=DepthNorm(0.5, 1.0),
    )  # fmt: skip


def test_yaw_roll_batch_rolls_every_view_map_and_keeps_the_rest() -> None:
    batch = collate([_sample(2), _sample(3)])
    shifts = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    out = augment.yaw_roll(batch, shifts)
    for name in augment.ROLLED_FIELDS:
        for b in range(2):
            for f in range(5):
                ref = torch.roll(getattr(batch, name)[b, f], int(shifts[b, f]), dims=-1)
                assert torch.equal(getattr(out, name)[b, f], ref), name
    assert out.prompt == batch.prompt and out.room_id == batch.room_id
    assert out.depth_valid.dtype == torch.bool
    assert torch.allclose(out.plucker[1], augment.roll_plucker(batch.plucker[1:], shifts[1:])[0])
    assert torch.equal(augment.yaw_roll(batch, torch.zeros(5, dtype=torch.int64)).plucker, batch.plucker)
