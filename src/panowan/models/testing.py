"""Tiny models and inputs for tests (of this package and of the layers above it).

`tiny_dual_stream(seed)` builds the "tiny" preset from a seeded random base Wan transformer;
`tiny_inputs(...)` gives matching forward kwargs with Plücker maps of random poses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch
from diffusers import WanTransformer3DModel

from panowan.geometry.plucker import plucker_erp
from panowan.geometry.pose import Pose, quaternion_to_matrix
from panowan.models.codec import latent_frames
from panowan.models.dual_stream import WAN_TEXT_TOKENS, DualStreamWan
from panowan.models.presets import DualStreamConfig, get_preset
from panowan.parallel.exchange import STREAMS, StreamExchange

TINY_IMAGE_TOKENS = 4


def tiny_config(**overrides) -> DualStreamConfig:
    """The "tiny" preset with dataclass fields replaced; a `wan` override is merged into the Wan kwargs."""
    config = get_preset("tiny")
    wan = {**config.wan, **overrides.pop("wan", {})}
    return dataclasses.replace(config, wan=wan, **overrides)


def tiny_base(config: DualStreamConfig, seed: int = 0) -> WanTransformer3DModel:
    """A randomly initialised Wan transformer (float32, CPU) from a private RNG stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return WanTransformer3DModel(**config.wan).eval()


def tiny_dual_stream(
    seed: int = 0,
    local_streams: Iterable[str] = STREAMS,
    exchange: StreamExchange | None = None,
    **overrides,
) -> tuple[DualStreamWan, DualStreamConfig]:
    """(model, config): the tiny preset (with `overrides`, see `tiny_config`) on a seeded random base.
    The same seed gives the same weights for every choice of `local_streams`."""
    config = tiny_config(**overrides)
    model = DualStreamWan.from_base(tiny_base(config, seed), config, tuple(local_streams), exchange)
    return model, config


def random_plucker(
    batch: int, frames: int, height: int, width: int, generator: torch.Generator
) -> torch.Tensor:
    """`B,6,F,H,W` Plücker maps of random poses relative to view 0 (view 0 the identity)."""
    maps = []
    for _ in range(batch):
        q = torch.randn(frames, 4, generator=generator, dtype=torch.float64)
        q[0] = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
        q = q / q.norm(dim=-1, keepdim=True)
        rot = quaternion_to_matrix(q)  # F,3,3 world -> camera
        pos = torch.randn(frames, 3, generator=generator, dtype=torch.float64)
        pos[0] = 0
        maps.append(plucker_erp(Pose(rot, pos), height, width))  # F,6,H,W
    return torch.stack(maps).transpose(1, 2).contiguous()


def tiny_inputs(
    batch: int = 1,
    frames: int = 5,
    height: int = 32,
    width: int = 64,
    seed: int = 0,
    *,
    config: DualStreamConfig | None = None,
    streams: Iterable[str] = STREAMS,
) -> dict:
    """Forward kwargs of `DualStreamWan` for `streams`: noisy, condition, timestep, plucker, text, image."""
    config = config or get_preset("tiny")
    g = torch.Generator().manual_seed(seed)
    z, t, h, w = config.z_dim, latent_frames(frames), height // 8, width // 8
    noisy, condition = {}, {}
    for name in STREAMS:  # draw both streams always, so a subset sees the same tensors
        noisy[name] = torch.randn(batch, z, t, h, w, generator=g)
        mask = (torch.rand(batch, 4, t, h, w, generator=g) > 0.5).float()
        condition[name] = torch.cat([mask, torch.randn(batch, z, t, h, w, generator=g)], dim=1)
    wanted = tuple(streams)
    image_dim = config.wan.get("image_dim")
    return {
        "noisy": {n: noisy[n] for n in wanted},
        "condition": {n: condition[n] for n in wanted},
        "timestep": torch.rand(batch, generator=g) * 1000,
        "plucker": random_plucker(batch, frames, height, width, g).float(),
        "text": torch.randn(batch, WAN_TEXT_TOKENS, config.wan.get("text_dim", 4096), generator=g),
        "image": None if image_dim is None else torch.randn(batch, TINY_IMAGE_TOKENS, image_dim, generator=g),
    }
