"""DualStreamWan: equals base Wan at init, trains every new parameter, checkpointing, validation."""

from __future__ import annotations

import pytest
import torch

from panowan.models.dual_stream import DualStreamWan, interaction_schedule
from panowan.models.interaction import CrossStreamAttention, PoseCrossAttention
from panowan.models.presets import get_preset
from panowan.models.replicas import tiny_dual_stream, tiny_inputs
from panowan.parallel.exchange import LocalExchange


def _plain(model, x, stream):
    """diffusers' own forward on the stream's transformer (same weights, same inputs)."""
    hidden = torch.cat([x["noisy"][stream], x["condition"][stream]], dim=1)
    return model.streams[stream](hidden, x["timestep"], x["text"], x["image"], return_dict=False)[0]


def test_schedule_alternates_pose_then_cross():
    points = interaction_schedule(get_preset("wan2.1-i2v-14b"))
    assert [p.block for p in points] == [3, 7, 11, 15, 19, 23, 27, 31, 35, 39]
    assert [p.kind for p in points] == ["pose", "cross"] * 5
    model, _ = tiny_dual_stream()
    kinds = [type(layer) for layer in model.interactions["rgb"]]
    assert kinds == [PoseCrossAttention, CrossStreamAttention] * 2


@pytest.mark.parametrize("checkpointing", [False, True])
def test_init_equals_plain_wan(checkpointing):
    model, _ = tiny_dual_stream(seed=1)
    if checkpointing:
        model.enable_gradient_checkpointing()
    x = tiny_inputs(batch=2, frames=5, seed=2)
    out = model(**x)
    for stream in ("rgb", "depth"):
        want = _plain(model, x, stream)
        assert out[stream].shape == want.shape == (2, 48, 2, 4, 8)
        assert (out[stream] - want).abs().max().item() <= 1e-5


class CountingExchange(LocalExchange):
    def __init__(self) -> None:
        self.calls = 0

    def swap(self, states):
        self.calls += 1
        return super().swap(states)


def _train_step(model, x, target, opt):
    opt.zero_grad()
    out = model(**x)
    loss = sum(torch.nn.functional.mse_loss(out[s], target[s]) for s in out)
    loss.backward()
    opt.step()


def test_every_new_parameter_learns_and_checkpointing_matches():
    grads = {}
    for checkpointing in (False, True):
        exchange = CountingExchange()
        model, _ = tiny_dual_stream(seed=3, exchange=exchange)
        model.requires_grad_(False)
        new = [*model.interactions.parameters(), *model.plucker_net.parameters()]
        for p in new:
            p.requires_grad_(True)
        if checkpointing:
            model.enable_gradient_checkpointing()
        x = tiny_inputs(batch=1, frames=5, seed=4)
        g = torch.Generator().manual_seed(5)
        target = {s: torch.randn(x["noisy"][s].shape, generator=g) for s in x["noisy"]}
        opt = torch.optim.AdamW(new, lr=1e-3)
        _train_step(model, x, target, opt)
        for layers in model.interactions.values():
            for layer in layers:
                assert layer.to_out.weight.abs().sum() > 0 and layer.to_out.bias.abs().sum() > 0
        opt.zero_grad()
        out = model(**x)
        sum(torch.nn.functional.mse_loss(out[s], target[s]) for s in out).backward()
        named = [(f"interactions.{n}", p) for n, p in model.interactions.named_parameters()]
        named += [(f"plucker_net.{n}", p) for n, p in model.plucker_net.named_parameters()]
        dead = [n for n, p in named if p.grad is None or p.grad.abs().max() == 0]
        assert not dead, dead
        # The exchange ran once per cross-stream point per forward: never again on recomputation.
        assert exchange.calls == 2 * 2
        grads[checkpointing] = {n: p.grad.clone() for n, p in named}
    for n, g in grads[False].items():
        torch.testing.assert_close(grads[True][n], g, rtol=1e-5, atol=1e-6, msg=n)


def test_streams_exchange_information_after_training():
    model, _ = tiny_dual_stream(seed=6)
    with torch.no_grad():  # make the interactions live (as after some training)
        for layers in model.interactions.values():
            for layer in layers:
                torch.nn.init.normal_(layer.to_out.weight, std=0.1)
    x = tiny_inputs(seed=7)
    with torch.no_grad():
        a = model(**x)
        x2 = {**x, "noisy": {**x["noisy"], "depth": x["noisy"]["depth"] + 1}}
        b = model(**x2)
    assert (a["rgb"] - b["rgb"]).abs().max() > 1e-4  # rgb sees depth through the exchange
    torch.testing.assert_close(_plain(model, x, "rgb"), _plain(model, x2, "rgb"))


def test_input_validation_names_shapes():
    model, _ = tiny_dual_stream()
    x = tiny_inputs()
    with pytest.raises(ValueError, match="noisy holds streams \\['rgb'\\]"):
        model(**{**x, "noisy": {"rgb": x["noisy"]["rgb"]}})
    bad = {"rgb": x["noisy"]["rgb"], "depth": x["noisy"]["depth"][..., :4]}
    with pytest.raises(ValueError, match=r"differ in shape.*\(1, 48, 2, 4, 8\).*\(1, 48, 2, 4, 4\)"):
        model(**{**x, "noisy": bad})
    no_mask = {s: c[:, 4:] for s, c in x["condition"].items()}
    with pytest.raises(ValueError, match=r"condition\['rgb'\] has shape \(1, 48, 2, 4, 8\); need \(1, 52"):
        model(**{**x, "condition": no_mask})
    with pytest.raises(ValueError, match=r"4k \+ 1.*\(1, 6, 6, 32, 64\)"):
        model(**{**x, "plucker": torch.zeros(1, 6, 6, 32, 64)})
    with pytest.raises(ValueError, match=r"plucker \(1, 6, 9, 32, 64\) does not match"):
        model(**{**x, "plucker": torch.zeros(1, 6, 9, 32, 64)})
    with pytest.raises(ValueError, match="512 text tokens"):
        model(**{**x, "text": x["text"][:, :10]})
    with pytest.raises(ValueError, match="image must be"):
        model(**{**x, "image": None})


def test_one_stream_needs_a_matching_exchange():
    model, config = tiny_dual_stream()
    with pytest.raises(ValueError, match="exchange serves streams"):
        DualStreamWan({"rgb": model.streams["rgb"]}, config)


def test_same_seed_same_new_modules_for_any_placement():
    both, _ = tiny_dual_stream(seed=0)

    class Solo:
        local_streams = ("depth",)

        def swap(self, states):
            raise AssertionError("not called here")

    solo, _ = tiny_dual_stream(seed=0, local_streams=("depth",), exchange=Solo())
    for (n, a), (_, b) in zip(
        both.interactions["depth"].named_parameters(), solo.interactions["depth"].named_parameters()
    ):
        assert torch.equal(a, b), n
    for a, b in zip(both.plucker_net.parameters(), solo.plucker_net.parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(both.interactions["rgb"][0].to_q.weight, both.interactions["depth"][0].to_q.weight)
