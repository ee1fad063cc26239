"""Tiny replicas of the two published Wan2.1-I2V folder layouts, with random weights.

The models are built in memory (diffusers / transformers classes, 2 layers, widths 16-32, by
`panowan.models.replicas.build_i2v_parts`, which the GPU benchmarks use at the real sizes), then written

- in the diffusers layout with `save_pretrained` (as `Wan2.1-I2V-14B-720P-Diffusers`), and
- in the original layout with Wan's own key names (as `Wan2.1-I2V-14B-720P`): the transformer and VAE keys
  are produced by inverting diffusers' key mapping (and checked by running diffusers' converter on them),
  the UMT5 / CLIP keys by writing Wan's T5Encoder / XLMRobertaCLIP names (wan/modules/t5.py, clip.py).

A tiny Unigram (T5-style) tokenizer is trained with the `tokenizers` library on a few sentences
(`panowan.models.replicas.build_tokenizer`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from panowan.models.replicas import WanI2VParts, build_i2v_parts, tiny_i2v_sizes, write_diffusers_layout

# Wan's own config.json keys for the same model (as published for Wan2.1-I2V-14B-720P).
ORIGINAL_CONFIG = {
    "_class_name": "WanModel",
    "_diffusers_version": "0.30.0",
    "dim": 32,
    "eps": 1e-06,
    "ffn_dim": 64,
    "freq_dim": 32,
    "in_dim": 36,
    "model_type": "i2v",
    "num_heads": 2,
    "num_layers": 2,
    "out_dim": 16,
    "text_len": 512,
}


Replica = WanI2VParts  # the name the loading tests use


def _randomise(model: torch.nn.Module, seed: int, scale: float = 0.2) -> None:
    """Every parameter random (norm weights and zero-initialised layers included), so a wrong key mapping
    cannot hide behind identical initial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if p.dim() == 1 else 0.0) * 0.5)


def build_replica(seed: int = 0) -> Replica:
    """The tiny sizes (`panowan.models.replicas.tiny_i2v_sizes`, a plain CLIPVisionModel as Wan's original
    layout holds no projection) with every parameter randomised."""
    rep = build_i2v_parts(tiny_i2v_sizes("CLIPVisionModel"), seed=seed)
    for i, m in enumerate((rep.transformer, rep.vae, rep.text_encoder, rep.image_encoder)):
        _randomise(m, seed * 10 + i, scale=0.05 if m is rep.vae else 0.2)
    return rep


# --------------------------------------------------------------------------------------- diffusers layout


def write_diffusers(rep: Replica, folder: Path) -> Path:
    """The transformer sharded into many small files (with an index), the rest one file each."""
    write_diffusers_layout(rep, folder, image_size=28, transformer_shard_size="20KB")
    return folder


# -------------------------------------------------------------------------------------- original layout

_TRANSFORMER_INVERSE = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("condition_embedder.image_embedder.norm1", "img_emb.proj.0"),
    ("condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1"),
    ("condition_embedder.image_embedder.ff.net.2", "img_emb.proj.3"),
    ("condition_embedder.image_embedder.norm2", "img_emb.proj.4"),
    ("attn1", "self_attn"),
    ("attn2", "cross_attn"),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    (".add_k_proj.", ".k_img."),
    (".add_v_proj.", ".v_img."),
    (".norm_added_k.", ".norm_k_img."),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
    ("proj_out", "head.head"),
]


def transformer_key_to_original(key: str) -> str:
    """Inverse of diffusers' `convert_wan_transformer_to_diffusers` renames (for I2V keys)."""
    if key == "scale_shift_table":
        return "head.modulation"
    for new, old in _TRANSFORMER_INVERSE:
        key = key.replace(new, old)
    key = key.replace("scale_shift_table", "modulation")
    # diffusers swaps Wan's norm2 (FFN norm) and norm3 (cross-attention norm) inside the blocks
    return re.sub(r"^(blocks\.\d+)\.norm([23])\.", lambda m: f"{m.group(1)}.norm{5 - int(m.group(2))}.", key)


_RES = {
    "norm1.gamma": "residual.0.gamma",
    "conv1": "residual.2",
    "norm2.gamma": "residual.3.gamma",
    "conv2": "residual.6",
}


def _resnet_to_original(rest: str) -> str:
    for new, old in _RES.items():
        if rest.startswith(new):
            return old + rest[len(new) :]
    if rest.startswith("conv_shortcut"):
        return "shortcut" + rest[len("conv_shortcut") :]
    return rest


def vae_key_to_original(key: str) -> str:
    """Inverse of diffusers' `convert_wan_vae_to_diffusers`."""
    top = {"quant_conv": "conv1", "post_quant_conv": "conv2"}
    head, _, rest = key.partition(".")
    if head in top:
        return f"{top[head]}.{rest}"
    part, _, rest = rest.partition(".")  # head in (encoder, decoder)
    if part == "conv_in":
        return f"{head}.conv1.{rest}"
    if part == "norm_out":
        return f"{head}.head.0.{rest}"
    if part == "conv_out":
        return f"{head}.head.2.{rest}"
    if part == "mid_block":
        kind, idx, tail = rest.split(".", 2)
        if kind == "attentions":
            return f"{head}.middle.1.{tail}"
        return f"{head}.middle.{2 * int(idx)}.{_resnet_to_original(tail)}"
    if part == "down_blocks":
        idx, tail = rest.split(".", 1)
        return f"{head}.downsamples.{idx}.{_resnet_to_original(tail)}"
    if part == "up_blocks":
        b, kind, r, tail = rest.split(".", 3)
        if kind == "resnets":
            return f"{head}.upsamples.{4 * int(b) + int(r)}.{_resnet_to_original(tail)}"
        return f"{head}.upsamples.{4 * int(b) + 3}.{tail}"
    raise AssertionError(f"unmapped VAE key {key}")


