"""Base model folders: the two published layouts of Wan2.1-I2V, detected, checked and loaded offline.

Layouts (file names exactly as published):

- "diffusers" (`Wan-AI/Wan2.1-I2V-14B-720P-Diffusers`): `model_index.json`, `transformer/`, `vae/`,
  `text_encoder/` (UMT5), `tokenizer/`, `image_encoder/` (CLIP vision), `image_processor/`, `scheduler/`;
  every model folder holds `config.json` and `*.safetensors` (one file, or shards listed by an index).
- "original" (`Wan-AI/Wan2.1-I2V-14B-720P`): `config.json` (Wan's own keys: dim, in_dim, model_type ...),
  `diffusion_pytorch_model.safetensors` or shards `diffusion_pytorch_model-0000X-of-0000N.safetensors` with
  `diffusion_pytorch_model.safetensors.index.json`, `Wan2.1_VAE.pth`, `models_t5_umt5-xxl-enc-bf16.pth`,
  `models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`, `google/umt5-xxl/` (tokenizer).
  (`xlm-roberta-large/`, the tokenizer of CLIP's text tower, is not needed: only the vision tower is used.)

The diffusers layout goes through `from_pretrained(local_files_only=True)`. The original layout goes
through diffusers' single-file conversion (`from_single_file` on the merged shards with a local config:
nothing is fetched from the hub) for the transformer and the VAE, and through the key conversions below
into transformers' `UMT5EncoderModel` / `CLIPVisionModel` for the encoders. `panowan convert` writes an
original folder once as a diffusers folder.

Every file a requested component needs is checked (and named in a `ValueError`) before any weight is read.
Precision: transformer weights in `dtype` with `WanTransformer3DModel._keep_in_fp32_modules` kept in float32
on both paths (diffusers' rule: a parameter whose dotted name contains one of those module names).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from panowan.models.presets import DualStreamConfig

log = logging.getLogger(__name__)

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

# Wan's CLIP preprocessing (wan/modules/clip.py): bicubic resize of the whole frame to 224 x 224, no crop.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")


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


# ---------------------------------------------------------------------------------------- precision


def cast_keep_fp32(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast floating parameters and buffers to `dtype`, except those of `model._keep_in_fp32_modules`, kept in
    float32 (diffusers' `load_model_dict_into_meta` rule: a module name equal to one part of the dotted
    name). `from_pretrained` does this; `from_single_file` casts everything, so its result goes through here."""
    keep = list(getattr(type(model), "_keep_in_fp32_modules", None) or [])
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if not torch.is_floating_point(tensor):
            continue
        target = torch.float32 if any(k in name.split(".") for k in keep) else dtype
        if tensor.dtype != target:
            tensor.data = tensor.data.to(target)
    return model


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


# ------------------------------------------------------------------------------------- original layout


def _load_torch_state(path: Path) -> dict[str, torch.Tensor]:
    """A `.pth` state dict, memory-mapped (weights only; never unpickles code)."""
    sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: not a state dict ({type(sd).__name__})")
    return sd


def _from_single_file_local(cls: Any, state: dict[str, torch.Tensor], config: dict[str, Any]) -> Any:
    """diffusers' single-file conversion of `state` with `config` written to a local folder (no hub)."""
    with tempfile.TemporaryDirectory(prefix="panowan-config-") as tmp:
        with open(Path(tmp) / "config.json", "w", encoding="utf-8") as f:
            json.dump(config, f)
        return cls.from_single_file(state, config=tmp, local_files_only=True)


def _load_original_transformer(folder: Path, dtype: torch.dtype, device: str | torch.device) -> Any:
    from diffusers import WanTransformer3DModel
    from safetensors.torch import load_file

    config = diffusers_transformer_config(folder, "original")
    state: dict[str, torch.Tensor] = {}
    for shard in _check_original_shards(folder):
        state.update(load_file(str(shard)))  # memory-mapped; one merged dict for the converter
    model = _from_single_file_local(WanTransformer3DModel, state, config)
    return cast_keep_fp32(model, dtype).to(device)


def original_vae_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """AutoencoderKLWan config of a `Wan2.1_VAE.pth` state dict: base_dim and z_dim from the conv shapes,
    the rest as in Wan 2.1 (every Wan 2.1 model shares that VAE)."""
    return {
        "_class_name": "AutoencoderKLWan",
        "base_dim": int(state["encoder.conv1.weight"].shape[0]),
        "z_dim": int(state["decoder.conv1.weight"].shape[1]),
    }


