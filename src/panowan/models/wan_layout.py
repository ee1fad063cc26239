"""Base model folders, the two published layouts of Wan2.1-I2V: file names, detection, checks, configs.

Layouts (file names exactly as published):

- "diffusers" (`Wan-AI/Wan2.1-I2V-14B-720P-Diffusers`): `model_index.json`, `transformer/`, `vae/`,
  `text_encoder/` (UMT5), `tokenizer/`, `image_encoder/` (CLIP vision), `image_processor/`, `scheduler/`;
  every model folder holds `config.json` and `*.safetensors` (one file, or shards listed by an index).
- "original" (`Wan-AI/Wan2.1-I2V-14B-720P`): `config.json` (Wan's own keys: dim, in_dim, model_type ...),
  `diffusion_pytorch_model.safetensors` or shards `diffusion_pytorch_model-0000X-of-0000N.safetensors` with
  `diffusion_pytorch_model.safetensors.index.json`, `Wan2.1_VAE.pth`, `models_t5_umt5-xxl-enc-bf16.pth`,
  `models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`, `google/umt5-xxl/` (tokenizer).
  (`xlm-roberta-large/`, the tokenizer of CLIP's text tower, is not needed: only the vision tower is used.)

This module holds the layouts' file names, `detect_layout` with the file checks it runs (every file a
requested component needs is checked, and named in a `ValueError`, before any weight is read), the I2V and
preset checks of the transformer config, and the mapping of Wan's own transformer config to diffusers' (read
from config files and safetensors headers only). Reading and converting the original layout's weights:
`panowan.models.weight_conversion`; the public entry points (`load_base_model`, `config_for_base`):
`panowan.models.loading`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from panowan.models.presets import DualStreamConfig

COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "image_encoder", "image_processor")
DEFAULT_COMPONENTS = COMPONENTS

# Original layout file names (Wan2.1-I2V-14B-720P).
ORIG_CONFIG = "config.json"
ORIG_WEIGHTS = "diffusion_pytorch_model.safetensors"
ORIG_INDEX = "diffusion_pytorch_model.safetensors.index.json"
ORIG_VAE = "Wan2.1_VAE.pth"
ORIG_T5 = "models_t5_umt5-xxl-enc-bf16.pth"
ORIG_CLIP = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
ORIG_TOKENIZER = "google/umt5-xxl"
ORIG_SHARD_RE = re.compile(r"diffusion_pytorch_model-(\d+)-of-(\d+)\.safetensors$")

_TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")


# ----------------------------------------------------------------------------------------------- checks


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise ValueError(f"{path}: missing ({what})")
    return path


def _read_json(path: Path) -> dict[str, Any]:
    _require(path, "JSON file")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def _weight_files(folder: Path, stem: str, what: str) -> list[Path]:
    """Files of one safetensors checkpoint `stem` in `folder`: `stem.safetensors`, or the shards named by
    `stem.safetensors.index.json` (each checked to exist)."""
    single = folder / f"{stem}.safetensors"
    index = folder / f"{stem}.safetensors.index.json"
    if index.exists():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index}: no weight_map")
        shards = [folder / name for name in sorted(set(weight_map.values()))]
        for shard in shards:
            _require(shard, f"a shard of {what} listed in {index.name}")
        return shards
    if single.exists():
        return [single]
    found = sorted(p.name for p in folder.glob("*.safetensors")) if folder.is_dir() else []
    raise ValueError(f"{single}: missing ({what}; neither it nor {index.name} exists; found {found})")


def _check_tokenizer(folder: Path) -> None:
    if not folder.is_dir() or not any((folder / n).exists() for n in _TOKENIZER_FILES):
        raise ValueError(f"{folder}: missing tokenizer (need one of {_TOKENIZER_FILES})")


def _check_original_shards(folder: Path) -> list[Path]:
    """The transformer files of an original folder; shards found on disk but absent from the index, or
    a gap in 0000X-of-0000N, are named."""
    index = folder / ORIG_INDEX
    if index.exists():
        shards = _weight_files(folder, "diffusion_pytorch_model", "the Wan transformer")
        totals = {int(m.group(2)) for p in shards if (m := ORIG_SHARD_RE.search(p.name))}
        for total in totals:
            for i in range(1, total + 1):
                name = f"diffusion_pytorch_model-{i:05d}-of-{total:05d}.safetensors"
                _require(folder / name, f"shard {i} of {total} of the Wan transformer")
        return shards
    on_disk = sorted(p for p in folder.glob("diffusion_pytorch_model-*-of-*.safetensors"))
    if on_disk:
        raise ValueError(
            f"{index}: missing (the index of the sharded transformer {[p.name for p in on_disk]})"
        )
    return _weight_files(folder, "diffusion_pytorch_model", "the Wan transformer")


def detect_layout(folder: str | os.PathLike, components: Iterable[str] = DEFAULT_COMPONENTS) -> str:
    """ "diffusers" or "original", decided from the files present; then every file that the requested
    `components` need is checked to exist (a missing one is named in a ValueError). Reads no weights."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: base model folder does not exist")
    components = tuple(components)
    unknown = sorted(set(components) - set(COMPONENTS))
    if unknown:
        raise ValueError(f"unknown components {unknown}; choose from {COMPONENTS}")
    if (folder / "model_index.json").exists():
        _check_diffusers(folder, components)
        return "diffusers"
    markers = [ORIG_VAE, ORIG_T5, ORIG_CLIP, ORIG_INDEX, ORIG_WEIGHTS]
    config = folder / ORIG_CONFIG
    is_wan_config = config.exists() and _read_json(config).get("_class_name") == "WanModel"
    if (
        is_wan_config
        or any((folder / m).exists() for m in markers)
        or any(folder.glob("diffusion_pytorch_model-*"))
    ):
        _check_original(folder, components)
        return "original"
    raise ValueError(
        f"{folder}: not a Wan2.1-I2V folder: neither model_index.json (diffusers layout) nor "
        f"{ORIG_CONFIG} + {ORIG_INDEX} + {ORIG_VAE} (original layout) found"
    )


