"""LoRA: injection only into the Wan transformers, groups by module, safetensors round trip, refusals."""

from __future__ import annotations

import json

import pytest
import torch
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file

from panowan.models.lora import (
    add_lora,
    freeze_base,
    load_trainable,
    save_trainable,
    trainable_parameter_groups,
)
from panowan.models.replicas import tiny_dual_stream, tiny_inputs


def _trained(seed=0, rank=4, **overrides):
    model, config = tiny_dual_stream(seed=seed, **overrides)
    add_lora(model, rank=rank, alpha=2 * rank)
    freeze_base(model)
    with torch.no_grad():  # stand-in for training: every trainable tensor non-trivial
        g = torch.Generator().manual_seed(seed + 100)
        for group in trainable_parameter_groups(model).values():
            for p in group:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model, config


def test_lora_targets_only_wan_attention_and_groups_by_module():
    model, config = tiny_dual_stream()
    add_lora(model, rank=4)
    for name, stream in model.streams.items():
        wrapped = sorted(n for n, m in stream.named_modules() if isinstance(m, LoraLayer))
        # 8 blocks x 2 attentions x (q, k, v, out)
        assert len(wrapped) == config.num_layers * 2 * 4, name
        assert all(n.split(".")[-1] in ("to_q", "to_k", "to_v", "0") for n in wrapped)
        assert not any("add_k_proj" in n for n in wrapped)
    assert not any(isinstance(m, LoraLayer) for m in model.interactions.modules())
    assert not any(isinstance(m, LoraLayer) for m in model.plucker_net.modules())
    freeze_base(model)
    groups = trainable_parameter_groups(model)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for ps in groups.values() for p in ps}
    assert (
        len(groups["streams"]) == 2 * config.num_layers * 2 * 4 * 2
    )  # streams x layers x attn x proj x (A, B)
    assert all(p.shape[0] == 4 or p.shape[1] == 4 for p in groups["streams"])
    with pytest.raises(ValueError, match="already has LoRA"):
        add_lora(model, rank=4)


