"""Conditioning encoders: Wan's UMT5 + CLIP exactly as diffusers' WanImageToVideoPipeline, the on-disk cache,
and the hashed stand-in of the tiny preset."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from panowan.models.encoders import HashTextEncoder, WanConditioningEncoder, build_encoder, to_uint8_images

PROMPTS = ["A bright   living room with a grey sofa &amp; a table", "a dark kitchen with white tiles"]


def _frames(seed: int) -> torch.Tensor:
    return torch.rand(2, 3, 32, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_wan_encoder_matches_the_diffusers_pipeline(loaded, monkeypatch):
    import diffusers.pipelines.wan.pipeline_wan_i2v as wan_i2v
    from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline
    from PIL import Image

    # ftfy is optional and not installed here; the pipeline calls it unconditionally
    monkeypatch.setattr(wan_i2v, "ftfy", SimpleNamespace(fix_text=lambda t: t), raising=False)
    base = loaded["diffusers"]
    pipe = WanImageToVideoPipeline(
        tokenizer=base.tokenizer,
        text_encoder=base.text_encoder,
        image_encoder=base.image_encoder,
        image_processor=base.image_processor,
        transformer=base.transformer,
        vae=base.vae,
        scheduler=UniPCMultistepScheduler(),
    )
    frames = _frames(0)
    enc = build_encoder(base)
    assert isinstance(enc, WanConditioningEncoder)
    text, image = enc.encode(PROMPTS, frames)
    ref_text = pipe._get_t5_prompt_embeds(PROMPTS, max_sequence_length=512, device="cpu", dtype=torch.float32)
    ref_image = pipe.encode_image([Image.fromarray(a) for a in to_uint8_images(frames)], device="cpu")
    assert text.shape == (2, 512, 32) and image.shape == (2, 5, 32)  # CLS + 2 x 2 patches
    torch.testing.assert_close(text, ref_text, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(image, ref_image, rtol=1e-5, atol=1e-6)
    n = len(base.tokenizer(PROMPTS[1]).input_ids)
    assert text[1, n:].abs().max() == 0 and text[1, n - 1].abs().max() > 0  # masked zero padding


def test_cache_hit_skips_the_encoders_and_a_new_prompt_misses(loaded, tmp_path):
    base = loaded["original"]
    enc = WanConditioningEncoder(
        base.text_encoder, base.tokenizer, base.image_encoder, base.image_processor, cache_dir=tmp_path
    )
    text_calls, image_calls = _count_calls(base.text_encoder), _count_calls(base.image_encoder)
    frames = _frames(1)
    t1, i1 = enc.encode(PROMPTS, frames)
    assert (text_calls[0], image_calls[0], enc.misses) == (1, 1, 2)
    assert len(list(tmp_path.rglob("*.safetensors"))) == 2
    t2, i2 = enc.encode(PROMPTS, frames)  # the same rooms: read from disk, no encoder call
    assert (text_calls[0], image_calls[0], enc.misses) == (1, 1, 2)
    assert torch.equal(t1, t2) and torch.equal(i1, i2)
    # a fresh encoder object on the same cache (a restarted run) also hits
    enc2 = WanConditioningEncoder(
        base.text_encoder, base.tokenizer, base.image_encoder, base.image_processor, cache_dir=tmp_path
    )
    assert enc2.identity == enc.identity
    enc2.encode(PROMPTS[:1], frames[:1])
    assert (text_calls[0], enc2.misses) == (1, 0)
    # a different prompt misses (one item), a different image misses too
    t3, _ = enc.encode(["an office with two desks", PROMPTS[1]], frames)
    assert (text_calls[0], enc.misses) == (2, 3)
    assert not torch.equal(t3[0], t1[0]) and torch.equal(t3[1], t1[1])
    enc.encode(PROMPTS[:1], _frames(2)[:1])
    assert (image_calls[0], enc.misses) == (3, 4)
    assert next(base.text_encoder.parameters()).device.type == "cpu"  # offloaded after use


def test_hash_encoder_is_deterministic_and_prompt_dependent():
    enc, again = build_encoder("tiny"), HashTextEncoder(32, 32)
    assert isinstance(enc, HashTextEncoder)
    frames = _frames(3)
    t1, i1 = enc.encode(["a red room", "a blue room"], frames)
    t2, i2 = again.encode(["a red room", "a blue room"], frames)
    assert torch.equal(t1, t2) and torch.equal(i1, i2)
    assert t1.shape == (2, 32, 32) and i1.shape == (2, 4, 32)
    assert torch.equal(t1[0, 0], t1[1, 0]) and not torch.equal(t1[0, 1], t1[1, 1])  # "a" same, colour differs
    assert t1[0, 3:].abs().max() == 0 and t1[0, :3].abs().min() > 0  # three words, then zero padding
    _, i3 = enc.encode(["a red room", "a blue room"], _frames(4))
    assert (i3 - i1).abs().max() > 1e-3
    t4, _ = enc.encode(["room red a", "a blue room"], frames)
    assert not torch.equal(t4[0], t1[0])  # word order matters


def test_build_encoder_needs_a_base_for_wan_presets():
    with pytest.raises(ValueError, match="base_model_dir"):
        build_encoder("wan2.1-i2v-14b")