def _check_diffusers(folder: Path, components: Sequence[str]) -> None:
    index = _read_json(folder / "model_index.json")
    for name in components:
        sub = folder / name
        if not sub.is_dir():
            raise ValueError(
                f"{sub}: missing (the {name} of the diffusers layout; model_index.json lists {sorted(index)})"
            )
        if name in ("transformer", "vae"):
            _require(sub / "config.json", f"{name} config")
            _weight_files(sub, "diffusion_pytorch_model", name)
        elif name in ("text_encoder", "image_encoder"):
            _require(sub / "config.json", f"{name} config")
            _weight_files(sub, "model", name)
        elif name == "tokenizer":
            _check_tokenizer(sub)
        elif name == "image_processor":
            _require(sub / "preprocessor_config.json", "CLIP image processor config")
    if "transformer" in components:
        check_i2v_config(
            diffusers_transformer_config(folder, "diffusers"), folder / "transformer" / "config.json"
        )


def _check_original(folder: Path, components: Sequence[str]) -> None:
    if "transformer" in components:
        _require(folder / ORIG_CONFIG, "the Wan transformer config")
        _check_original_shards(folder)
    if "vae" in components:
        _require(folder / ORIG_VAE, "the Wan VAE")
    if "text_encoder" in components:
        _require(folder / ORIG_T5, "the UMT5-XXL text encoder")
    if "tokenizer" in components:
        _check_tokenizer(folder / ORIG_TOKENIZER)
    if "image_encoder" in components or "image_processor" in components:
        _require(folder / ORIG_CLIP, "the CLIP image encoder")
    if "transformer" in components:  # after the existence checks: this one reads safetensors headers
        check_i2v_config(diffusers_transformer_config(folder, "original"), folder / ORIG_CONFIG)


def check_i2v_config(cfg: dict[str, Any], source: Path) -> None:
    """Raise ValueError unless the diffusers transformer config `cfg` (read from `source`) is image-to-video:
    in_channels = 2 * out_channels + 4 (noisy z, mask 4, condition z) and an image embedder (image_dim)."""
    cin, cout = cfg.get("in_channels"), cfg.get("out_channels")
    if cfg.get("image_dim") is None or cin == cout:
        raise ValueError(
            f"{source}: a text-to-video checkpoint (in_channels {cin}, image_dim {cfg.get('image_dim')}); "
            "panowan needs an image-to-video one (Wan2.1-I2V-14B-720P): in_channels = 2 * out_channels + 4 "
            "and a CLIP image embedder"
        )
    if cin != 2 * cout + 4:
        raise ValueError(
            f"{source}: in_channels {cin} is not 2 * out_channels + 4 = {2 * cout + 4} (I2V layout)"
        )


