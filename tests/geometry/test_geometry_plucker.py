"""Plücker ray maps against their definition and a naive float64 loop."""

from __future__ import annotations

import math

import torch

from panowan.geometry.plucker import plucker_erp
from panowan.geometry.pose import Pose, quaternion_to_matrix, relative_poses


def some_poses(n: int = 3, seed: int = 0) -> Pose:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g, dtype=torch.float64)
    q = q / q.norm(dim=1, keepdim=True)
    return Pose(quaternion_to_matrix(q), torch.randn(n, 3, generator=g, dtype=torch.float64))


def test_plucker_matches_naive_loop():
    h, w = 6, 12
    poses = relative_poses(some_poses())
    out = plucker_erp(poses, h, w, dtype=torch.float64)
    assert out.shape == (3, 6, h, w)
    for f in range(3):
        r = poses.rotation[f].tolist()
        o = poses.position[f].tolist()
        for v in range(h):
            for u in range(w):
                phi = ((u + 0.5) / w - 0.5) * 2 * math.pi
                theta = (0.5 - (v + 0.5) / h) * math.pi
                dc = (math.sin(phi) * math.cos(theta), -math.sin(theta), math.cos(phi) * math.cos(theta))
                d = [sum(r[k][j] * dc[k] for k in range(3)) for j in range(3)]  # R^T d_cam
                m = (o[1] * d[2] - o[2] * d[1], o[2] * d[0] - o[0] * d[2], o[0] * d[1] - o[1] * d[0])
                expected = torch.tensor(d + list(m), dtype=torch.float64)
                assert torch.allclose(out[f, :, v, u], expected, atol=1e-12)


def test_moment_orthogonal_and_invariant_along_ray():
    h, w = 16, 32
    poses = some_poses(seed=1)
    out = plucker_erp(poses, h, w, dtype=torch.float64)
    d, m = out[:, :3], out[:, 3:]
    assert torch.allclose(d.norm(dim=1), torch.ones(3, h, w, dtype=torch.float64))
    assert (d * m).sum(1).abs().max() < 1e-12
    # Slide every camera centre along one of its rays: that ray's moment is unchanged.
    v, u = 5, 9
    shifted = Pose(poses.rotation, poses.position + 2.5 * d[:, :, v, u])
    out2 = plucker_erp(shifted, h, w, dtype=torch.float64)
    assert torch.allclose(out2[:, :, v, u], out[:, :, v, u], atol=1e-12)
    assert not torch.allclose(out2[:, 3:, 0, 0], out[:, 3:, 0, 0], atol=1e-3)


def test_reference_view_has_zero_moment_and_camera_directions():
    poses = relative_poses(some_poses(seed=2))
    out = plucker_erp(poses, 8, 16)
    assert out.dtype == torch.float32
    assert out[0, 3:].abs().max() < 1e-6
    from panowan.geometry.erp import erp_directions

    assert torch.allclose(out[0, :3].permute(1, 2, 0), erp_directions(8, 16), atol=1e-6)
