"""Metrics against independent implementations: scikit-image, float64 naive loops, analytic scenes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from panowan.eval import metrics as M
from panowan.geometry.erp import erp_directions
from panowan.geometry.pose import Pose, yaw_matrix


def _pair(seed: int, h: int = 32, w: int = 64):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(3, h, w, generator=g, dtype=torch.float64)
    pred = (gt + 0.1 * torch.randn(3, h, w, generator=g, dtype=torch.float64)).clamp(0, 1)
    region = torch.rand(h, w, generator=g) > 0.4
    return pred, gt, region


def test_psnr_matches_skimage():
    pred, gt, region = _pair(0)
    ref_all = peak_signal_noise_ratio(gt.numpy(), pred.numpy(), data_range=1.0)
    assert M.psnr(pred, gt) == pytest.approx(ref_all, abs=1e-9)
    ref_region = peak_signal_noise_ratio(gt[:, region].numpy(), pred[:, region].numpy(), data_range=1.0)
    assert M.psnr(pred, gt, region) == pytest.approx(ref_region, abs=1e-9)
    assert M.psnr(pred, gt, torch.zeros_like(region)) is None
    assert M.psnr(gt, gt) == M.PSNR_CAP


def test_ssim_matches_skimage_with_wrapped_columns():
    """Our columns wrap; skimage on an image padded with wrapped columns sees the same neighbourhoods."""
    pred, gt, region = _pair(1)
    pad = 8
    wrap = lambda x: np.concatenate([x[..., -pad:], x, x[..., :pad]], axis=-1)  # noqa: E731
    _, ref_map = structural_similarity(
        wrap(gt.numpy()), wrap(pred.numpy()), data_range=1.0, channel_axis=0,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True,
    )  # fmt: skip
    ref_map = ref_map.mean(0)[:, pad:-pad]
    ours = M.ssim_map(pred, gt).numpy()
    np.testing.assert_allclose(ours, ref_map, atol=1e-10)
    assert M.ssim(pred, gt, region) == pytest.approx(ref_map[region.numpy()].mean(), abs=1e-10)
    assert M.ssim(gt, gt) == pytest.approx(1.0)


def test_ws_psnr_naive_loop():
    pred, gt, region = _pair(2, 16, 32)
    p, g, r = pred.numpy(), gt.numpy(), region.numpy()
    num = den = 0.0
    for v in range(16):
        w = math.cos((0.5 - (v + 0.5) / 16) * math.pi)
        for u in range(32):
            if r[v, u]:
                num += w * sum((p[c, v, u] - g[c, v, u]) ** 2 for c in range(3)) / 3
                den += w
    assert M.ws_psnr(pred, gt, region) == pytest.approx(10 * math.log10(den / num), abs=1e-9)


def test_depth_metrics_naive_loop():
    g = torch.Generator().manual_seed(3)
    gt = 0.5 + 4 * torch.rand(8, 16, generator=g, dtype=torch.float64)
    gt[0, 0], gt[1, 1] = 0.0, float("nan")  # invalid ground truth is ignored
    pred = gt * (1 + 0.4 * torch.randn(8, 16, generator=g, dtype=torch.float64))
    pred[2, 2] = float("inf")  # counted as 0
    region = torch.rand(8, 16, generator=g) > 0.3
    absrel, sq, good, n = 0.0, 0.0, 0, 0
    for v in range(8):
        for u in range(16):
            gv, pv = gt[v, u].item(), pred[v, u].item()
            if not (region[v, u] and math.isfinite(gv) and gv > 0):
                continue
            pv = pv if math.isfinite(pv) else 0.0
            absrel += abs(pv - gv) / gv
            sq += (pv - gv) ** 2
            good += max(pv / gv, gv / max(pv, 1e-12)) < 1.25
            n += 1
    out = M.depth_metrics(pred, gt, region)
    assert out["absrel"] == pytest.approx(absrel / n, rel=1e-12)
    assert out["rmse"] == pytest.approx(math.sqrt(sq / n), rel=1e-12)
    assert out["delta1"] == pytest.approx(good / n, rel=1e-12)
    assert 0 < out["delta1"] < 1


def test_seam_continuity():
    w = 64
    u = torch.arange(w, dtype=torch.float64)
    periodic = (u - w / 2).abs().expand(1, 8, w)  # a triangle wave: every neighbour differs by 1
    ramp = (u / w).expand(1, 8, w)
    per = M.seam_continuity(periodic)
    assert per["ratio"] == pytest.approx(1.0)  # a periodic image has no seam
    out = M.seam_continuity(ramp)
    assert out["seam"] == pytest.approx((w - 1) / w)
    assert out["neighbour"] == pytest.approx(1 / w)
    assert out["ratio"] == pytest.approx(w - 1)


def _sphere_room(positions, radius=3.0, h=32, w=64):
    """Views from inside a sphere: exact ranges, colour a smooth function of the world hit point."""
    rgbs, ranges, poses = [], [], []
    d_cam = erp_directions(h, w, dtype=torch.float64)
    for k, p in enumerate(positions):
        rot = yaw_matrix(0.7 * k)
        pose = Pose(rot, torch.tensor(p, dtype=torch.float64))
        d = d_cam @ rot  # world directions R^T d_cam
        pd = (d * pose.position).sum(-1)
        t = -pd + torch.sqrt(pd**2 - (pose.position**2).sum() + radius**2)
        x = pose.position + t[..., None] * d
        rgbs.append((0.5 + 0.5 * torch.sin(1.5 * x).permute(2, 0, 1)).float())
        ranges.append(t[None].float())
        poses.append(pose)
    return torch.stack(rgbs), torch.stack(ranges), poses


def test_cross_view_consistency_exact_vs_perturbed():
    rgb, rng, poses = _sphere_room([(0, 0, 0), (0.4, 0.0, 0.2), (-0.3, 0.1, -0.3)])
    good = M.cross_view_consistency(rgb, rng, poses)
    assert good["overlap"] > 0.95
    assert good["depth_absrel"] < 0.01
    assert good["rgb_l1"] < 0.05
    bad_rng = rng.clone()
    bad_rng[1] *= 1.3
    bad_rgb = rgb.clone()
    bad_rgb[2] = 1 - bad_rgb[2]
    bad = M.cross_view_consistency(bad_rgb, bad_rng, poses)
    assert bad["depth_absrel"] > 0.1
    assert bad["rgb_l1"] > 4 * good["rgb_l1"]


def test_view_metrics_regions():
    pred, gt, known = _pair(4)
    pred[:, known] = gt[:, known]  # a completion that keeps the known pixels
    gt_d = 1 + torch.rand(32, 64, dtype=torch.float64)
    pred_d = torch.where(known, gt_d, gt_d * 1.5)
    out = M.view_metrics(pred, pred_d, gt, gt_d, known)
    assert out["known"]["psnr"] == M.PSNR_CAP and out["known"]["absrel"] == 0
    assert out["hole"]["absrel"] == pytest.approx(0.5)
    assert out["hole"]["delta1"] == 0
    assert out["hole"]["psnr"] < 30
    assert M.average_views([out, out])["hole"]["absrel"] == pytest.approx(0.5)


def test_verdict_compares_the_model_with_the_best_classical_inpainting():
    def result(psnr: float, ssim: float, absrel: float) -> dict:
        return {"mean": {"hole": {"psnr": psnr, "ssim": ssim, "absrel": absrel}}, "rooms": {}}

    methods = {"model": result(18.2, 0.50, 0.24), "telea": result(18.1, 0.51, 0.14),
               "ns": result(18.0, 0.49, 0.13), "copy": result(5.0, 0.02, 1.0)}  # fmt: skip
    assert M.verdict_lines(methods) == [
        "hole PSNR (dB): model 18.2, best classical fill 18.1 (telea): the model is better by 0.1",
        "hole SSIM: model 0.5, best classical fill 0.51 (telea): the model is worse by 0.01",
        "hole depth AbsRel: model 0.24, best classical fill 0.13 (ns): the model is worse by 0.11 "
        "(model / best = 1.846)",
    ]
    assert "- hole depth AbsRel: model 0.24" in M.markdown_table(methods)
    assert M.verdict_lines({"model": methods["model"], "copy": methods["copy"]}) == []  # copy is no contender