def check_against_preset(cfg: dict[str, Any], preset: DualStreamConfig, source: Path) -> None:
    """Raise ValueError naming `source` and every key where the transformer config differs from the preset's,
    and when the base's in_channels do not fit the preset's codec (in_channels = 2 z + 4)."""
    z = preset.z_dim
    if cfg.get("in_channels") != 2 * z + 4:
        raise ValueError(
            f"{source}: in_channels {cfg.get('in_channels')} does not fit the codec {preset.codec!r} "
            f"(z = {z} needs in_channels = {2 * z + 4})"
        )
    diff = []
    for key, want in preset.wan.items():
        if key not in cfg:
            continue
        have = cfg[key]
        norm = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
        if norm(have) != norm(want):
            diff.append(f"{key}: file {have!r} vs preset {want!r}")
    if diff:
        raise ValueError(f"{source}: the base model does not match the requested preset: " + "; ".join(diff))


# -------------------------------------------------------------------------------------- config mapping


def _safetensors_shapes(files: Sequence[Path], keys: Sequence[str]) -> dict[str, list[int]]:
    """Shapes of `keys` from safetensors headers only (no tensor data is read)."""
    from safetensors import safe_open

    out: dict[str, list[int]] = {}
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as f:
                names = set(f.keys())
                for key in keys:
                    if key in names:
                        out[key] = list(f.get_slice(key).get_shape())
        except Exception as e:  # safetensors raises its own error type for a bad header
            raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
    return out


def original_to_diffusers_config(orig: dict[str, Any], shapes: dict[str, list[int]]) -> dict[str, Any]:
    """Map Wan's own transformer config.json (dim, in_dim, num_heads, model_type, ...) to the keyword
    arguments of `WanTransformer3DModel`. text_dim / image_dim are not in Wan's config: they come from the
    shapes of `text_embedding.0.weight` ([D, text_dim]) and `img_emb.proj.0.weight` ([image_dim])."""
    dim, heads = int(orig["dim"]), int(orig["num_heads"])
    i2v = orig.get("model_type", "t2v") in ("i2v", "flf2v") or "img_emb.proj.0.weight" in shapes
    text_dim = orig.get("text_dim") or shapes.get("text_embedding.0.weight", [dim, 4096])[1]
    image_dim = shapes.get("img_emb.proj.0.weight", [1280])[0] if i2v else None
    return {
        "_class_name": "WanTransformer3DModel",
        "patch_size": list(orig.get("patch_size", [1, 2, 2])),
        "num_attention_heads": heads,
        "attention_head_dim": dim // heads,
        "in_channels": int(orig.get("in_dim", 16)),
        "out_channels": int(orig.get("out_dim", 16)),
        "text_dim": int(text_dim),
        "freq_dim": int(orig.get("freq_dim", 256)),
        "ffn_dim": int(orig["ffn_dim"]),
        "num_layers": int(orig["num_layers"]),
        "cross_attn_norm": bool(orig.get("cross_attn_norm", True)),
        "qk_norm": "rms_norm_across_heads" if orig.get("qk_norm", True) else None,
        "eps": float(orig.get("eps", 1e-6)),
        "image_dim": image_dim,
        "added_kv_proj_dim": dim if i2v else None,
        "rope_max_seq_len": 1024,
    }


def diffusers_transformer_config(folder: Path, layout: str) -> dict[str, Any]:
    """The transformer's diffusers config of a folder of either layout (headers only, no weights)."""
    if layout == "diffusers":
        return _read_json(folder / "transformer" / "config.json")
    orig = _read_json(folder / ORIG_CONFIG)
    missing = [k for k in ("dim", "num_heads", "num_layers", "ffn_dim") if k not in orig]
    if missing:
        raise ValueError(f"{folder / ORIG_CONFIG}: not a Wan transformer config (lacks {missing})")
    shapes = _safetensors_shapes(
        _check_original_shards(folder), ["text_embedding.0.weight", "img_emb.proj.0.weight"]
    )
    return original_to_diffusers_config(orig, shapes)
