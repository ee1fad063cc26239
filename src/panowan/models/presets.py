"""Model configurations of the dual-stream Wan: `DualStreamConfig` and named presets.

The `wan` field holds the keyword arguments of diffusers' `WanTransformer3DModel`; the I2V input
layout is `in_channels = 2 * z + 4` (noisy latents z, mask 4, condition latents z), `out_channels = z`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from typing import Any

CODECS = ("wan_vae", "analytic")
CONDITION_FILLS = ("zero", "telea", "ns", "harmonic", "depth_steered", "room_shell", "shell_gate")
"""What a stream's condition may hold in its holes: zeros (Wan I2V), OpenCV's Telea or Navier-Stokes fill, the
harmonic (membrane) fill (`panowan.data.inpaint`), the depth-steered membrane (`panowan.data.depth_fill`; the
RGB stream's is steered by the view's reprojected depth), the room-shell fill (`panowan.data.room_shell`), or the
embedded learned shell gate (`panowan.data.shell_gate`)."""
NOT_ARCHITECTURE = ("init_seed", "rgb_condition_fill", "depth_condition_fill")
"""`DualStreamConfig` fields that do not change the weights' shapes: a run may start from a model that differs in them."""
ANALYTIC_POOLS = (1, 2, 4, 8)
INTERACTIONS = ("pose+cross", "pose", "cross", "none")
"""Which exchanges a model has (`DualStreamConfig.interactions`): both, pose only, cross-stream only, none."""
CHECKPOINT_POLICIES = ("full", "selective")
"""What backward recomputes in a checkpointed region (`models.regions`): all of it, or all but attention."""


def fill_fields(fills: dict[str, str]) -> dict[str, str]:
    """Per-stream fills as `DualStreamConfig` fields: {"rgb": "telea"} -> {"rgb_condition_fill": "telea"}."""
    return {f"{stream}_condition_fill": fill for stream, fill in fills.items()}


def filled_streams(fills: dict[str, str]) -> frozenset[str]:
    """The streams of `fills` whose condition holds a fill (and which are decoded as a correction of it)."""
    return frozenset(stream for stream, fill in fills.items() if fill != "zero")


