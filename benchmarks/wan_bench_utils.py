"""Shared pieces of the GPU benchmarks: random-weight Wan transformers built directly on the GPU,
inputs of the real shape, and CUDA-event timing. Not imported by the package."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Shape:
    """Latent shape of F views at H x W pixels through Wan's VAE (4x temporal, 8x spatial)."""

    frames: int = 17
    height: int = 720
    width: int = 1440
    text_tokens: int = 512
    image_tokens: int = 257

    @property
    def latent(self) -> tuple[int, int, int]:
        return (self.frames - 1) // 4 + 1, self.height // 8, self.width // 8

    @property
    def tokens(self) -> int:
        t, h, w = self.latent
        return t * (h // 2) * (w // 2)


def build_random_wan(wan_kwargs: dict, device: torch.device, dtype=torch.bfloat16, seed: int = 0):
    """A WanTransformer3DModel with random weights, created directly on `device` in `dtype`
    (a 14B model in float32 would not fit next to its twin). Same seed -> same weights."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = WanTransformer3DModel(**wan_kwargs)
    finally:
        torch.set_default_dtype(prev)
    return model.to(dtype)


def empty_wan(wan_kwargs: dict, device: torch.device | str, dtype=torch.bfloat16):
    """A WanTransformer3DModel whose weights are allocated on `device` but never initialised (instant at
    14B): for code that needs the module tree and its placement, not its values (LoRA adapters and the
    dual-stream modules built beside it, which are initialised on their own)."""
    from diffusers import WanTransformer3DModel

    from panowan.models.replicas import default_device_dtype

    with default_device_dtype("meta", dtype):
        model = WanTransformer3DModel(**wan_kwargs)
    return model.to_empty(device=device)


def random_inputs(
    wan_kwargs: dict, shape: Shape, device, dtype=torch.bfloat16, seed: int = 0, batch: int = 1
):
    g = torch.Generator(device=device).manual_seed(seed)
    t, h, w = shape.latent
    x = torch.randn(batch, wan_kwargs["in_channels"], t, h, w, generator=g, device=device, dtype=dtype)
    text = torch.randn(
        batch, shape.text_tokens, wan_kwargs["text_dim"], generator=g, device=device, dtype=dtype
    )
    image = None
    if wan_kwargs.get("image_dim"):
        image = torch.randn(
            batch, shape.image_tokens, wan_kwargs["image_dim"], generator=g, device=device, dtype=dtype
        )
    timestep = torch.full((batch,), 500.0, device=device)
    return x, timestep, text, image


def add_shape_args(parser, preset: str = "wan2.1-i2v-14b") -> None:
    """The flags every model benchmark shares: preset, views, height, LoRA rank."""
    parser.add_argument("--preset", default=preset, help="model preset (random weights)")
    parser.add_argument("--frames", type=int, default=17, help="views (pixel frames), 4k+1")
    parser.add_argument("--height", type=int, default=720, help="panorama height; width is 2x")
    parser.add_argument("--lora_rank", type=int, default=32, help="LoRA rank on attention projections")


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_cuda(fn: Callable[[], object], warmup: int, iters: int) -> list[float]:
    """Seconds per call of `fn` (synchronised wall clock; each call is seconds long)."""
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return times


def summary(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "n": len(times)}


def forward_flops(wan_kwargs: dict, shape: Shape, params: int) -> float:
    """Matrix FLOPs of one forward: 2 * params * tokens for the projections (approximately; the
    text/image cross-attention projections see fewer tokens) plus 4 * S^2 * D per self-attention."""
    d = wan_kwargs["num_attention_heads"] * wan_kwargs["attention_head_dim"]
    s = shape.tokens
    return 2.0 * params * s + 4.0 * s * s * d * wan_kwargs["num_layers"]
