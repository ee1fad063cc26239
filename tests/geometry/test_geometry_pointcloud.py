"""Back-projection against the analytic scene, and PLY files read back by trimesh."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from analytic_scene import TARGETS, VIEW0, cast, render

from panowan.geometry.pointcloud import backproject_erp
from panowan.utils.ply import write_ply


def test_backprojected_points_land_on_the_target_surfaces():
    h, w = 64, 128
    src = render(VIEW0, h, w)
    r = src.range_HW.clone()
    r[0:3] = float("nan")
    points, colors = backproject_erp(r, VIEW0, src.image_3HW)
    assert points.shape == (h * w - 3 * w, 3) and colors.shape == (points.shape[0], 3)
    assert torch.allclose(points, src.points_HW3[3:].reshape(-1, 3), atol=1e-9)
    for dst in TARGETS:
        offset = points - dst.position
        dist = offset.norm(dim=1)
        t, _ = cast(dst.position, offset / dist[:, None])
        # Every point lies on a surface: never in front of what view i sees along its ray ...
        assert (dist >= t * (1 - 1e-9)).all()
        # ... and the ones view i sees are exactly where its analytic render puts them.
        visible = (dist - t).abs() <= 1e-9 * t
        assert visible.float().mean() > 0.6


def test_backproject_mask_and_errors():
    r = torch.ones(4, 8)
    valid = torch.ones(4, 8, dtype=torch.bool)
    valid[0] = False
    points, colors = backproject_erp(r, VIEW0, valid_HW=valid)
    assert colors is None and points.shape == (24, 3) and points.dtype == torch.float32
    assert torch.allclose((points.double() - VIEW0.position).norm(dim=1), torch.ones(24, dtype=torch.float64))
    with pytest.raises(ValueError, match="2:1"):
        backproject_erp(torch.ones(4, 4), VIEW0)
    with pytest.raises(ValueError, match="does not match"):
        backproject_erp(r, VIEW0, torch.zeros(3, 4, 4))


def test_ply_round_trip_with_trimesh(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    src = render(VIEW0, 32, 64)
    points, colors = backproject_erp(src.range_HW, VIEW0, src.image_3HW)
    rgb = (colors * 255).round().to(torch.uint8)
    path = write_ply(tmp_path / "cloud.ply", points, rgb)
    cloud = trimesh.load(path)
    assert len(cloud.vertices) == points.shape[0] == 32 * 64
    assert np.allclose(cloud.vertices, points.numpy(), atol=1e-5)
    assert np.array_equal(np.asarray(cloud.colors)[:, :3], rgb.numpy())
    plain = trimesh.load(write_ply(tmp_path / "plain.ply", points.numpy()))
    assert len(plain.vertices) == 32 * 64
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind
    with pytest.raises(ValueError, match="uint8"):
        write_ply(tmp_path / "bad.ply", points, colors)
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        write_ply(tmp_path / "bad.ply", points[:, :2])
