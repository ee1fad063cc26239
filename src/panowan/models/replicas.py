"""Random-weight replicas of the models and of the published Wan2.1-I2V folders: tiny ones to test code that
uses panowan (this package's tests, and yours), full-size ones for benchmarks. Nothing here downloads anything.

`tiny_dual_stream(seed)` builds the "tiny" preset from a seeded random base Wan transformer;
`tiny_inputs(...)` gives matching forward kwargs with Plücker maps of random poses.
`build_i2v_parts(sizes)` + `write_diffusers_layout(parts, folder)` write a base model folder with random
weights (`tiny_i2v_sizes()` for tests, `wan_i2v_14b_sizes()` for GPU benchmarks).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


# ------------------------------------------------------------------ Wan2.1-I2V folders with random weights
# The four models of a published Wan2.1-I2V folder and its tokenizer, at the real sizes (benchmarks) or tiny
# ones (tests), written in the diffusers layout that `panowan.models.loading` reads.

TOKENIZER_SENTENCES = [
    "a bright living room with a grey sofa and a wooden table",
    "a dark kitchen with white tiles and a steel fridge",
    "a small bedroom with a wooden floor, a lamp and a window",
    "an office with two desks, chairs and a bookshelf",
]

TINY_TRANSFORMER_KW = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=16,
    in_channels=36,
    out_channels=16,
    text_dim=32,
    freq_dim=32,
    ffn_dim=64,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    image_dim=32,
    added_kv_proj_dim=32,
    rope_max_seq_len=1024,
)


@dataclasses.dataclass(frozen=True)
class WanI2VSizes:
    """Keyword arguments of the models of a Wan2.1-I2V folder: `WanTransformer3DModel`, `AutoencoderKLWan`,
    `UMT5Config` (vocab_size None: the tokenizer's length) and `CLIPVisionConfig` (of `image_encoder_class`)."""

    transformer: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]
    image_encoder: dict[str, Any]
    image_encoder_class: str = "CLIPVisionModelWithProjection"

    @property
    def image_size(self) -> int:
        return int(self.image_encoder["image_size"])

    @property
    def image_tokens(self) -> int:
        """CLIP tokens of one image: the class token and one per patch."""
        return (self.image_size // int(self.image_encoder["patch_size"])) ** 2 + 1


_UMT5_COMMON = dict(
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
    tie_word_embeddings=False,
    pad_token_id=0,
    eos_token_id=1,
)


def tiny_i2v_sizes(image_encoder_class: str = "CLIPVisionModelWithProjection") -> WanI2VSizes:
    """Widths 16-32, 2 layers each; the CLIP has one head (Wan's CLIP file carries no config: the loader of
    the original layout assumes ViT-H's head width 80, which one head of 32 passes as)."""
    return WanI2VSizes(
        transformer=dict(TINY_TRANSFORMER_KW),
        vae={"base_dim": 8, "z_dim": 16},
        text_encoder=dict(
            vocab_size=None, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, **_UMT5_COMMON
        ),
        image_encoder=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=1,
            image_size=28,
            patch_size=14,
            hidden_act="gelu",
            projection_dim=24,
        ),
        image_encoder_class=image_encoder_class,
    )


def wan_i2v_14b_sizes() -> WanI2VSizes:
    """Wan2.1-I2V-14B-720P: the 14B transformer, the Wan 2.1 VAE (diffusers' defaults: z = 16 and Wan's
    latents_mean / latents_std), UMT5-XXL's encoder (5.7B parameters) and CLIP ViT-H/14 (0.6B)."""
    return WanI2VSizes(
        transformer=get_preset("wan2.1-i2v-14b").wan,
        vae={},
        text_encoder=dict(
            vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, **_UMT5_COMMON
        ),
        image_encoder=dict(
            hidden_size=1280,
            intermediate_size=5120,
            num_hidden_layers=32,
            num_attention_heads=16,
            image_size=224,
            patch_size=14,
            hidden_act="gelu",
            projection_dim=1024,
        ),
    )


@dataclasses.dataclass
class WanI2VParts:
    """The models of a Wan2.1-I2V folder, in memory."""

    transformer: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    image_encoder: torch.nn.Module
    tokenizer: Any