def analytic_z_dim(pool: int) -> int:
    """Latent channels of `AnalyticCodec(pool)`: 3 colours x 4 packed frames x (8 / pool)^2 sub-pixels."""
    return 3 * 4 * (8 // pool) ** 2


@dataclass
class DualStreamConfig:
    """Everything needed to build a `DualStreamWan` besides the weights."""

    wan: dict[str, Any]
    """Keyword arguments of `diffusers.WanTransformer3DModel` (one stream; both streams share them)."""
    interaction_interval: int = 4
    """An interaction layer runs after every `interaction_interval`-th Wan block."""
    interaction_inner_dim: int = 1024
    """Attention width (heads x head_dim) of the interaction layers; bounds their memory and compute."""
    interaction_heads: int = 8
    """Attention heads of the interaction layers (`interaction_inner_dim` must be divisible by it)."""
    pose_dim: int = 256
    """Width of the PluckerNet features (one vector per token)."""
    plucker_hidden: int = 128
    """Channel width of PluckerNet's convolutions."""
    codec: str = "wan_vae"
    """Latent codec: "wan_vae" (the pretrained AutoencoderKLWan, z = 16) or "analytic" (no weights)."""
    analytic_pool: int = 4
    """Area-pooling factor of the analytic codec (1, 2, 4 or 8); fixes z = 3 * 4 * (8 / pool)^2."""
    rgb_condition_fill: str = "zero"
    """What the RGB condition holds in its holes before encoding: "zero" (Wan I2V's convention), "telea" or
    "ns" (OpenCV's Telea or Navier-Stokes inpainting of the reprojected view; analytic codec only). With a
    fill the sampler also decodes RGB as a residual, `cond + decode(z) - decode(encode(cond))`: what the
    model leaves unchanged keeps the fill's full resolution instead of the codec's 8x8 blocks, and the
    model's prediction enters as a correction of the fill. Not part of the architecture: a run may change it
    (`panowan train --rgb_condition_fill`)."""
    depth_condition_fill: str = "zero"
    """The same for the depth stream: what the normalised depth condition holds in its holes, and whether
    depth is decoded as a correction of that fill (`panowan train --depth_condition_fill`)."""
    interactions: str = "pose+cross"
    """Which exchanges the model has: "pose+cross" (the method: pose cross-attention and cross-stream attention
    on the schedule above), "pose" (no cross-stream exchange: each stream sees only its own tokens and the poses;
    with a pixel decoder, it does not read the other stream either), "cross" (no pose exchange: no PluckerNet
    features enter) or "none" (two independent streams). The ablations of BENCHMARKS.md; each drops the layers
    it does not use."""
    pixel_decoder_width: int = 0
    """Width of the learnt full-resolution decoding stage of each stream (`models.pixel_decoder.PixelDecoder`, a
    small ERP U-Net that reads the codec's decoding, the stream's condition and the mask, and corrects the holes;
    trained with the transformer); 0 for none (the codec's decoding is the output)."""
    pixel_decoder_levels: int = 4
    """Resolution levels of the pixel decoders' U-Net below the full one (H and W must be multiples of
    2**levels); more levels see farther across a large hole."""
    pixel_decoder_rays: bool = False
    """Whether the pixel decoders also read each pixel's unit ray direction in the camera frame (3 channels,
    the same map for every view). It tells a convolution where on the sphere it is (floor below, ceiling above,
    the stretch of the poles) and makes a plane's depth easy to continue: a plane's inverse range is linear
    in the ray direction."""
    init_seed: int = 0
    """Seed of the new modules' initialisation (each stream's own stream of random numbers, so every
    process placement builds identical interaction layers and PluckerNet)."""

    def __post_init__(self) -> None:
        self.wan = dict(self.wan)
        if "patch_size" in self.wan:
            self.wan["patch_size"] = tuple(self.wan["patch_size"])
        need = ("num_layers", "num_attention_heads", "attention_head_dim", "in_channels", "out_channels")
        missing = [k for k in need if k not in self.wan]
        if missing:
            raise ValueError(f"DualStreamConfig.wan lacks {missing}")
        if tuple(self.wan.get("patch_size", (1, 2, 2))) != (1, 2, 2):
            raise ValueError(f"only Wan's patch size (1, 2, 2) is supported, got {self.wan['patch_size']}")
        z = self.z_dim
        if self.wan["in_channels"] != 2 * z + 4:
            raise ValueError(
                f"I2V layout needs in_channels = 2 * out_channels + 4 = {2 * z + 4}, got {self.wan['in_channels']}"
            )
        layers = self.wan["num_layers"]
        if not 1 <= self.interaction_interval <= layers:
            raise ValueError(
                f"interaction_interval must be in [1, {layers}], got {self.interaction_interval}"
            )
        if self.interaction_heads < 1 or self.interaction_inner_dim % self.interaction_heads:
            raise ValueError(
                f"interaction_inner_dim {self.interaction_inner_dim} is not divisible by "
                f"interaction_heads {self.interaction_heads}"
            )
        if min(self.pose_dim, self.plucker_hidden, self.interaction_inner_dim) < 1:
            raise ValueError("pose_dim, plucker_hidden and interaction_inner_dim must be positive")
        if self.interactions not in INTERACTIONS:
            raise ValueError(f"interactions must be one of {INTERACTIONS}, got {self.interactions!r}")
        if self.pixel_decoder_width < 0:
            raise ValueError(
                f"pixel_decoder_width must be >= 0 (0: the codec decodes alone), got {self.pixel_decoder_width}"
            )
        if not 1 <= self.pixel_decoder_levels <= 8:
            raise ValueError(f"pixel_decoder_levels must be in [1, 8], got {self.pixel_decoder_levels}")
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {CODECS}, got {self.codec!r}")
        if self.analytic_pool not in ANALYTIC_POOLS:
            raise ValueError(f"analytic_pool must be one of {ANALYTIC_POOLS}, got {self.analytic_pool}")
        if self.codec == "analytic" and z != analytic_z_dim(self.analytic_pool):
            raise ValueError(
                f"the analytic codec with pool {self.analytic_pool} has z = {analytic_z_dim(self.analytic_pool)}, "
                f"but wan out_channels = {z}"
            )
        if self.codec == "wan_vae" and z != 16:
            raise ValueError(f"the Wan 2.1 VAE has z = 16, but wan out_channels = {z}")
        for stream, fill in self.condition_fills().items():
            if fill not in CONDITION_FILLS:
                raise ValueError(f"{stream}_condition_fill must be one of {CONDITION_FILLS}, got {fill!r}")
            if fill != "zero" and self.codec != "analytic":
                # The residual decoding assumes a linear codec; the pretrained VAE expects Wan's zeroed holes.
                raise ValueError(
                    f"{stream}_condition_fill {fill!r} needs the analytic codec, not {self.codec!r}"
                )

    def condition_fills(self) -> dict[str, str]:
        """Each stream's condition fill: {"rgb": ..., "depth": ...}."""
        return {"rgb": self.rgb_condition_fill, "depth": self.depth_condition_fill}

    @property
    def filled_streams(self) -> frozenset[str]:
        """The streams whose condition holds a fill (and which are decoded as a correction of it)."""
        return filled_streams(self.condition_fills())

    @property
    def pose_exchange(self) -> bool:
        """Whether pose cross-attention layers run (`interactions` "pose+cross" or "pose")."""
        return self.interactions in ("pose+cross", "pose")

    @property
    def cross_stream(self) -> bool:
        """Whether the streams exchange features (`interactions` "pose+cross" or "cross")."""
        return self.interactions in ("pose+cross", "cross")

    @property
    def z_dim(self) -> int:
        """Latent channels per stream (the Wan transformer's `out_channels`)."""
        return int(self.wan["out_channels"])

    @property
    def num_layers(self) -> int:
        return int(self.wan["num_layers"])

    @property
    def dim(self) -> int:
        """Model width D of the Wan transformer."""
        return int(self.wan["num_attention_heads"] * self.wan["attention_head_dim"])

    @property
    def num_interactions(self) -> int:
        """Interaction points: after block i with (i + 1) % interval == 0."""
        return self.num_layers // self.interaction_interval

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (tuples become lists)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return json.loads(json.dumps(out))

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> DualStreamConfig:
        """The config of a `to_dict` dictionary. An older export's `depth_refiner_width` (its separately fitted
        depth refiner, superseded by the pixel decoders) is dropped when 0 and refused otherwise."""
        obj = dict(obj)
        refiner = obj.pop("depth_refiner_width", 0)
        if refiner:
            raise ValueError(
                f"this export carries a depth refiner (depth_refiner_width = {refiner}), which this version of "
                "panowan no longer supports: the pixel decoders (pixel_decoder_width) are the model's "
                "full-resolution stage; retrain it with pixel decoders, or re-export it without its refiner with an "
                "earlier panowan"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(obj) - names)
        if unknown:
            raise ValueError(f"unknown DualStreamConfig keys {unknown}")
        return cls(**obj)

    def differences(self, other: DualStreamConfig, ignore: tuple[str, ...] = ()) -> list[str]:
        """Sorted names of the fields whose JSON values differ (those in `ignore` aside)."""
        ours, theirs = self.to_dict(), other.to_dict()
        return sorted(k for k in ours if k not in ignore and ours[k] != theirs[k])


_I2V_COMMON: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "attention_head_dim": 128,
    "in_channels": 36,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": 1280,
    "rope_max_seq_len": 1024,
    "pos_embed_seq_len": None,
}

