"""Losses against independent references: explicit per-element weights in float64 loops, numpy
correlation matrices, scikit-image SSIM; latitude weighting exact against explicit weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from panowan.models.codec import AnalyticCodec
from panowan.train import losses as L


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _lat(h: int) -> np.ndarray:
    return np.cos((0.5 - (np.arange(h) + 0.5) / h) * math.pi)


@pytest.mark.parametrize("latitude", [False, True])
def test_flow_matching_loss_equals_explicit_weighted_mean(latitude: bool) -> None:
    b, z, t, h, w = 2, 3, 2, 4, 6
    pred, target = _rand(b, z, t, h, w, seed=1), _rand(b, z, t, h, w, seed=2)
    known = (torch.rand(b, 4, t, h, w, generator=torch.Generator().manual_seed(3)) > 0.5).double()
    valid = torch.rand(b, 4, t, h, w, generator=torch.Generator().manual_seed(4)).double()
    sw = torch.tensor([0.5, 2.0], dtype=torch.float64)
    got = L.flow_matching_loss(
        pred, target, sw, known_B4Thw=known, hole_weight=3.0, valid_B4Thw=valid, latitude=latitude
    )
    lat = _lat(h) if latitude else np.ones(h)
    total = 0.0
    for i in range(b):
        num = den = 0.0
        for c in range(z):
            for k in range(t):
                for y in range(h):
                    for x in range(w):
                        hole = 1 - known[i, :, k, y, x].mean().item()
                        wgt = lat[y] * (1 + 3.0 * hole) * valid[i, :, k, y, x].mean().item()
                        num += wgt * (pred[i, c, k, y, x] - target[i, c, k, y, x]).item() ** 2
                        den += lat[y]
        total += sw[i].item() * num / den
    assert got.item() == pytest.approx(total / b, rel=1e-5)
    plain = L.flow_matching_loss(pred, target, torch.ones(b, dtype=torch.float64))
    assert plain.item() == pytest.approx(((pred - target) ** 2).mean().item(), rel=1e-6)


@pytest.mark.parametrize("latitude", [False, True])
def test_structural_loss_matches_numpy_correlations(latitude: bool) -> None:
    b, z, t, h, w, p = 1, 5, 2, 4, 8, 2
    pred, target = _rand(b, z, t, h, w, seed=5), _rand(b, z, t, h, w, seed=6)
    got = L.structural_consistency_loss(pred, target, pool=p, latitude=latitude)
    lat_rows = _lat(h // p) if latitude else np.ones(h // p)
    a = np.repeat(lat_rows, w // p)  # patch order row-major
    pair = np.outer(a, a)
    ref = []
    for k in range(t):
        mats = []
        for x in (pred, target):
            frame = x[0, :, k].numpy()
            patches = frame.reshape(z, h // p, p, w // p, p).mean(axis=(2, 4)).reshape(z, -1).T  # N, z
            mats.append(np.corrcoef(patches))  # Pearson over channels
        ref.append(((mats[0] - mats[1]) ** 2 * pair).sum() / pair.sum())
    assert got.item() == pytest.approx(np.mean(ref), rel=1e-5)
    assert L.structural_consistency_loss(target, target, pool=p).item() == pytest.approx(0, abs=1e-10)
    # Correlation ignores a per-frame affine change of intensity: scale and shift give ~zero loss.
    assert L.structural_consistency_loss(3 * target + 1, target, pool=p).item() < 1e-8


def test_global_loss_matches_numpy_statistics() -> None:
    b, z, t, h, w = 2, 3, 2, 4, 8
    pred, target = _rand(b, z, t, h, w, seed=7), _rand(b, z, t, h, w, seed=8)
    lat = _lat(h)[:, None].repeat(w, 1)
    ref = []
    for x in (pred, target):
        arr = x.numpy()
        wts = lat / lat.sum()
        mean = (arr * wts).sum(axis=(-2, -1))
        sd = np.sqrt(((arr - mean[..., None, None]) ** 2 * wts).sum(axis=(-2, -1)) + 1e-8)
        ref.append((mean, sd))
    expected = ((ref[0][0] - ref[1][0]) ** 2 + (ref[0][1] - ref[1][1]) ** 2).mean()
    assert L.global_consistency_loss(pred, target, latitude=True).item() == pytest.approx(expected, rel=1e-6)
    shifted = target + torch.arange(t, dtype=torch.float64).view(1, 1, t, 1, 1)  # frame 1 drifts by +1
    assert L.global_consistency_loss(shifted, target).item() == pytest.approx(0.5, rel=1e-4)


def test_ssim_matches_scikit_image() -> None:
    x = torch.rand(1, 3, 24, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    y = (
        x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ).clamp(-1, 1)
    ours = 1 - L.ssim_loss(x, y).item()
    ref = structural_similarity(x[0].numpy(), y[0].numpy(), channel_axis=0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=2.0)  # fmt: skip
    assert ours == pytest.approx(ref, abs=1e-6)


def test_ssim_latitude_weighting_equals_explicit_row_weights() -> None:
    x, y = _rand(2, 1, 20, 40, seed=2), _rand(2, 1, 20, 40, seed=3)
    rows = torch.linspace(0.1, 1.0, 20, dtype=torch.float64)
    m = L.ssim_map(x, y).numpy()  # N,C,10,30: map row r is centred on image row r + 5
    wts = rows.numpy()[5:15][:, None]
    expected = 1 - (m * wts).sum(axis=(-2, -1)).mean() / (wts.sum() * m.shape[-1])
    assert L.ssim_loss(x, y, row_weights_H=rows).item() == pytest.approx(expected, rel=1e-6)


def test_decoded_ssim_budget_and_gradient() -> None:
    codec = AnalyticCodec(4)
    target = torch.randn(1, codec.z_dim, 3, 4, 8, generator=torch.Generator().manual_seed(0))
    pred = (
        target + 0.2 * torch.randn(target.shape, generator=torch.Generator().manual_seed(1))
    ).requires_grad_(True)
    full = L.decoded_ssim_loss(codec, pred, target, depth=False, latent_frames=3, checkpoint=False)
    ref = L.ssim_loss(
        codec.decode(pred).transpose(1, 2).flatten(0, 1), codec.decode(target).transpose(1, 2).flatten(0, 1)
    )
    assert full.item() == pytest.approx(ref.item(), rel=1e-6)
    assert L.decoded_ssim_loss(codec, target, target, depth=True).item() == pytest.approx(0, abs=1e-6)
    g = torch.Generator().manual_seed(2)
    budget = L.decoded_ssim_loss(codec, pred, target, depth=True, latent_frames=2, crop_hw=(2, 4), generator=g,
                                 latitude=True, checkpoint=True)  # fmt: skip
    budget.backward()
    assert pred.grad is not None and pred.grad[:, :, 2].abs().sum() == 0  # frame 2 outside the budget
    assert pred.grad[:, :, :2].abs().sum() > 0
