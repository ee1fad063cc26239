"""Loading both Wan2.1-I2V layouts: same weights and outputs as the models built in memory, conversion of the
original layout equal to the diffusers layout, precision rules, and clear errors before any weight is read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from panowan.models.loading import COMPONENTS, detect_layout, load_base_model
from panowan.models.presets import get_preset


def _transformer_out(model, seed: int = 0) -> torch.Tensor:
    """One forward pass on fixed random inputs: 2 latent frames of 4 x 8, 7 text tokens, 5 image tokens."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 36, 2, 4, 8, generator=g)
    text = torch.randn(1, 7, 32, generator=g)
    image = torch.randn(1, 5, 32, generator=g)
    dtype = model.patch_embedding.weight.dtype
    with torch.no_grad():
        return model(x.to(dtype), torch.tensor([500]), text.to(dtype), image.to(dtype), return_dict=False)[
            0
        ].float()


def _vae_out(vae) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    video = torch.rand(1, 3, 5, 16, 32, generator=g) * 2 - 1
    with torch.no_grad():
        z = vae.encode(video).latent_dist.mean
        return z, vae.decode(z).sample


def _tokens(tok) -> torch.Tensor:
    return torch.tensor(
        tok(
            ["a grey sofa in a bright room", "kitchen"], padding="max_length", max_length=12, truncation=True
        ).input_ids
    )


