"""embed / run_block / head compose to diffusers' WanTransformer3DModel.forward."""

from __future__ import annotations

import torch
from diffusers import WanTransformer3DModel

from panowan.models.replicas import tiny_base, tiny_config, tiny_inputs
from panowan.models.wan_stream import embed, forward_stream, head, run_block


def _reference(transformer, x, stream="rgb"):
    hidden = torch.cat([x["noisy"][stream], x["condition"][stream]], dim=1)
    return hidden, transformer(hidden, x["timestep"], x["text"], x["image"], return_dict=False)[0]


def test_split_forward_equals_diffusers_i2v():
    config = tiny_config()
    transformer = tiny_base(config, seed=3)
    x = tiny_inputs(batch=2, frames=9, height=32, width=64, seed=4)
    hidden, want = _reference(transformer, x)
    state = embed(transformer, hidden, x["timestep"], x["text"], x["image"])
    assert state.tokens.shape == (2, 3 * 2 * 4, 32) and state.grid == (3, 2, 4)
    tokens = state.tokens
    for i in range(config.num_layers):
        tokens = run_block(transformer, i, state, tokens)
    got = head(transformer, tokens, state)
    assert got.shape == want.shape == (2, 48, 3, 4, 8)
    assert (got - want).abs().max().item() <= 1e-6


def test_split_forward_equals_diffusers_without_image():
    wan = {**tiny_config().wan, "image_dim": None, "added_kv_proj_dim": None}
    torch.manual_seed(5)
    transformer = WanTransformer3DModel(**wan).eval()
    x = tiny_inputs(batch=1, frames=5, seed=6)
    hidden = torch.cat([x["noisy"]["depth"], x["condition"]["depth"]], dim=1)
    text = x["text"][:, :7]  # T2V-style models take any text length
    want = transformer(hidden, x["timestep"], text, return_dict=False)[0]
    got = forward_stream(transformer, hidden, x["timestep"], text)
    assert (got - want).abs().max().item() <= 1e-6
