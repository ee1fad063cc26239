"""Mask packing and condition latents, against naive loops and diffusers' own I2V pipeline."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline

from panowan.models.codec import AnalyticCodec, WanVAECodec
from panowan.models.conditioning import (
    build_condition,
    decode_filled,
    depth_to_video,
    frames_to_video,
    pack_mask,
    video_to_depth,
    video_to_frames,
)


def test_pack_mask_matches_naive_loop():
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(2, 1, 9, 32, 64, generator=g) > 0.3).float()
    packed = pack_mask(mask)
    assert packed.shape == (2, 4, 3, 4, 8)
    for b in range(2):
        for t in range(3):
            for c in range(4):
                frame = 0 if t == 0 else 4 * t - 3 + c
                for i in range(4):
                    for j in range(8):
                        want = mask[b, 0, frame, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8].mean()
                        assert packed[b, c, t, i, j].item() == pytest.approx(want.item(), abs=1e-7)


def test_known_pixels_of_one_frame_land_in_one_channel():
    for frame in range(9):
        mask = torch.zeros(1, 1, 9, 32, 64)
        mask[0, 0, frame, 8:16, 24:32] = 1  # exactly latent pixel (1, 3)
        packed = pack_mask(mask)
        hits = (packed > 0).nonzero().tolist()
        if frame == 0:
            assert hits == [[0, c, 0, 1, 3] for c in range(4)]
        else:
            t, c = (frame + 3) // 4, (frame + 3) % 4
            assert hits == [[0, c, t, 1, 3]]


def tiny_vae() -> AutoencoderKLWan:
    torch.manual_seed(0)
    return AutoencoderKLWan(
        base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 2.0, 0.5, 1.0],
    ).eval()  # fmt: skip


def test_first_frame_condition_equals_diffusers_i2v_pipeline():
    """With only frame 0 known, our condition equals WanImageToVideoPipeline.prepare_latents'."""
    vae = tiny_vae()
    pipe = WanImageToVideoPipeline(
        tokenizer=None, text_encoder=None, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(),
        image_processor=None, image_encoder=None, transformer=None,
    )  # fmt: skip
    image = torch.rand(1, 3, 32, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    _, reference = pipe.prepare_latents(image, 1, 4, 32, 64, 9, torch.float32, torch.device("cpu"))
    video = image[:, :, None].expand(-1, -1, 9, -1, -1).clone()  # content in the unknown frames is zeroed
    mask = torch.zeros(1, 1, 9, 32, 64)
    mask[:, :, 0] = 1
    ours = build_condition(WanVAECodec(vae), video, mask)
    assert ours.shape == reference.shape == (1, 8, 3, 4, 8)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_build_condition_zeroes_unknown_pixels():
    g = torch.Generator().manual_seed(2)
    codec = AnalyticCodec()
    video = torch.rand(1, 3, 5, 32, 64, generator=g) * 2 - 1
    mask = (torch.rand(1, 1, 5, 32, 64, generator=g) > 0.5).float()
    cond = build_condition(codec, video, mask)
    assert cond.shape == (1, 4 + 48, 2, 4, 8)
    torch.testing.assert_close(cond[:, :4], pack_mask(mask))
    torch.testing.assert_close(cond[:, 4:], codec.encode(video * mask))
    # Whatever sits in the holes does not matter.
    other = torch.where(mask > 0, video, torch.full_like(video, 0.9))
    torch.testing.assert_close(build_condition(codec, other, mask), cond)


def test_filled_condition_keeps_the_fill():
    g = torch.Generator().manual_seed(3)
    codec = AnalyticCodec(8)
    video = torch.rand(1, 3, 5, 32, 64, generator=g) * 2 - 1
    mask = (torch.rand(1, 1, 5, 32, 64, generator=g) > 0.5).float()
    cond = build_condition(codec, video, mask, filled=True)
    torch.testing.assert_close(cond[:, :4], pack_mask(mask))
    torch.testing.assert_close(cond[:, 4:], codec.encode(video))


def test_residual_rgb_decoding_returns_the_fill_where_the_model_keeps_it():
    """decode_filled with a filled condition: the condition's own latents give the condition back at full resolution
    (the codec alone would blur it to 8x8 blocks); a change of the latents adds exactly its decoding."""
    g = torch.Generator().manual_seed(4)
    codec = AnalyticCodec(8)
    cond = torch.rand(1, 3, 5, 32, 64, generator=g, dtype=torch.float64) * 2 - 1
    z = codec.encode(cond)
    torch.testing.assert_close(decode_filled(codec, z, cond), cond)
    assert (codec.decode(z) - cond).abs().mean() > 0.1  # plain decoding loses the detail
    delta = torch.randn(z.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(decode_filled(codec, z + delta, cond), cond + codec.decode(delta))
    torch.testing.assert_close(decode_filled(codec, z, None), codec.decode(z))


def test_validation_names_shapes():
    codec = AnalyticCodec()
    with pytest.raises(ValueError, match=r"4k \+ 1.*\(1, 3, 8, 32, 64\)"):
        build_condition(codec, torch.zeros(1, 3, 8, 32, 64), torch.ones(1, 1, 8, 32, 64))
    with pytest.raises(ValueError, match=r"multiples of 16.*\(1, 3, 5, 40, 64\)"):
        build_condition(codec, torch.zeros(1, 3, 5, 40, 64), torch.ones(1, 1, 5, 40, 64))
    with pytest.raises(ValueError, match=r"mask \(1, 1, 5, 32, 32\).*\(1, 3, 5, 32, 64\)"):
        build_condition(codec, torch.zeros(1, 3, 5, 32, 64), torch.ones(1, 1, 5, 32, 32))
    with pytest.raises(ValueError, match="mask must have 1 channels"):
        pack_mask(torch.ones(1, 3, 5, 32, 64))


def test_layout_helpers():
    x = torch.randn(2, 5, 3, 16, 32)
    v = frames_to_video(x)
    assert v.shape == (2, 3, 5, 16, 32) and torch.equal(v[:, 1, 4], x[:, 4, 1])
    assert torch.equal(video_to_frames(v), x)
    d = torch.randn(2, 1, 5, 16, 32)
    assert depth_to_video(d).shape == (2, 3, 5, 16, 32)
    torch.testing.assert_close(video_to_depth(depth_to_video(d)), d)