def _text_out(enc, tok) -> torch.Tensor:
    ids = tok(
        ["a grey sofa in a bright room", "kitchen"],
        padding="max_length",
        max_length=12,
        truncation=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        return enc(ids.input_ids, ids.attention_mask).last_hidden_state


def _image_out(enc) -> torch.Tensor:
    pixels = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return enc(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]


# Weights are compared bit for bit; outputs to float32 rounding: memory-mapped safetensors are not 64-byte
# aligned, so CPU kernels may take another SIMD path and sum in another order (a few ulp).
TOL = dict(rtol=1e-5, atol=1e-5)


def _assert_same_outputs(a, b, tok_a, tok_b) -> None:
    for name in ("transformer", "vae", "text_encoder", "image_encoder"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sorted(sa) == sorted(sb), name
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    assert torch.equal(_tokens(tok_a), _tokens(tok_b))
    torch.testing.assert_close(_transformer_out(a.transformer), _transformer_out(b.transformer), **TOL)
    for x, y in zip(_vae_out(a.vae), _vae_out(b.vae)):
        torch.testing.assert_close(x, y, **TOL)
    torch.testing.assert_close(_text_out(a.text_encoder, tok_a), _text_out(b.text_encoder, tok_b), **TOL)
    torch.testing.assert_close(_image_out(a.image_encoder), _image_out(b.image_encoder), **TOL)


def test_detect_layout(layouts):
    assert detect_layout(layouts["diffusers"]) == "diffusers"
    assert detect_layout(layouts["original"]) == "original"


def test_diffusers_layout_equals_in_memory_models(replica, loaded):
    base = loaded["diffusers"]
    assert base.layout == "diffusers"
    _assert_same_outputs(base, replica, base.tokenizer, replica.tokenizer)
    # the outputs are not trivially equal: a different input gives a different output
    assert (_transformer_out(base.transformer, 0) - _transformer_out(base.transformer, 1)).abs().max() > 1e-2


def test_original_layout_equals_diffusers_layout(loaded):
    orig, diff = loaded["original"], loaded["diffusers"]
    assert orig.layout == "original"
    _assert_same_outputs(orig, diff, orig.tokenizer, diff.tokenizer)
    assert (
        orig.image_processor.to_dict()["size"]
        == diff.image_processor.to_dict()["size"]
        == {"height": 28, "width": 28}
    )


def test_bf16_keeps_fp32_modules_on_both_paths(layouts):
    parts = ("transformer",)
    a = load_base_model(layouts["original"], dtype=torch.bfloat16, components=parts).transformer
    b = load_base_model(layouts["diffusers"], dtype=torch.bfloat16, components=parts).transformer
    da = {n: p.dtype for n, p in a.state_dict().items()}
    db = {n: p.dtype for n, p in b.state_dict().items()}
    assert da == db
    fp32 = {n for n, d in da.items() if d == torch.float32}
    assert "scale_shift_table" in fp32 and "condition_embedder.time_embedder.linear_1.weight" in fp32
    assert "blocks.0.attn1.to_q.weight" not in fp32 and da["blocks.0.attn1.to_q.weight"] == torch.bfloat16
    torch.testing.assert_close(_transformer_out(a), _transformer_out(b), rtol=1e-2, atol=1e-2)


def test_convert_command_writes_the_diffusers_layout(layouts, loaded, tmp_path):
    from panowan.cli import main

    dst = tmp_path / "converted"
    assert main(["convert", "--src", str(layouts["original"]), "--dst", str(dst), "--dtype", "fp32"]) == 0
    assert detect_layout(dst) == "diffusers"
    assert [p.name for p in tmp_path.iterdir()] == ["converted"]  # no temporary folder left behind
    conv = load_base_model(dst, dtype=torch.float32)
    _assert_same_outputs(conv, loaded["original"], conv.tokenizer, loaded["original"].tokenizer)
    # a second run refuses to overwrite
    assert main(["convert", "--src", str(layouts["original"]), "--dst", str(dst)]) == 2


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _poison_weights(folder: Path) -> None:
    """Overwrite every weight file with garbage: an error that names a missing file proves that the check
    ran before any weight was read (reading these would fail differently)."""
    for p in [*folder.rglob("*.safetensors"), *folder.rglob("*.pth")]:
        p.write_bytes(b"not a checkpoint")


def test_missing_vae_is_named_before_weights_are_read(layouts, tmp_path):
    d = _copy(layouts["diffusers"], tmp_path / "d")
    shutil.rmtree(d / "vae")
    _poison_weights(d)
    with pytest.raises(ValueError, match=r"vae: missing"):
        load_base_model(d)
    o = _copy(layouts["original"], tmp_path / "o")
    (o / "Wan2.1_VAE.pth").unlink()
    _poison_weights(o)
    with pytest.raises(ValueError, match=r"Wan2\.1_VAE\.pth: missing"):
        detect_layout(o)


def test_missing_shard_is_named(layouts, tmp_path):
    o = _copy(layouts["original"], tmp_path / "o")
    (o / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ValueError, match=r"diffusion_pytorch_model-00002-of-00002\.safetensors: missing"):
        load_base_model(o, components=("transformer",))
    d = _copy(layouts["diffusers"], tmp_path / "d")
    shard = sorted((d / "transformer").glob("diffusion_pytorch_model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(ValueError, match=rf"{shard.name}: missing"):
        load_base_model(d, components=("transformer",))


def test_t2v_checkpoint_is_refused(layouts, tmp_path):
    o = _copy(layouts["original"], tmp_path / "o")
    cfg = json.loads((o / "config.json").read_text())
    (o / "config.json").write_text(json.dumps({**cfg, "model_type": "t2v", "in_dim": 16}))
    with pytest.raises(ValueError, match=r"config\.json: a text-to-video checkpoint \(in_channels 16"):
        load_base_model(o)
    d = _copy(layouts["diffusers"], tmp_path / "d")
    path = d / "transformer" / "config.json"
    cfg = json.loads(path.read_text())
    path.write_text(json.dumps({**cfg, "in_channels": 16, "image_dim": None, "added_kv_proj_dim": None}))
    _poison_weights(d)
    with pytest.raises(ValueError, match=r"transformer/config\.json: a text-to-video checkpoint"):
        load_base_model(d)


def test_wrong_in_channels_and_preset_mismatch(layouts, tmp_path):
    d = _copy(layouts["diffusers"], tmp_path / "d")
    path = d / "transformer" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "in_channels": 40}))
    with pytest.raises(
        ValueError, match=r"transformer/config\.json: in_channels 40 is not 2 \* out_channels \+ 4"
    ):
        load_base_model(d)
    # the tiny preset uses the analytic codec (z = 48): a Wan-VAE base (in_channels 36) does not fit it
    with pytest.raises(ValueError, match=r"in_channels 36 does not fit the codec 'analytic'"):
        load_base_model(layouts["original"], preset=get_preset("tiny"))
    # the 14B preset has 40 layers of width 5120: the tiny replica is not it
    with pytest.raises(
        ValueError, match=r"config\.json: the base model does not match.*num_layers: file 2 vs preset 40"
    ):
        load_base_model(layouts["diffusers"], preset=get_preset("wan2.1-i2v-14b"))


def test_components_subset_and_unknown(layouts):
    base = load_base_model(layouts["original"], components=("vae",), dtype=torch.float32)
    assert base.vae is not None and base.transformer is None and base.text_encoder is None
    with pytest.raises(ValueError, match="unknown components"):
        load_base_model(layouts["original"], components=("unet",))
    assert set(COMPONENTS) >= {
        "transformer",
        "vae",
        "text_encoder",
        "tokenizer",
        "image_encoder",
        "image_processor",
    }


def test_not_a_wan_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"not a Wan2\.1-I2V folder"):
        detect_layout(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        detect_layout(tmp_path / "nope")