def test_save_load_round_trip(tmp_path):
    model, _ = _trained(seed=1)
    x = tiny_inputs(seed=2)
    with torch.no_grad():
        want = model(**x)
    written = save_trainable(model, tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(p.name for p in written) == [
        "interaction_depth.safetensors", "interaction_rgb.safetensors", "lora_depth.safetensors",
        "lora_rgb.safetensors", "plucker_net.safetensors", "trainable_config.json",
    ]  # fmt: skip
    saved = sum(len(load_file(str(p))) for p in tmp_path.glob("*.safetensors"))
    assert saved == sum(len(g) for g in trainable_parameter_groups(model).values())
    assert all("lora_" in k for k in load_file(str(tmp_path / "lora_rgb.safetensors")))
    meta = json.loads((tmp_path / "trainable_config.json").read_text())
    assert meta["lora"] == {"rank": 4, "alpha": 8.0, "targets": ["to_q", "to_k", "to_v", "to_out.0"]}

    fresh, _ = tiny_dual_stream(seed=1)  # same base weights, untrained new modules
    add_lora(fresh, rank=4, alpha=8)
    with torch.no_grad():
        assert (fresh(**x)["rgb"] - want["rgb"]).abs().max() > 1e-4
        load_trainable(fresh, tmp_path)
        got = fresh(**x)
    for s in want:
        assert torch.equal(got[s], want[s])


def test_without_lora_the_streams_train_and_save_in_full(tmp_path):
    """Full fine-tuning: no LoRA, every Wan weight trainable, whole transformers saved and loaded back into a
    differently seeded base; a LoRA folder and a full folder refuse each other."""
    model, _ = tiny_dual_stream(seed=6)
    freeze_base(model)
    groups = trainable_parameter_groups(model)
    assert all(p.requires_grad for p in model.parameters())
    assert len(groups["streams"]) == len(list(model.streams.parameters()))
    with torch.no_grad():
        g = torch.Generator().manual_seed(9)
        for p in groups["streams"]:
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    x = tiny_inputs(seed=2)
    with torch.no_grad():
        want = model(**x)
    names = sorted(p.name for p in save_trainable(model, tmp_path))
    assert names == ["interaction_depth.safetensors", "interaction_rgb.safetensors", "plucker_net.safetensors",
                     "stream_depth.safetensors", "stream_rgb.safetensors", "trainable_config.json"]  # fmt: skip
    assert json.loads((tmp_path / "trainable_config.json").read_text())["lora"] is None
    fresh, _ = tiny_dual_stream(seed=7)  # another base: everything must come from the files
    with torch.no_grad():
        load_trainable(fresh, tmp_path)
        got = fresh(**x)
    for s in want:
        assert torch.equal(got[s], want[s])
    with_lora, _ = tiny_dual_stream(seed=6)
    add_lora(with_lora, rank=4, alpha=8)
    with pytest.raises(ValueError, match="saved with LoRA None"):
        load_trainable(with_lora, tmp_path)
    (tmp_path / "stream_rgb.safetensors").unlink()
    with pytest.raises(ValueError, match=r"stream_rgb\.safetensors: missing"):
        load_trainable(fresh, tmp_path)


def test_one_stream_model_loads_its_own_files(tmp_path):
    model, _ = _trained(seed=3)
    save_trainable(model, tmp_path)

    class Solo:
        local_streams = ("depth",)

        def swap(self, states):
            raise AssertionError

    solo, _ = tiny_dual_stream(seed=3, local_streams=("depth",), exchange=Solo())
    add_lora(solo, rank=4, alpha=8)
    load_trainable(solo, tmp_path)
    ref = dict(model.named_parameters())
    for n, p in solo.named_parameters():
        assert torch.equal(p, ref[n]), n
    (tmp_path / "lora_depth.safetensors").unlink()
    with pytest.raises(ValueError, match=r"lora_depth\.safetensors: missing"):
        load_trainable(solo, tmp_path)


def test_refuses_other_rank_or_config(tmp_path):
    model, _ = _trained(seed=4)
    save_trainable(model, tmp_path)
    other_rank, _ = tiny_dual_stream(seed=4)
    add_lora(other_rank, rank=8, alpha=8)
    with pytest.raises(ValueError, match=r"trainable_config.json: saved with LoRA .*rank=4"):
        load_trainable(other_rank, tmp_path)
    other_config, _ = tiny_dual_stream(seed=4, pose_dim=16)
    add_lora(other_config, rank=4, alpha=8)
    with pytest.raises(ValueError, match=r"another model configuration \(differs in \['pose_dim'\]\)"):
        load_trainable(other_config, tmp_path)
    # A tampered file (rank 8 tensors under a rank-4 config) is caught by shape, naming the file.
    big, _ = _trained(seed=4, rank=8)
    save_trainable(big, tmp_path / "big")
    (tmp_path / "big" / "lora_rgb.safetensors").replace(tmp_path / "lora_rgb.safetensors")
    fresh, _ = tiny_dual_stream(seed=4)
    add_lora(fresh, rank=4, alpha=8)
    with pytest.raises(ValueError, match=r"lora_rgb.safetensors: shape mismatch"):
        load_trainable(fresh, tmp_path)


def test_merge_lora_keeps_the_function_and_drops_the_adapters():
    """Folding the adapters (linear and the patch-embedding convolution) into the base weights changes
    nothing the model computes (float32) and leaves a plain diffusers module tree."""
    from panowan.models.lora import merge_lora

    model, _ = tiny_dual_stream(seed=5)
    add_lora(model, rank=4, alpha=8, targets=("to_q", "to_v", "ffn.net.2", "proj_out", "patch_embedding"))
    with torch.no_grad():
        g = torch.Generator().manual_seed(7)
        for p in trainable_parameter_groups(model)["streams"]:
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    inputs = tiny_inputs(seed=2)
    model.eval()
    with torch.no_grad():
        before = model(**inputs)
        merge_lora(model)
        after = model(**inputs)
    assert model.lora_settings is None
    assert not any(isinstance(m, LoraLayer) for m in model.modules())
    assert not any("lora" in k or "base_layer" in k for k in model.state_dict())
    for s in before:
        torch.testing.assert_close(after[s], before[s], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="no LoRA"):
        merge_lora(model)
