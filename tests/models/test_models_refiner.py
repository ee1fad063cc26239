"""DepthRefiner: changes the holes only, starts as the identity, respects the ERP seam; its place in the model."""

from __future__ import annotations

import warnings

import pytest
import torch

from panowan.models.refiner import DepthRefiner, refiner_inputs


def _inputs(frames: int = 3, height: int = 16, width: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    depth = torch.rand(frames, 1, height, width, generator=g) * 2 - 1
    cond = torch.rand(frames, 1, height, width, generator=g) * 2 - 1
    mask = (torch.rand(frames, 1, height, width, generator=g) > 0.4).float()
    rgb = torch.rand(frames, 3, height, width, generator=g) * 2 - 1
    return depth, cond, mask, rgb


def _perturbed(width: int = 4, seed: int = 1) -> DepthRefiner:
    torch.manual_seed(seed)
    refiner = DepthRefiner(width)
    with torch.no_grad():
        refiner.out.weight.normal_(0, 0.3)  # the zero initialisation would hide everything below
        refiner.out.bias.fill_(0.1)
    return refiner.eval()


def test_fresh_refiner_is_the_identity():
    depth, cond, mask, rgb = _inputs()
    assert torch.equal(DepthRefiner(4)(refiner_inputs(depth, cond, mask, rgb)), depth)


def test_refiner_changes_the_holes_only():
    depth, cond, mask, rgb = _inputs()
    with torch.no_grad():
        out = _perturbed()(refiner_inputs(depth, cond, mask, rgb))
    known = mask.bool()
    assert torch.equal(out[known], depth[known])
    assert (out[~known] - depth[~known]).abs().min() > 0


def test_refiner_wraps_the_erp_seam():
    """Turning the panorama by a multiple of the coarsest cell (8 columns) turns the output with it: the
    left and right edges are neighbours, not borders."""
    inputs = _inputs(width=64)
    refiner = _perturbed()
    with torch.no_grad():
        out = refiner(refiner_inputs(*inputs))
        for shift in (8, 24):
            turned = refiner(refiner_inputs(*(torch.roll(x, shift, dims=-1) for x in inputs)))
            torch.testing.assert_close(turned, torch.roll(out, shift, dims=-1), rtol=1e-5, atol=1e-5)


def test_refiner_refuses_sizes_it_cannot_halve():
    with pytest.raises(ValueError, match="divisible by 8"):
        DepthRefiner(4)(refiner_inputs(*_inputs(height=12)))
    with pytest.raises(ValueError, match="N,6,H,W"):
        DepthRefiner(4)(_inputs()[0])
    with pytest.raises(ValueError, match="width >= 1"):
        DepthRefiner(0)


def test_config_width_builds_and_attaches_the_refiner():
    from panowan.models.presets import DualStreamConfig
    from panowan.models.replicas import tiny_config, tiny_dual_stream

    with pytest.raises(ValueError, match="depth_refiner_width"):
        tiny_config(depth_refiner_width=-1)
    model, config = tiny_dual_stream(depth_refiner_width=4)
    assert isinstance(model.depth_refiner, DepthRefiner) and model.depth_refiner.width == 4
    assert DualStreamConfig.from_dict(config.to_dict()).depth_refiner_width == 4
    plain, _ = tiny_dual_stream()
    assert plain.depth_refiner is None
    plain.attach_depth_refiner(DepthRefiner(8))
    assert plain.config.depth_refiner_width == 8 and any(
        k.startswith("depth_refiner.") for k in plain.state_dict()
    )
    plain.attach_depth_refiner(None)
    assert plain.config.depth_refiner_width == 0 and plain.depth_refiner is None


def test_init_from_an_export_with_a_refiner_drops_it(tmp_path):
    """A diffusion run may start from an exported model with a refiner: the refiner (fitted to the old model's
    outputs) is left behind with a warning, every other weight is copied."""
    from panowan.commands.infer import export_embedded
    from panowan.models.exported import init_from_exported
    from panowan.models.replicas import tiny_dual_stream

    source, _ = tiny_dual_stream(seed=5)
    source.attach_depth_refiner(_perturbed())
    export_embedded(source, {}, tmp_path, compact=False)
    target, _ = tiny_dual_stream(seed=6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        init_from_exported(target, tmp_path)
    assert any("depth refiner is not carried" in str(w.message) for w in caught)
    assert target.depth_refiner is None
    ours = {k: v for k, v in source.state_dict().items() if not k.startswith("depth_refiner.")}
    assert ours.keys() == target.state_dict().keys()
    for k, v in ours.items():
        assert torch.equal(target.state_dict()[k], v), k
