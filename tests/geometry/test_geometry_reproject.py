"""Reprojection: identity, seam, poles, holes, batching, and quality against exact analytic renders."""

from __future__ import annotations

import math

import pytest
import torch
from analytic_scene import TARGETS, VIEW0, distance, make_pose, quality, render

from panowan.geometry.pose import Pose, stack_poses, yaw_matrix
from panowan.geometry.reproject import ErpMesh, reproject_erp

H, W = 64, 128


@pytest.fixture(scope="module")
def small_view0():
    return render(VIEW0, H, W)


def test_same_pose_is_identity(small_view0):
    src = small_view0
    r = src.range_HW.float().clone()
    r[20:26, 40:50] = float("nan")  # holes stay holes
    r[30, 100] = -1.0
    r[10, 3] = float("inf")
    rep = reproject_erp(src.image_3HW, r, VIEW0, VIEW0)
    valid = torch.isfinite(r) & (r > 0)
    assert torch.equal(rep.valid, valid)
    assert torch.allclose(rep.range[valid], r[valid], rtol=1e-5)
    assert torch.allclose(rep.image[:, valid], src.image_3HW[:, valid], atol=1e-5)
    assert (rep.range[~valid] == 0).all() and (rep.image[:, ~valid] == 0).all()
    # The contract's shape-suffixed names refer to the same tensors.
    assert rep.range_HW is rep.range and rep.image_CHW is rep.image and rep.valid_HW is rep.valid


def test_isolated_samples_are_kept(small_view0):
    r = torch.full((H, W), float("nan"))
    r[7, 13] = 2.0  # no triangle can use a lone pixel: it is drawn as a point
    r[40, 64:70] = 3.0  # a one-row line: no triangle either
    rep = reproject_erp(small_view0.image_3HW, r, VIEW0, VIEW0)
    assert torch.equal(rep.valid, torch.isfinite(r))
    assert torch.allclose(rep.range[rep.valid], r[rep.valid])


def test_yaw_by_whole_pixels_rolls_across_the_seam(small_view0):
    src = small_view0
    shift = 17
    dst = Pose(yaw_matrix(2 * math.pi * shift / W) @ VIEW0.rotation, VIEW0.position)
    rep = reproject_erp(src.image_3HW, src.range_HW.float(), VIEW0, dst)
    expected = torch.roll(src.range_HW.float(), shift, dims=1)
    assert rep.valid.all()
    assert torch.allclose(rep.range, expected, rtol=1e-5)
    assert torch.allclose(rep.image, torch.roll(src.image_3HW, shift, dims=2), atol=1e-4)


