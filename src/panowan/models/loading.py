"""Base model folders: the two published layouts of Wan2.1-I2V, detected, checked and loaded offline.

Layouts: "diffusers" (`Wan-AI/Wan2.1-I2V-14B-720P-Diffusers`) and "original" (`Wan-AI/Wan2.1-I2V-14B-720P`),
their file names listed in `panowan.models.wan_layout`.

The diffusers layout goes through `from_pretrained(local_files_only=True)`. The original layout goes
through diffusers' single-file conversion (`from_single_file` on the merged shards with a local config:
nothing is fetched from the hub) for the transformer and the VAE, and through the key conversions of
`panowan.models.weight_conversion` into transformers' `UMT5EncoderModel` / `CLIPVisionModel` for the
encoders. `panowan convert` writes an original folder once as a diffusers folder.

Every file a requested component needs is checked (and named in a `ValueError`) before any weight is read.
Precision: transformer weights in `dtype` with `WanTransformer3DModel._keep_in_fp32_modules` kept in float32
on both paths (diffusers' rule: a parameter whose dotted name contains one of those module names).

This module keeps the public entry points (`BaseModel`, `load_base_model`, `config_for_base`,
`enable_vae_memory_savers`) and the diffusers-layout loader. The layouts' file names, detection and checks
and the transformer config mapping are in `panowan.models.wan_layout`; reading and converting the original
layout's weights (and `cast_keep_fp32`, `wan_image_processor`) in `panowan.models.weight_conversion`. Every
name that lived here is still importable from here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from panowan.models.wan_layout import (
    _TOKENIZER_FILES,
    COMPONENTS,
    DEFAULT_COMPONENTS,
    ORIG_CLIP,
    ORIG_CONFIG,
    ORIG_INDEX,
    ORIG_SHARD_RE,
    ORIG_T5,
    ORIG_TOKENIZER,
    ORIG_VAE,
    ORIG_WEIGHTS,
    _check_diffusers,
    _check_original,
    _check_original_shards,
    _check_tokenizer,
    _read_json,
    _require,
    _safetensors_shapes,
    _weight_files,
    check_against_preset,
    check_i2v_config,
    detect_layout,
    diffusers_transformer_config,
    original_to_diffusers_config,
)
from panowan.models.weight_conversion import (
    CLIP_MEAN,
    CLIP_STD,
    _clip_image_size,
    _from_single_file_local,
    _load_original_component,
    _load_original_image_encoder,
    _load_original_text_encoder,
    _load_original_transformer,
    _load_original_vae,
    _load_torch_state,
    cast_keep_fp32,
    convert_wan_clip_to_hf,
    convert_wan_t5_to_umt5,
    original_vae_config,
    wan_image_processor,
)

if TYPE_CHECKING:
    from panowan.models.presets import DualStreamConfig

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "COMPONENTS",
    "DEFAULT_COMPONENTS",
    "ORIG_CLIP",
    "ORIG_CONFIG",
    "ORIG_INDEX",
    "ORIG_SHARD_RE",
    "ORIG_T5",
    "ORIG_TOKENIZER",
    "ORIG_VAE",
    "ORIG_WEIGHTS",
    "_TOKENIZER_FILES",
    "BaseModel",
    "_check_diffusers",
    "_check_original",
    "_check_original_shards",
    "_check_tokenizer",
    "_clip_image_size",
    "_from_single_file_local",
    "_load_diffusers_component",
    "_load_original_component",
    "_load_original_image_encoder",
    "_load_original_text_encoder",
    "_load_original_transformer",
    "_load_original_vae",
    "_load_torch_state",
    "_read_json",
    "_require",
    "_safetensors_shapes",
    "_weight_files",
    "cast_keep_fp32",
    "check_against_preset",
    "check_i2v_config",
    "config_for_base",
    "convert_wan_clip_to_hf",
    "convert_wan_t5_to_umt5",
    "detect_layout",
    "diffusers_transformer_config",
    "enable_vae_memory_savers",
    "load_base_model",
    "original_to_diffusers_config",
    "original_vae_config",
    "wan_image_processor",
]

log = logging.getLogger(__name__)


@dataclass
class BaseModel:
    """The pretrained parts of Wan2.1-I2V; a component not requested is None."""

    transformer: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    image_encoder: Any
    image_processor: Any
    layout: str
    folder: Path


# ------------------------------------------------------------------------------------ public entry points


def config_for_base(folder: str | os.PathLike) -> DualStreamConfig:
    """The `DualStreamConfig` of a base model folder (preset "from_base"): the architecture of its transformer
    (config only, no weights) with interaction settings sized to its width: an interaction layer every 4 blocks
    (every num_layers // 2 for shallower models), attention width min(1024, D) in heads of 128 (one head below
    that), pose features min(256, D) wide."""
    import inspect

    from diffusers import WanTransformer3DModel

    from panowan.models.presets import DualStreamConfig

    folder = Path(folder)
    cfg = diffusers_transformer_config(folder, detect_layout(folder, ("transformer",)))
    check_i2v_config(cfg, folder)
    names = inspect.signature(WanTransformer3DModel.__init__).parameters
    wan = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items() if k in names and k != "self"}
    dim = wan["num_attention_heads"] * wan["attention_head_dim"]
    inner = min(1024, dim)
    return DualStreamConfig(
        wan=wan,
        interaction_interval=4 if wan["num_layers"] >= 8 else max(1, wan["num_layers"] // 2),
        interaction_inner_dim=inner,
        interaction_heads=max(1, inner // 128),
        pose_dim=min(256, dim),
        plucker_hidden=min(128, dim),
        codec="wan_vae",
    )


def enable_vae_memory_savers(vae: Any, tile: int = 256, stride: int = 192) -> Any:
    """Tiled and sliced VAE encode/decode (diffusers' `enable_tiling` / `enable_slicing`), so 17 views at
    720 x 1440 fit next to a 14B stream: tiles of `tile` pixels overlapping by `tile - stride`, one batch
    element at a time. Returns `vae`."""
    vae.enable_tiling(
        tile_sample_min_height=tile,
        tile_sample_min_width=tile,
        tile_sample_stride_height=stride,
        tile_sample_stride_width=stride,
    )
    vae.enable_slicing()
    return vae


# ----------------------------------------------------------------------------------------- the loader


def load_base_model(
    folder: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.bfloat16,
    vae_dtype: torch.dtype = torch.float32,
    encoder_dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    components: Iterable[str] = DEFAULT_COMPONENTS,
    preset: DualStreamConfig | None = None,
) -> BaseModel:
    """Load the requested components of a Wan2.1-I2V folder of either layout, offline.

    dtype: the transformer (its `_keep_in_fp32_modules` stay float32); vae_dtype: the VAE (float32 as in
    diffusers' Wan examples); encoder_dtype: text and image encoders (default `dtype`). All files are checked
    first; `preset` (a `DualStreamConfig`) is compared with the transformer config before weights are read.
    The transformer is read once; `DualStreamWan.from_base` builds both streams from it.
    """
    folder = Path(folder)
    components = tuple(components)
    layout = detect_layout(folder, components)
    if "transformer" in components and preset is not None:
        source = folder / ("transformer/config.json" if layout == "diffusers" else ORIG_CONFIG)
        check_against_preset(diffusers_transformer_config(folder, layout), preset, source)
    if layout == "diffusers" and "transformer" in components and "vae" in components:
        z = _read_json(folder / "vae" / "config.json").get("z_dim", 16)
        cin = diffusers_transformer_config(folder, layout)["in_channels"]
        if cin != 2 * z + 4:
            raise ValueError(
                f"{folder / 'transformer/config.json'}: in_channels {cin} does not fit the VAE (z = {z})"
            )
    encoder_dtype = encoder_dtype or dtype
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    loaded: dict[str, Any] = dict.fromkeys(COMPONENTS)
    for name in components:
        loader = _load_diffusers_component if layout == "diffusers" else _load_original_component
        part_dtype = {"transformer": dtype, "vae": vae_dtype}.get(name, encoder_dtype)
        loaded[name] = loader(folder, name, part_dtype, device)
    base = BaseModel(**loaded, layout=layout, folder=folder)
    if base.transformer is not None and base.vae is not None:
        z, cin = base.vae.config.z_dim, base.transformer.config.in_channels
        if cin != 2 * z + 4:
            raise ValueError(f"{folder}: transformer in_channels {cin} does not fit the VAE (z = {z})")
    return base


def _load_diffusers_component(folder: Path, name: str, dtype: torch.dtype, device: str | torch.device) -> Any:
    sub = folder / name
    if name == "transformer":
        from diffusers import WanTransformer3DModel

        model = WanTransformer3DModel.from_pretrained(sub, torch_dtype=dtype, local_files_only=True)
    elif name == "vae":
        from diffusers import AutoencoderKLWan

        model = AutoencoderKLWan.from_pretrained(sub, torch_dtype=dtype, local_files_only=True)
    elif name == "text_encoder":
        from transformers import UMT5EncoderModel

        model = UMT5EncoderModel.from_pretrained(sub, dtype=dtype, local_files_only=True)
    elif name == "image_encoder":
        from transformers import CLIPVisionModel

        model = CLIPVisionModel.from_pretrained(sub, dtype=dtype, local_files_only=True)
    elif name == "tokenizer":
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(sub, local_files_only=True)
    else:
        from transformers import CLIPImageProcessor

        return CLIPImageProcessor.from_pretrained(sub, local_files_only=True)
    return model.to(device).eval()
