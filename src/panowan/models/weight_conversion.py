"""The original Wan2.1-I2V layout's weights, read and converted for diffusers and transformers, offline.

The transformer and the VAE go through diffusers' single-file conversion (`from_single_file` on the merged
shards with a local config: nothing is fetched from the hub); the encoders go through the key conversions
below into transformers' `UMT5EncoderModel` / `CLIPVisionModel`. Precision: `cast_keep_fp32` keeps
`WanTransformer3DModel._keep_in_fp32_modules` in float32 (diffusers' rule: a parameter whose dotted name
contains one of those module names), as `from_pretrained` does on the diffusers path. `wan_image_processor`
is Wan's CLIP preprocessing (used for both layouts' fixtures and for the original layout).

File names, detection and checks: `panowan.models.wan_layout`; the public entry points:
`panowan.models.loading`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from panowan.models.wan_layout import (
    ORIG_CLIP,
    ORIG_T5,
    ORIG_TOKENIZER,
    ORIG_VAE,
    _check_original_shards,
    diffusers_transformer_config,
)

# Wan's CLIP preprocessing (wan/modules/clip.py): bicubic resize of the whole frame to 224 x 224, no crop.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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