def build_tokenizer() -> Any:
    """A T5-style (Unigram, Metaspace) fast tokenizer trained on a few sentences: 80 tokens, so any UMT5
    vocabulary can embed its ids."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import T5TokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=80, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    tok.train_from_iterator(TOKENIZER_SENTENCES * 3, trainer)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)]
    )
    return T5TokenizerFast(
        tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0
    )


@contextmanager
def default_device_dtype(device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """New tensors on `device` in `dtype`: a 14B model is initialised where it will live, never in float32 on
    the CPU first (minutes and 64 GB)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def build_i2v_parts(
    sizes: WanI2VSizes,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    vae_dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> WanI2VParts:
    """The models of `sizes` with their libraries' random initialisation, built on `device`: the transformer
    and the encoders in `dtype`, the VAE in `vae_dtype` (float32, as published)."""
    import transformers
    from diffusers import AutoencoderKLWan
    from transformers import CLIPVisionConfig, UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    text_kw = dict(sizes.text_encoder)
    text_kw["vocab_size"] = text_kw["vocab_size"] or len(tokenizer)
    clip_cls = getattr(transformers, sizes.image_encoder_class)
    with default_device_dtype(device, dtype):
        transformer = WanTransformer3DModel(**sizes.transformer)
        text_encoder = UMT5EncoderModel(UMT5Config(**text_kw))
        image_encoder = clip_cls(CLIPVisionConfig(**sizes.image_encoder))
    with default_device_dtype(device, vae_dtype):
        vae = AutoencoderKLWan(**sizes.vae)
    parts = WanI2VParts(transformer, vae, text_encoder, image_encoder, tokenizer)
    for m in (transformer, vae, text_encoder, image_encoder):
        m.eval().requires_grad_(False)
    return parts


def write_diffusers_layout(
    parts: WanI2VParts,
    folder: str | os.PathLike,
    *,
    image_size: int,
    transformer_shard_size: str = "10GB",
    shard_size: str | None = None,
) -> dict[str, float]:
    """Write `parts` as a diffusers-layout folder (as `Wan-AI/Wan2.1-I2V-14B-720P-Diffusers`): model_index.json,
    transformer/ (sharded safetensors with an index), vae/, text_encoder/, image_encoder/, tokenizer/,
    image_processor/ (Wan's CLIP preprocessing at `image_size`), scheduler/. `shard_size` bounds the
    encoders' files (None: the library's default). Returns the seconds spent writing each part."""
    import time

    from diffusers import UniPCMultistepScheduler

    from panowan.models.loading import wan_image_processor

    folder = Path(folder)
    folder.mkdir(parents=True)
    index = {
        "_class_name": "WanImageToVideoPipeline",
        "_diffusers_version": "0.33.0.dev0",
        "image_encoder": ["transformers", type(parts.image_encoder).__name__],
        "image_processor": ["transformers", "CLIPImageProcessor"],
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "text_encoder": ["transformers", type(parts.text_encoder).__name__],
        "tokenizer": ["transformers", type(parts.tokenizer).__name__],
        "transformer": ["diffusers", type(parts.transformer).__name__],
        "vae": ["diffusers", type(parts.vae).__name__],
    }
    (folder / "model_index.json").write_text(json.dumps(index))
    shard = {} if shard_size is None else {"max_shard_size": shard_size}
    writers = {
        "transformer": lambda p: parts.transformer.save_pretrained(p, max_shard_size=transformer_shard_size),
        "vae": lambda p: parts.vae.save_pretrained(p),
        "text_encoder": lambda p: parts.text_encoder.save_pretrained(p, **shard),
        "image_encoder": lambda p: parts.image_encoder.save_pretrained(p, **shard),
        "tokenizer": lambda p: parts.tokenizer.save_pretrained(p),
        "image_processor": lambda p: wan_image_processor(image_size).save_pretrained(p),
        "scheduler": lambda p: UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0
        ).save_config(p),
    }
    seconds = {}
    for name, write in writers.items():
        start = time.perf_counter()
        write(folder / name)
        seconds[name] = time.perf_counter() - start
    return seconds