def t5_to_original(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """UMT5EncoderModel keys -> Wan's T5Encoder keys."""
    names = {
        "layer.0.layer_norm.weight": "norm1.weight",
        "layer.0.SelfAttention.q.weight": "attn.q.weight",
        "layer.0.SelfAttention.k.weight": "attn.k.weight",
        "layer.0.SelfAttention.v.weight": "attn.v.weight",
        "layer.0.SelfAttention.o.weight": "attn.o.weight",
        "layer.0.SelfAttention.relative_attention_bias.weight": "pos_embedding.embedding.weight",
        "layer.1.layer_norm.weight": "norm2.weight",
        "layer.1.DenseReluDense.wi_0.weight": "ffn.gate.0.weight",
        "layer.1.DenseReluDense.wi_1.weight": "ffn.fc1.weight",
        "layer.1.DenseReluDense.wo.weight": "ffn.fc2.weight",
    }
    out = {
        "token_embedding.weight": sd["shared.weight"],
        "norm.weight": sd["encoder.final_layer_norm.weight"],
    }
    for key, t in sd.items():
        m = re.match(r"encoder\.block\.(\d+)\.(.*)$", key)
        if m:
            out[f"blocks.{m.group(1)}.{names[m.group(2)]}"] = t
    return out


def clip_to_original(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIPVisionModel keys -> Wan's XLMRobertaCLIP `visual.*` keys (plus a stand-in text tower and logit
    scale, present in the published file and ignored by the loader)."""
    p = "vision_model." if any(k.startswith("vision_model.") for k in sd) else ""
    dim = sd[p + "embeddings.class_embedding"].shape[0]
    out = {
        "visual.cls_embedding": sd[p + "embeddings.class_embedding"].reshape(1, 1, dim),
        "visual.patch_embedding.weight": sd[p + "embeddings.patch_embedding.weight"],
        "visual.pos_embedding": sd[p + "embeddings.position_embedding.weight"].unsqueeze(0),
        "visual.pre_norm.weight": sd[p + "pre_layrnorm.weight"],
        "visual.pre_norm.bias": sd[p + "pre_layrnorm.bias"],
        "visual.post_norm.weight": sd[p + "post_layernorm.weight"],
        "visual.post_norm.bias": sd[p + "post_layernorm.bias"],
        "visual.head": torch.zeros(dim, 24),
        "textual.token_embedding.weight": torch.zeros(8, 4),
        "log_scale": torch.tensor(4.6),
    }
    layers = 1 + max(int(k.split("layers.")[1].split(".")[0]) for k in sd if "layers." in k)
    for i in range(layers):
        src, dst = f"{p}encoder.layers.{i}.", f"visual.transformer.{i}."
        for kind in ("weight", "bias"):
            qkv = [sd[f"{src}self_attn.{n}_proj.{kind}"] for n in "qkv"]
            out[f"{dst}attn.to_qkv.{kind}"] = torch.cat(qkv, dim=0)
            out[f"{dst}attn.proj.{kind}"] = sd[f"{src}self_attn.out_proj.{kind}"]
            out[f"{dst}norm1.{kind}"] = sd[f"{src}layer_norm1.{kind}"]
            out[f"{dst}norm2.{kind}"] = sd[f"{src}layer_norm2.{kind}"]
            out[f"{dst}mlp.0.{kind}"] = sd[f"{src}mlp.fc1.{kind}"]
            out[f"{dst}mlp.2.{kind}"] = sd[f"{src}mlp.fc2.{kind}"]
    return out


def original_transformer_state(rep: Replica) -> dict[str, torch.Tensor]:
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    sd = {k: v.clone() for k, v in rep.transformer.state_dict().items()}
    orig = {transformer_key_to_original(k): v for k, v in sd.items()}
    back = convert_wan_transformer_to_diffusers(dict(orig))
    assert sorted(back) == sorted(sd), sorted(set(back) ^ set(sd))  # the inverse is exact
    return orig


def original_vae_state(rep: Replica) -> dict[str, torch.Tensor]:
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    sd = {k: v.clone() for k, v in rep.vae.state_dict().items()}
    orig = {vae_key_to_original(k): v for k, v in sd.items()}
    back = convert_wan_vae_to_diffusers(dict(orig))
    assert sorted(back) == sorted(sd), sorted(set(back) ^ set(sd))
    return orig


def write_original(rep: Replica, folder: Path, n_shards: int = 2) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(ORIGINAL_CONFIG))
    state = original_transformer_state(rep)
    keys = sorted(state)
    weight_map = {}
    for i in range(n_shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {k: state[k].contiguous() for k in keys[i::n_shards]}
        save_file(part, str(folder / name))
        weight_map.update(dict.fromkeys(part, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    torch.save(original_vae_state(rep), folder / "Wan2.1_VAE.pth")
    torch.save(t5_to_original(rep.text_encoder.state_dict()), folder / "models_t5_umt5-xxl-enc-bf16.pth")
    clip = clip_to_original(rep.image_encoder.state_dict())
    torch.save(clip, folder / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth")
    rep.tokenizer.save_pretrained(folder / "google" / "umt5-xxl")
    (folder / "xlm-roberta-large").mkdir()
    return folder