# Models without pretrained weights: the analytic codec (z = 48), small text / image embeddings, 8 blocks.
_ANALYTIC_COMMON: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "in_channels": 2 * 48 + 4,
    "out_channels": 48,
    "text_dim": 32,
    "freq_dim": 32,
    "num_layers": 8,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": 32,
    "rope_max_seq_len": 1024,
    "pos_embed_seq_len": None,
}


def _small_analytic(head_dim: int, pool: int) -> DualStreamConfig:
    """The small trainable presets: 8 Wan blocks of 4 heads x `head_dim` (FFN twice the width), the analytic codec
    at `pool`, and small interaction layers and PluckerNet."""
    z, width = analytic_z_dim(pool), 4 * head_dim
    return DualStreamConfig(
        wan={
            **_ANALYTIC_COMMON,
            "num_attention_heads": 4,
            "attention_head_dim": head_dim,
            "ffn_dim": 2 * width,
            "added_kv_proj_dim": width,
            "in_channels": 2 * z + 4,
            "out_channels": z,
        },
        interaction_interval=2,
        interaction_inner_dim=64,
        interaction_heads=2,
        pose_dim=48,
        plucker_hidden=24,
        codec="analytic",
        analytic_pool=pool,
    )


_PRESETS: dict[str, DualStreamConfig] = {
    # The transformer/config.json of Wan-AI/Wan2.1-I2V-14B-480P-Diffusers (and 720P).
    "wan2.1-i2v-14b": DualStreamConfig(
        wan={
            **_I2V_COMMON,
            "num_layers": 40,
            "num_attention_heads": 40,
            "ffn_dim": 13824,
            "added_kv_proj_dim": 5120,
        },
        interaction_interval=4,
        interaction_inner_dim=1024,
        interaction_heads=8,
        pose_dim=256,
        plucker_hidden=128,
        codec="wan_vae",
    ),
    # Wan 2.1 1.3B widths with the I2V extras (image cross-attention, 36 input channels).
    "wan2.1-1.3b-i2v": DualStreamConfig(
        wan={
            **_I2V_COMMON,
            "num_layers": 30,
            "num_attention_heads": 12,
            "ffn_dim": 8960,
            "added_kv_proj_dim": 1536,
        },
        interaction_interval=4,
        interaction_inner_dim=512,
        interaction_heads=4,
        pose_dim=128,
        plucker_hidden=64,
        codec="wan_vae",
    ),
    # The embedded default model (panowan/assets): 8 blocks of width 96, analytic codec at pool 8 (z = 12), every
    # weight of a seeded random base trained (see README). A token carries 2 x 2 x z = 48 output values, well
    # under the width: at pool 4 (192 values a token) the output projection could not even represent the noise
    # it has to remove, and samples stayed noise.
    "small": _small_analytic(head_dim=24, pool=8),
    # The pool-4 variant of "small" (trained in full on GPUs it matched "small" at 4x the size; see
    # BENCHMARKS.md): 8 blocks of width 192 at pool 4 (z = 48), 9.6M parameters, 19.2 MB exported (float16). A perfect
    # pool-8 prediction scores below OpenCV inpainting in the holes at 64x128 (scripts/codec_bound.py); pool 4
    # raises that bound by ~1.4 dB. A token then emits 2 x 2 x z = 192 values, so the width must be at least 192:
    # a narrower output projection cannot even represent the noise it has to remove.
    "small-p4": _small_analytic(head_dim=48, pool=4),
    # "small" at twice the width (192, the most under the 20 MB limit): a probe of whether the width-96 residual
    # stream, which must carry each token's 48 noisy and 48 condition values through every block, is what keeps
    # "small" from learning the holes (BENCHMARKS.md, "256x512"). 9.5M parameters, 18.9 MB exported.
    "small-w192": _small_analytic(head_dim=48, pool=8),
    # CPU-sized: 8 blocks of width 32, analytic codec (z = 48); < 1 s at 5 views x 32x64.
    "tiny": DualStreamConfig(
        wan={
            **_ANALYTIC_COMMON,
            "num_attention_heads": 2,
            "attention_head_dim": 16,
            "ffn_dim": 64,
            "added_kv_proj_dim": 32,
        },
        interaction_interval=2,
        interaction_inner_dim=32,
        interaction_heads=2,
        pose_dim=32,
        plucker_hidden=16,
        codec="analytic",
        analytic_pool=4,
    ),
}

PRESET_NAMES = tuple(_PRESETS)


def get_preset(name: str) -> DualStreamConfig:
    """A fresh copy of the named configuration (one of `PRESET_NAMES`)."""
    if name not in _PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {PRESET_NAMES}")
    return copy.deepcopy(_PRESETS[name])
