"""The pixel decoders (`models.pixel_decoder`) and the interaction ablations (`DualStreamConfig.interactions`):
identity at initialisation, corrections in the holes only, ERP seam equivariance, the cross-stream inputs, the
schedules and layers of each ablation, and an export round trip."""

from __future__ import annotations

import pytest
import torch

from panowan.models.dual_stream import interaction_schedule
from panowan.models.pixel_decoder import (
    DECODER_LEVELS,
    PixelDecoder,
    apply_decoders,
    decoder_channels,
    decoder_inputs,
)
from panowan.models.presets import INTERACTIONS
from panowan.models.replicas import tiny_config, tiny_dual_stream, tiny_inputs


def _videos(batch=2, frames=3, height=16, width=32, seed=0):
    """(coarse, conditions, mask B,1,F,H,W) with random values; mask 1 on the left half of every frame."""
    g = torch.Generator().manual_seed(seed)
    coarse = {
        s: torch.rand(batch, c, frames, height, width, generator=g) * 2 - 1
        for s, c in (("rgb", 3), ("depth", 1))
    }
    cond = {
        s: torch.rand(batch, c, frames, height, width, generator=g) * 2 - 1
        for s, c in (("rgb", 3), ("depth", 1))
    }
    mask = torch.zeros(batch, 1, frames, height, width)
    mask[..., : width // 2] = 1
    return coarse, cond, mask


def _randomise(module: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("cross", [False, True])
def test_channels_follow_the_cross_stream_setting(cross):
    assert decoder_channels("rgb", cross) == (9 if cross else 7)  # + depth coarse, condition
    assert decoder_channels("depth", cross) == (9 if cross else 3)  # + rgb coarse, condition
    coarse, cond, mask = _videos()
    for stream in ("rgb", "depth"):
        x = decoder_inputs(stream, coarse, cond, mask, cross)
        assert x.shape == (2 * 3, decoder_channels(stream, cross), 16, 32)


def test_fresh_decoders_return_the_coarse_decoding():
    coarse, cond, mask = _videos()
    decoders = torch.nn.ModuleDict({s: PixelDecoder(s, 4, cross_stream=True) for s in ("rgb", "depth")})
    out = apply_decoders(decoders, coarse, cond, mask, cross_stream=True)
    for s in ("rgb", "depth"):
        torch.testing.assert_close(out[s], coarse[s], rtol=0, atol=0)


def test_trained_decoders_change_holes_only_and_read_the_other_stream():
    coarse, cond, mask = _videos()
    decoder = PixelDecoder("rgb", 4, cross_stream=True)
    _randomise(decoder)
    out = apply_decoders(torch.nn.ModuleDict({"rgb": decoder}), coarse, cond, mask, cross_stream=True)["rgb"]
    known = mask.bool().expand_as(out)
    torch.testing.assert_close(out[known], coarse["rgb"][known], rtol=0, atol=0)
    assert (out[~known] - coarse["rgb"][~known]).abs().max() > 1e-3
    # the depth stream's condition reaches the RGB decoder only with cross-stream exchange
    moved = {**cond, "depth": cond["depth"] + 1}
    again = apply_decoders(torch.nn.ModuleDict({"rgb": decoder}), coarse, moved, mask, cross_stream=True)[
        "rgb"
    ]
    assert (again - out).abs().max() > 1e-4
    alone = PixelDecoder("rgb", 4, cross_stream=False)
    _randomise(alone)
    a = apply_decoders(torch.nn.ModuleDict({"rgb": alone}), coarse, cond, mask, cross_stream=False)["rgb"]
    b = apply_decoders(torch.nn.ModuleDict({"rgb": alone}), coarse, moved, mask, cross_stream=False)["rgb"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_decoder_commutes_with_a_longitude_roll():
    """ERP padding wraps the columns: rolling the input by a multiple of the coarsest level's cell (2**levels
    pixels, so that the pooling grid is unchanged) rolls the output."""
    coarse, cond, mask = _videos(width=64)
    mask = (torch.rand(mask.shape, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    decoder = PixelDecoder("depth", 4, cross_stream=False)
    _randomise(decoder)
    x = decoder_inputs("depth", coarse, cond, mask, False)
    shift = 2**DECODER_LEVELS
    torch.testing.assert_close(
        decoder(x.roll(shift, dims=-1)), decoder(x).roll(shift, dims=-1), rtol=1e-5, atol=1e-5
    )


def test_decoder_refuses_bad_inputs():
    decoder = PixelDecoder("rgb", 4, cross_stream=False)
    with pytest.raises(ValueError, match="takes N,7,H,W"):
        decoder(torch.zeros(1, 13, 16, 32))
    with pytest.raises(ValueError, match="divisible by 16"):
        decoder(torch.zeros(1, 7, 24, 32))
    with pytest.raises(ValueError, match="stream must be one of"):
        PixelDecoder("normals", 4, cross_stream=False)
    with pytest.raises(ValueError, match="pixel_decoder_width must be >= 0"):
        tiny_config(pixel_decoder_width=-1)
    with pytest.raises(ValueError, match="interactions must be one of"):
        tiny_config(interactions="both")


@pytest.mark.parametrize("interactions", INTERACTIONS)
def test_each_ablation_keeps_only_its_interaction_layers(interactions):
    config = tiny_config(interactions=interactions)
    full = interaction_schedule(tiny_config())
    points = interaction_schedule(config)
    kept = {"pose+cross": {"pose", "cross"}, "pose": {"pose"}, "cross": {"cross"}, "none": set()}[
        interactions
    ]
    assert [(p.block, p.k, p.kind) for p in points] == [
        (p.block, p.k, p.kind) for p in full if p.kind in kept
    ]
    assert [p.index for p in points] == list(range(len(points)))
    model, _ = tiny_dual_stream(interactions=interactions)
    assert all(len(model.interactions[s]) == len(points) for s in ("rgb", "depth"))
    inputs = tiny_inputs(config=config)
    out = model(**inputs)
    assert all(torch.isfinite(v).all() for v in out.values())
    # pose features enter only with pose exchange: other poses change the output iff the model has them
    moved = {**inputs, "plucker": inputs["plucker"].flip(2)}
    _randomise(model.interactions, seed=5)  # the layers' outputs start at zero; make them act
    changed = any((model(**moved)[s] - model(**inputs)[s]).abs().max() > 1e-6 for s in ("rgb", "depth"))
    assert changed == ("pose" in kept)


def test_model_pixel_decoders_export_and_load(tmp_path):
    from panowan.commands.infer import export_embedded
    from panowan.models.dual_stream import DualStreamWan
    from panowan.models.exported import load_exported_weights, read_exported
    from panowan.models.presets import DualStreamConfig
    from panowan.models.replicas import tiny_base

    model, _ = tiny_dual_stream(pixel_decoder_width=4, interactions="pose")
    assert set(model.pixel_decoders) == {"rgb", "depth"}
    assert not model.pixel_decoders["rgb"].cross_stream
    _randomise(model.pixel_decoders)
    export_embedded(model, {}, tmp_path, compact=False)
    meta, weights = read_exported(tmp_path)
    loaded_config = DualStreamConfig.from_dict(meta["model"])
    assert (loaded_config.pixel_decoder_width, loaded_config.interactions) == (4, "pose")
    fresh = DualStreamWan.from_base(tiny_base(loaded_config, seed=9), loaded_config)
    load_exported_weights(fresh, weights)
    coarse, cond, mask = _videos()
    for s in ("rgb", "depth"):
        torch.testing.assert_close(
            fresh.decode_pixels(coarse, cond, mask)[s], model.decode_pixels(coarse, cond, mask)[s]
        )
    one = DualStreamWan.from_base(tiny_base(loaded_config, seed=9), loaded_config, ("depth",))
    load_exported_weights(one, weights)  # the peer's decoder is ignored, not an error
    assert set(one.decode_pixels(coarse, cond, mask)) == {"depth"}


def test_erp_unet_starts_at_zero_and_wraps_the_seam():
    """The U-Net body of the decoders: a fresh one outputs zeros (its output layer starts at zero), and once
    trained its output turns with the panorama (columns wrap at the ERP seam; a shift by a multiple of the
    coarsest cell keeps the pooling grid)."""
    from panowan.models.erp_unet import ErpUNet

    x = torch.rand(2, 5, 16, 64, generator=torch.Generator().manual_seed(4)) * 2 - 1
    unet = ErpUNet(5, 2, width=4, levels=3)
    assert torch.equal(unet.body(x), torch.zeros(2, 2, 16, 64))
    _randomise(unet)
    with torch.no_grad():
        out = unet.body(x)
        assert out.abs().max() > 1e-3
        for shift in (8, 24):
            torch.testing.assert_close(
                unet.body(x.roll(shift, dims=-1)), out.roll(shift, dims=-1), rtol=1e-5, atol=1e-5
            )
    with pytest.raises(ValueError, match="positive channels"):
        ErpUNet(5, 2, width=0, levels=3)


def test_ray_decoder_reads_where_on_the_sphere_and_keeps_its_input_contract():
    """With `rays` the decoder appends the camera-frame ray directions itself: callers pass the same
    `decoder_inputs`, the U-Net gets 3 more channels, and its output depends on where the pixel looks (a plain
    convolution on a constant input cannot tell the floor from the horizon). Rays are the camera's: a yaw roll
    of a panorama is a turned camera, so the decoder is no longer roll-equivariant, by design."""
    decoder = PixelDecoder("depth", 4, cross_stream=False, levels=2, rays=True)
    assert decoder.in_channels == decoder_channels("depth", False) + 3
    _randomise(decoder)
    x = torch.zeros(1, decoder_channels("depth", False), 16, 32)  # all holes, constant input
    with torch.no_grad():
        out = decoder(x)[0, 0]
    assert (out[3] - out[12]).abs().max() > 1e-4  # rows above and below the horizon differ
    from panowan.geometry.erp import erp_directions

    rays = erp_directions(16, 32).permute(2, 0, 1)[
        None
    ]  # the camera frame's x y z, as geometry.erp defines it
    with torch.no_grad():
        torch.testing.assert_close(out, decoder.body(torch.cat([x, rays], dim=1))[0, 0])
    with pytest.raises(ValueError, match="takes N,3,H,W"):
        decoder(torch.zeros(1, 6, 16, 32))
    plain = PixelDecoder("depth", 4, cross_stream=False, levels=2)
    assert plain.in_channels == decoder_channels("depth", False)


def test_init_from_an_export_with_other_decoders_starts_them_fresh(tmp_path):
    """A run may change the pixel decoders' width, levels or ray input from its --init_from model: everything
    else loads, the decoders start as the identity, with a warning; any other difference is refused."""
    from panowan.commands.infer import export_embedded
    from panowan.models.dual_stream import DualStreamWan
    from panowan.models.exported import init_from_exported
    from panowan.models.replicas import tiny_base

    old, _ = tiny_dual_stream(pixel_decoder_width=4)
    _randomise(old, seed=2)
    export_embedded(old, {}, tmp_path, compact=False)
    config = tiny_config(pixel_decoder_width=8, pixel_decoder_levels=2, pixel_decoder_rays=True)
    new = DualStreamWan.from_base(tiny_base(config, seed=9), config)
    with pytest.warns(UserWarning, match="pixel decoders differ"):
        init_from_exported(new, tmp_path)
    for name, p in new.named_parameters():
        if not name.startswith("pixel_decoders."):
            torch.testing.assert_close(p, dict(old.named_parameters())[name], rtol=0, atol=0, msg=name)
    coarse, cond, mask = _videos()
    torch.testing.assert_close(new.decode_pixels(coarse, cond, mask)["rgb"], coarse["rgb"], rtol=0, atol=0)
    other = tiny_config(pixel_decoder_width=8, interactions="pose")
    with pytest.raises(ValueError, match="differs in"):
        init_from_exported(DualStreamWan.from_base(tiny_base(other, seed=9), other), tmp_path)