def test_pitch_moves_the_poles_to_the_equator():
    """Rotating the camera by 90 degrees about x brings both source poles to the target's equator:
    the pole caps and the seam must be closed, so the panorama is valid and matches the exact render."""
    h, w = 128, 256
    src = render(VIEW0, h, w)
    pitch = torch.tensor([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=torch.float64)
    dst = Pose(pitch @ VIEW0.rotation, VIEW0.position)
    rep = reproject_erp(src.image_3HW, src.range_HW.float(), VIEW0, dst)
    truth = render(dst, h, w).range_HW
    assert rep.valid.float().mean() > 0.98
    close = (rep.range.double() - truth).abs() <= 0.02 * truth
    assert close[rep.valid].float().mean() > 0.99
    # Both source poles now lie on the middle rows (one ahead, one behind): fully covered there.
    assert rep.valid[h // 2 - 3 : h // 2 + 3].float().mean() > 0.995


def test_stacked_targets_match_the_loop_and_output_size(small_view0):
    src = small_view0
    dsts = stack_poses([TARGETS[0], TARGETS[1]])
    batched = reproject_erp(src.image_3HW, src.range_HW.float(), VIEW0, dsts, out_height=32)
    assert batched.image.shape == (2, 3, 32, 64) and batched.valid.shape == (2, 32, 64)
    for i, t in enumerate(TARGETS[:2]):
        one = reproject_erp(src.image_3HW, src.range_HW.float(), VIEW0, t, out_height=32)
        assert torch.equal(one.valid, batched.valid[i])
        assert torch.equal(one.range, batched.range[i])


def test_integer_images_and_bad_inputs(small_view0):
    img = (small_view0.image_3HW * 255).round().to(torch.uint8)
    rep = reproject_erp(img, small_view0.range_HW.float(), VIEW0, VIEW0)
    assert rep.image.dtype == torch.uint8 and torch.equal(rep.image, img)
    with pytest.raises(ValueError, match="2:1"):
        reproject_erp(torch.zeros(3, 10, 10), torch.ones(10, 10), VIEW0, VIEW0)
    with pytest.raises(ValueError, match="same size"):
        reproject_erp(torch.zeros(3, 8, 16), torch.ones(8, 8), VIEW0, VIEW0)


def test_depth_edges_are_not_bridged():
    """A near plate in front of a far wall: the plate's and the wall's meshes stay apart."""
    r = torch.full((H, W), 4.0)
    r[24:40, 56:72] = 1.0
    img = torch.zeros(1, H, W)
    mesh = ErpMesh.build(img, r, VIEW0)
    tri_r = r.reshape(-1)[mesh.triangles_T3.clamp(max=H * W - 1)]
    inner = mesh.triangles_T3.max(1).values < H * W
    assert ((tri_r.amax(1) / tri_r.amin(1))[inner] < 1.01).all()
    # Seen from the side, the disoccluded wall behind the plate's edge is a hole, not a smear.
    dst = make_pose((0.8, 0.0, 0.5), 0.4)
    rep = reproject_erp(img, r, VIEW0, dst)
    wall_pts = rep.range[rep.valid]
    assert ((wall_pts < 1.5) | (wall_pts > 3.0)).all()
    assert (~rep.valid).sum() > 20


@pytest.fixture(scope="module")
def view0_256():
    return render(VIEW0, 256, 512)


@pytest.mark.parametrize("target", range(len(TARGETS)))
def test_quality_against_analytic_render(target, view0_256):
    """View 0 reprojected into targets 0.3 - 1.0 m away at 256x512 (512x1024: benchmarks/bench_reproject.py).

    Of the valid pixels >= 99% within 2% of the exact range; of the pixels the target shares with
    view 0 (away from the target's depth edges) >= 93% valid.
    """
    h, w = 256, 512
    src = view0_256
    dst = TARGETS[target]
    assert 0.29 <= distance(VIEW0, dst) <= 1.01
    rep = reproject_erp(src.image_3HW, src.range_HW.float(), VIEW0, dst)
    truth = render(dst, h, w)
    accuracy, coverage = quality(rep.range, rep.valid, truth, VIEW0)
    assert accuracy >= 0.99, accuracy
    assert coverage >= 0.93, coverage
    # Colour agrees too where the depth does (same surface point, smooth texture).
    good = rep.valid & ((rep.range.double() - truth.range_HW).abs() <= 0.01 * truth.range_HW)
    err = (rep.image - truth.image_3HW).abs().amax(0)[good]
    assert (err < 0.05).float().mean() > 0.98


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_matches_cpu(small_view0):
    src = small_view0
    cpu = reproject_erp(src.image_3HW, src.range_HW.float(), VIEW0, TARGETS[1])
    gpu = reproject_erp(src.image_3HW.cuda(), src.range_HW.float().cuda(), VIEW0, TARGETS[1])
    assert gpu.range.is_cuda
    agree = (gpu.valid.cpu() == cpu.valid).float().mean()
    assert agree > 0.999
    both = gpu.valid.cpu() & cpu.valid
    assert torch.allclose(gpu.range.cpu()[both], cpu.range[both], rtol=1e-4)
