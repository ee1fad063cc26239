"""Float8 weights of the Wan blocks (`panowan.models.fp8`, torchao) on the CPU: which layers, how close the
forward stays, the refusals, and `panowan infer --fp8` / `Completer.from_pretrained(fp8=)`."""

from __future__ import annotations

import argparse
import hashlib
import sys
import warnings

import pytest
import torch

pytest.importorskip("torchao", reason="fp8 needs torchao (pip install panowan[fp8]; the test extra has it)")

from panowan.models.fp8 import block_linears, check_fp8, is_float8, quantize_fp8
from panowan.models.lora import add_lora, merge_lora
from panowan.models.replicas import tiny_dual_stream, tiny_inputs

# Measured on the tiny preset (float32, seeds 0 and 1): relative L2 error of each stream's velocity 0.026-0.031
# (float8_e4m3 keeps 3 mantissa bits: ~2-4% per weight, which the blocks neither amplify nor average away).
MAX_REL_ERR = 0.1
MIN_REL_ERR = 1e-3  # below this nothing was quantised


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("seed", [0, 1])
def test_weight_mode_quantises_exactly_the_block_linears_and_stays_close(seed):
    model, config = tiny_dual_stream(seed)
    model.eval()
    inputs = tiny_inputs(seed=seed, config=config)
    with torch.no_grad():
        ref = model(**inputs)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    layers = block_linears(model)
    # 12 per block (self-attention q/k/v/o, cross-attention q/k/v/o + image k/v, FFN in/out) x 8 blocks x 2 streams
    assert len(layers) == 12 * config.num_layers * 2 == 192
    assert all(".blocks." in name for name in layers)

    summary = quantize_fp8(model, "weight")
    assert (summary.layers, summary.skipped) == (192, 0)
    assert summary.bytes_after < summary.bytes_before
    quantised = {f"{name}.weight" for name in layers}
    for name, p in model.named_parameters():
        if name in quantised:
            assert is_float8(p), name
            assert p.qdata.dtype == torch.float8_e4m3fn and p.shape == before[name].shape
        else:  # embeddings, head, norms, biases, interaction layers, PluckerNet, pixel decoders: untouched
            assert not is_float8(p) and type(p.data) is torch.Tensor, name
            assert torch.equal(p, before[name]), name
    saved = sum(before[n].numel() for n in quantised) * 3  # float32 -> float8: 3 bytes a weight...
    scales = sum(layer.weight.scale.numel() * layer.weight.scale.element_size() for layer in layers.values())
    assert summary.bytes_before - summary.bytes_after == saved - scales  # ...less the per-row scales

    with torch.no_grad():
        out = model(**inputs)
    for s in ref:
        err = _rel(out[s], ref[s])
        assert MIN_REL_ERR < err < MAX_REL_ERR, (s, err)


def test_refusals(monkeypatch):
    from panowan.models import fp8

    model, _ = tiny_dual_stream(0)
    with pytest.raises(ValueError, match="one of"):
        quantize_fp8(model, "int8")
    with pytest.raises(ValueError, match="CUDA card with float8"):
        quantize_fp8(model, "dynamic")  # on the CPU
    monkeypatch.setattr(fp8, "fp8_supported", lambda device: True)  # as on an sm89+ card
    with pytest.raises(ValueError, match="needs bfloat16 weights"):
        check_fp8("dynamic", "cuda", torch.float32)
    monkeypatch.undo()

    add_lora(model, rank=2)
    with pytest.raises(ValueError, match="LoRA adapters"):
        quantize_fp8(model, "weight")
    assert not any(is_float8(m.weight) for m in block_linears(model).values())
    merge_lora(model)
    assert quantize_fp8(model, "weight").layers == 192  # folded first: accepted
    with pytest.raises(ValueError, match="already float8"):
        quantize_fp8(model, "weight")


def test_missing_torchao_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # import fails as if not installed
    model, _ = tiny_dual_stream(0)
    with pytest.raises(ValueError, match=r"pip install panowan\[fp8\]"):
        quantize_fp8(model, "weight")


def _digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def test_infer_fp8_flag_writes_what_the_api_writes(prepared_root, tmp_path):
    """`panowan infer --fp8 weight` and `Completer.from_pretrained(fp8="weight")`: float8 block weights, the
    same files; and not the files of the unquantised model (the flag does something)."""
    from panowan import Completer
    from panowan.commands import infer as infer_cmd

    parser = argparse.ArgumentParser()
    infer_cmd.add_arguments(parser)
    common = ["--data_root", str(prepared_root), "--seed", "3", "--num_inference_steps", "1", "--sampler",
              "euler", "--resolution", "32", "--device", "cpu"]  # fmt: skip
    assert parser.parse_args([*common, "--output_dir", "x"]).fp8 == "off"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained-default warning, where the package holds no model
        for fp8 in ("off", "weight"):
            infer_cmd.infer(parser.parse_args([*common, "--output_dir", str(tmp_path / fp8), "--fp8", fp8]))
        completer = Completer.from_pretrained(None, device="cpu", resolution=32, fp8="weight")
    assert all(is_float8(m.weight) for m in block_linears(completer.model).values())
    completer.complete(prepared_root / "area_000/room_0000", steps=1, seed=3, sampler="euler").save(
        tmp_path / "api"
    )
    off, cli, api = (_digests(tmp_path / d) for d in ("off", "weight", "api"))
    assert cli == api and len(cli) == len(off)
    assert {k for k in cli if k.endswith(".png") and cli[k] != off[k]}, "fp8 changed no image"
    with pytest.raises(ValueError, match="CUDA card with float8"):
        Completer.from_pretrained(None, device="cpu", fp8="dynamic")  # refused before any weight is read
