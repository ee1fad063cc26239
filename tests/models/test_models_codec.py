"""Latent codecs: packing against naive loops, reconstruction, seam, and the Wan VAE normalisation."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import AutoencoderKLWan

from panowan.models.codec import AnalyticCodec, WanVAECodec, build_codec, check_video
from panowan.models.presets import get_preset


def smooth_video(frames: int, height: int, width: int) -> torch.Tensor:
    """`1,3,F,H,W` low-frequency content, periodic in longitude (a plausible panorama)."""
    v = (torch.arange(height, dtype=torch.float64) + 0.5) / height
    u = (torch.arange(width, dtype=torch.float64) + 0.5) / width
    f = torch.arange(frames, dtype=torch.float64)[:, None, None]
    chans = [
        0.6
        * torch.sin(2 * math.pi * (u[None, None] + 0.05 * f))
        * torch.cos(math.pi * (v[None, :, None] - 0.5)),
        0.5 * torch.cos(2 * math.pi * u[None, None] + math.pi * v[None, :, None] + 0.1 * f),
        0.4 * torch.sin(math.pi * v[None, :, None]) + 0.0 * u[None, None] - 0.02 * f,
    ]
    return torch.stack(chans)[None].float()


def test_pool1_is_exact_inverse():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 9, 16, 32, generator=g) * 2 - 1
    codec = AnalyticCodec(pool=1)
    lat = codec.encode(x)
    assert lat.shape == (2, 3 * 4 * 64, 3, 2, 4)
    torch.testing.assert_close(codec.decode(lat), x, rtol=0, atol=1e-6)


def test_packing_matches_naive_loop():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 5, 16, 32, generator=g, dtype=torch.float64)
    pool, r = 4, 2
    lat = AnalyticCodec(pool).encode(x)
    assert lat.shape == (1, 48, 2, 2, 4)
    for t in range(2):
        for slot in range(4):
            frame = 0 if t == 0 else 4 * t - 3 + slot
            for c in range(3):
                for a in range(r):
                    for b in range(r):
                        ch = ((c * 4 + slot) * r + a) * r + b
                        for i in range(2):
                            for j in range(4):
                                y0, x0 = i * 8 + a * pool, j * 8 + b * pool
                                want = x[0, c, frame, y0 : y0 + pool, x0 : x0 + pool].mean()
                                assert abs(lat[0, ch, t, i, j].item() - want.item()) < 1e-12


def test_smooth_video_reconstructs_and_lowpass_is_idempotent():
    x = smooth_video(9, 64, 128)
    codec = AnalyticCodec(pool=4)
    lat = codec.encode(x)
    y = codec.decode(lat)
    assert y.shape == x.shape
    err = (y - x).abs()
    # Away from the poles (rows replicate there) bilinear upsampling of area means is accurate;
    # the seam columns are included (circular padding).
    assert err[..., 4:-4, :].max().item() < 0.01
    assert err.mean().item() < 0.005 and err.max().item() < 0.05
    # Re-encoding the reconstruction gives back (almost) the same latents: the codec is a projection
    # on the low-pass part (only bilinear-vs-area smoothing remains).
    lat2 = codec.encode(y)
    assert (lat2 - lat).abs().max().item() < 0.02
    assert (lat2 - lat).abs().mean().item() < 0.005
    # ... and a random (not smooth) video is NOT reconstructed, so the bound above means something.
    noise = torch.rand(1, 3, 9, 64, 128, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert (codec.decode(codec.encode(noise)) - noise).abs().max().item() > 0.5


def test_decode_wraps_the_seam():
    """Rolling by whole latent columns commutes with the round trip only with circular padding."""
    x = torch.rand(1, 3, 5, 32, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    codec = AnalyticCodec(pool=4)
    y = codec.decode(codec.encode(x))
    y_rolled = codec.decode(codec.encode(torch.roll(x, 8, dims=-1)))
    torch.testing.assert_close(y_rolled, torch.roll(y, 8, dims=-1), rtol=0, atol=1e-6)
    # Column 0 depends on column W-1: changing only the last pooled column changes the first pixel column.
    x2 = x.clone()
    x2[..., -4:] += 1.0
    y2 = codec.decode(codec.encode(x2))
    assert (y2[..., 0] - y[..., 0]).abs().max() > 0.05


def test_check_video_errors_name_shapes():
    with pytest.raises(ValueError, match=r"4k \+ 1.*\(1, 3, 6, 16, 32\)"):
        check_video(torch.zeros(1, 3, 6, 16, 32))
    with pytest.raises(ValueError, match=r"multiples of 16.*24"):
        check_video(torch.zeros(1, 3, 5, 24, 32))
    with pytest.raises(ValueError, match="channels"):
        AnalyticCodec().encode(torch.zeros(1, 1, 5, 16, 32))


def tiny_vae() -> AutoencoderKLWan:
    torch.manual_seed(0)
    return AutoencoderKLWan(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        latents_mean=[0.1, -0.2, 0.3, 0.0],
        latents_std=[1.5, 2.0, 0.5, 1.0],
    ).eval()


def test_wan_vae_codec_normalises_like_the_pipeline_and_decodes_differentiably():
    vae = tiny_vae()
    codec = WanVAECodec(vae)
    assert codec.z_dim == 4
    x = torch.rand(1, 3, 5, 16, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    lat = codec.encode(x)
    assert lat.shape == (1, 4, 2, 2, 4) and not lat.requires_grad
    mu = vae.encode(x).latent_dist.mode()
    mean = torch.tensor([0.1, -0.2, 0.3, 0.0]).view(1, 4, 1, 1, 1)
    std = torch.tensor([1.5, 2.0, 0.5, 1.0]).view(1, 4, 1, 1, 1)
    torch.testing.assert_close(lat, (mu - mean) / std)
    z = lat.clone().requires_grad_(True)
    video = codec.decode(z)
    assert video.shape == x.shape
    torch.testing.assert_close(video, vae.decode(lat * std + mean, return_dict=False)[0])
    video.square().mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_build_codec():
    tiny = get_preset("tiny")
    assert isinstance(build_codec(tiny), AnalyticCodec) and build_codec(tiny).z_dim == tiny.z_dim
    big = get_preset("wan2.1-1.3b-i2v")
    with pytest.raises(ValueError, match="AutoencoderKLWan"):
        build_codec(big)
    with pytest.raises(ValueError, match="z_dim 4"):
        build_codec(big, tiny_vae())