def _load_original_vae(folder: Path, dtype: torch.dtype, device: str | torch.device) -> Any:
    from diffusers import AutoencoderKLWan

    path = folder / ORIG_VAE
    state = _load_torch_state(path)
    if "encoder.conv1.weight" not in state or "decoder.conv1.weight" not in state:
        raise ValueError(f"{path}: not a Wan VAE state dict (no encoder.conv1 / decoder.conv1)")
    model = _from_single_file_local(AutoencoderKLWan, state, original_vae_config(state))
    return cast_keep_fp32(model, dtype).to(device)


def convert_wan_t5_to_umt5(state: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Wan's T5Encoder state dict (wan/modules/t5.py: token_embedding, blocks.N.{norm1, attn.q/k/v/o,
    norm2, ffn.gate.0/fc1/fc2, pos_embedding.embedding}, norm) -> (UMT5Config kwargs, UMT5EncoderModel
    state dict). Wan's FFN is fc2(fc1(x) * gelu_tanh(gate(x))) = HF's wo(act(wi_0 x) * wi_1 x)."""
    vocab, d_model = state["token_embedding.weight"].shape
    layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    buckets, heads = state["blocks.0.pos_embedding.embedding.weight"].shape
    inner = state["blocks.0.attn.q.weight"].shape[0]
    config = {
        "vocab_size": int(vocab),
        "d_model": int(d_model),
        "d_kv": int(inner // heads),
        "d_ff": int(state["blocks.0.ffn.fc1.weight"].shape[0]),
        "num_layers": layers,
        "num_heads": int(heads),
        "relative_attention_num_buckets": int(buckets),
        "relative_attention_max_distance": 128,
        "feed_forward_proj": "gated-gelu",
        "layer_norm_epsilon": 1e-6,
        "tie_word_embeddings": False,
        "pad_token_id": 0,
        "eos_token_id": 1,
    }
    emb = state["token_embedding.weight"]
    out = {
        "shared.weight": emb,
        "encoder.embed_tokens.weight": emb,
        "encoder.final_layer_norm.weight": state["norm.weight"],
    }
    names = {
        "norm1.weight": "layer.0.layer_norm.weight",
        "attn.q.weight": "layer.0.SelfAttention.q.weight",
        "attn.k.weight": "layer.0.SelfAttention.k.weight",
        "attn.v.weight": "layer.0.SelfAttention.v.weight",
        "attn.o.weight": "layer.0.SelfAttention.o.weight",
        "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
        "norm2.weight": "layer.1.layer_norm.weight",
        "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
        "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
        "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
    }
    for i in range(layers):
        for src, dst in names.items():
            out[f"encoder.block.{i}.{dst}"] = state[f"blocks.{i}.{src}"]
    return config, out


def convert_wan_clip_to_hf(
    state: dict[str, torch.Tensor], prefix: str = ""
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The vision tower of Wan's XLMRobertaCLIP (wan/modules/clip.py: visual.patch_embedding, cls_embedding,
    pos_embedding, pre_norm, transformer.N.{norm1, attn.to_qkv, attn.proj, norm2, mlp.0, mlp.2}, post_norm)
    -> (CLIPVisionConfig kwargs, CLIPVisionModel state dict). The fused to_qkv splits into q, k, v in that
    order (Wan views it as [..., 3, heads, head_dim]). `prefix` is "vision_model." where the installed
    transformers names the weights so (versions < 5)."""
    v = {k[len("visual.") :]: t for k, t in state.items() if k.startswith("visual.")}
    if not v:
        raise ValueError("no 'visual.*' keys: not Wan's CLIP checkpoint")
    dim, _, patch, _ = v["patch_embedding.weight"].shape
    layers = 1 + max(int(k.split(".")[1]) for k in v if k.startswith("transformer."))
    positions = v["pos_embedding"].shape[1]
    grid = round((positions - 1) ** 0.5)
    config = {
        "hidden_size": int(dim),
        "intermediate_size": int(v["transformer.0.mlp.0.weight"].shape[0]),
        "num_hidden_layers": layers,
        # Heads are not visible in the shapes; Wan ships only ViT-H/14 (1280 = 16 heads x 80).
        "num_attention_heads": max(1, int(dim) // 80),
        "image_size": int(grid * patch),
        "patch_size": int(patch),
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": int(v["head"].shape[1]) if "head" in v and v["head"].dim() == 2 else 1024,
    }
    p = prefix
    out = {
        p + "embeddings.class_embedding": v["cls_embedding"].reshape(-1),
        p + "embeddings.patch_embedding.weight": v["patch_embedding.weight"],
        p + "embeddings.position_embedding.weight": v["pos_embedding"].reshape(positions, -1),
        p + "pre_layrnorm.weight": v["pre_norm.weight"],
        p + "pre_layrnorm.bias": v["pre_norm.bias"],
        p + "post_layernorm.weight": v["post_norm.weight"],
        p + "post_layernorm.bias": v["post_norm.bias"],
    }
    for i in range(layers):
        src, dst = f"transformer.{i}.", f"{p}encoder.layers.{i}."
        for kind in ("weight", "bias"):
            q, k, vv = v[f"{src}attn.to_qkv.{kind}"].chunk(3, dim=0)
            out[f"{dst}self_attn.q_proj.{kind}"] = q
            out[f"{dst}self_attn.k_proj.{kind}"] = k
            out[f"{dst}self_attn.v_proj.{kind}"] = vv
            out[f"{dst}self_attn.out_proj.{kind}"] = v[f"{src}attn.proj.{kind}"]
            out[f"{dst}layer_norm1.{kind}"] = v[f"{src}norm1.{kind}"]
            out[f"{dst}layer_norm2.{kind}"] = v[f"{src}norm2.{kind}"]
            out[f"{dst}mlp.fc1.{kind}"] = v[f"{src}mlp.0.{kind}"]
            out[f"{dst}mlp.fc2.{kind}"] = v[f"{src}mlp.2.{kind}"]
    return config, out


def _clip_image_size(folder: Path) -> int:
    """Input size of Wan's CLIP checkpoint (its ViT config), for the image processor."""
    try:
        config, _ = convert_wan_clip_to_hf(_load_torch_state(folder / ORIG_CLIP))
    except (KeyError, ValueError) as e:
        raise ValueError(f"{folder / ORIG_CLIP}: not Wan's CLIP checkpoint ({e})") from e
    return int(config["image_size"])


def _load_original_text_encoder(folder: Path, dtype: torch.dtype, device: str | torch.device) -> Any:
    from transformers import UMT5Config, UMT5EncoderModel

    path = folder / ORIG_T5
    state = _load_torch_state(path)
    if "token_embedding.weight" not in state:
        raise ValueError(f"{path}: not Wan's UMT5 encoder state dict (no token_embedding.weight)")
    config, converted = convert_wan_t5_to_umt5(state)
    model = UMT5EncoderModel.from_pretrained(
        None, config=UMT5Config(**config), state_dict=converted, dtype=dtype
    )
    return model.to(device).eval()


def _load_original_image_encoder(folder: Path, dtype: torch.dtype, device: str | torch.device) -> Any:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    path = folder / ORIG_CLIP
    state = _load_torch_state(path)
    try:
        config, converted = convert_wan_clip_to_hf(state)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path}: not Wan's CLIP checkpoint ({e})") from e
    with torch.device("meta"):
        probe = CLIPVisionModel(CLIPVisionConfig(**config))
    if any(k.startswith("vision_model.") for k in probe.state_dict()):
        _, converted = convert_wan_clip_to_hf(state, prefix="vision_model.")
    model = CLIPVisionModel.from_pretrained(
        None, config=CLIPVisionConfig(**config), state_dict=converted, dtype=dtype
    )
    return model.to(device).eval()


def wan_image_processor(image_size: int = 224) -> Any:
    """CLIP preprocessing of Wan's original code: the whole frame resized (bicubic) to a square, no crop
    (a centre crop would drop half of a 2:1 panorama), CLIP mean/std."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        resample=3,
        do_center_crop=False,
        crop_size={"height": image_size, "width": image_size},
        do_rescale=True,
        do_normalize=True,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        do_convert_rgb=True,
    )


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


def _load_original_component(folder: Path, name: str, dtype: torch.dtype, device: str | torch.device) -> Any:
    if name == "transformer":
        return _load_original_transformer(folder, dtype, device).eval()
    if name == "vae":
        return _load_original_vae(folder, dtype, device).eval()
    if name == "text_encoder":
        return _load_original_text_encoder(folder, dtype, device)
    if name == "image_encoder":
        return _load_original_image_encoder(folder, dtype, device)
    if name == "tokenizer":
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(folder / ORIG_TOKENIZER, local_files_only=True)
    return wan_image_processor(_clip_image_size(folder))
