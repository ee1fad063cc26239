"""Float8 weights: torchao's float8 quantisation of the linear layers inside the Wan blocks, for inference
(`panowan infer --fp8`) and, in "weight" mode, for a frozen base under LoRA in training (`panowan train --fp8_base
weight`: quantise first, then add the adapters, which PEFT wraps around the float8 layers and which train in full
precision; torchao's float8 weight tensor passes gradients to its input, not to itself).

Modes (`panowan infer --fp8`, `Completer.from_pretrained(fp8=...)`):
- "weight": `Float8WeightOnlyConfig`: weights stored in float8_e4m3 with one scale per output row, turned
  back into the model's dtype (bfloat16) for each matmul. Half the bytes of those weights; runs anywhere,
  the CPU included.
- "dynamic": `Float8DynamicActivationFloat8WeightConfig` with per-row scales: activations are also quantised
  to float8 at run time and the matmul runs on the card's float8 units (`torch._scaled_mm`); needs a CUDA
  card with float8 (compute capability 8.9+: Ada, Hopper and later) and bfloat16 weights.

Only the `nn.Linear` layers inside each stream's Wan transformer blocks are quantised (self- and
cross-attention q/k/v/o and the image key/value projections, the FFN): they hold nearly all of the weights
and FLOPs. Everything else stays in the model's dtype: the patch / time / text / image embeddings, the
output head and norms (small, and precision-sensitive: they set the scale of every token or the final
velocity), and the interaction layers, PluckerNet and pixel decoders (small, trained from scratch, not
what float8 was measured on). Quantise a model with its LoRA adapters folded in (`models.lora.merge_lora`):
torchao would otherwise quantise the adapters' base layers underneath PEFT, which is refused here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

FP8_MODES = ("off", "weight", "dynamic")
"""The values of `--fp8` ("off": no quantisation)."""


@dataclass(frozen=True)
class Fp8Summary:
    """What `quantize_fp8` did: linear layers now holding float8 weights, block linears torchao left in high
    precision (it skips layers whose sizes are not multiples of 16 in "dynamic" mode), and the model's
    parameter bytes before and after."""

    mode: str
    layers: int
    skipped: int
    bytes_before: int
    bytes_after: int

    def __str__(self) -> str:
        unit, size = ("GiB", 2**30) if self.bytes_before >= 2**30 else ("MiB", 2**20)
        skipped = f", {self.skipped} left in high precision" if self.skipped else ""
        return (f"fp8 {self.mode}: {self.layers} block linear layers in float8{skipped}; parameters "
                f"{self.bytes_before / size:.2f} -> {self.bytes_after / size:.2f} {unit}")  # fmt: skip


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds: a torchao tensor subclass's inner tensors (float8 data + scales), else
    numel x element size."""
    names = getattr(t, "tensor_data_names", None)
    if names is None:
        return t.numel() * t.element_size()
    inner = [getattr(t, n) for n in (*names, *getattr(t, "optional_tensor_data_names", ()))]
    return sum(tensor_bytes(x) for x in inner if isinstance(x, torch.Tensor))


def parameter_bytes(model: nn.Module) -> int:
    return sum(tensor_bytes(p) for p in model.parameters())


def is_float8(weight: torch.Tensor) -> bool:
    """Whether `weight` is stored in float8 (a torchao tensor whose data is float8)."""
    qdata = getattr(weight, "qdata", None)
    return isinstance(qdata, torch.Tensor) and qdata.dtype in (torch.float8_e4m3fn, torch.float8_e5m2)


def _transformers(model: nn.Module) -> list[nn.Module]:
    """The Wan transformers of a `DualStreamWan` (its local streams), or a plain `WanTransformer3DModel`."""
    streams = getattr(model, "streams", None)
    return list(streams.values()) if streams is not None else [model]


def block_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """{name: layer} of every `nn.Linear` inside the Wan blocks (names relative to `model`)."""
    names = {id(m): n for n, m in model.named_modules()}
    found: dict[str, nn.Linear] = {}
    for transformer in _transformers(model):
        for block in transformer.blocks:
            for sub, m in block.named_modules():
                if isinstance(m, nn.Linear):
                    found[f"{names[id(block)]}.{sub}"] = m
    return found


def fp8_supported(device: torch.device | str) -> bool:
    """Whether `device` multiplies in float8: a CUDA card of compute capability 8.9 or more."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device) >= (8, 9)


def _has_lora(model: nn.Module) -> bool:
    if getattr(model, "lora_settings", None) is not None:
        return True
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # pragma: no cover (peft is a dependency)
        return False
    return any(isinstance(m, BaseTunerLayer) for m in model.modules())


def check_fp8(mode: str, device: torch.device | str, dtype: torch.dtype):
    """The torchao config of `mode` ("weight" or "dynamic") for a model on `device` in `dtype`, or ValueError
    (torchao missing, an unknown mode, "dynamic" on a CPU or a card without float8 or not in bfloat16).
    Cheap: callers check before loading any weight."""
    if mode not in FP8_MODES[1:]:
        raise ValueError(f"fp8 mode must be one of {FP8_MODES[1:]}; got {mode!r}")
    try:
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            Float8WeightOnlyConfig,
            PerRow,
        )
    except ImportError as e:
        raise ValueError(
            f"fp8 needs torchao, which is not installed ({e}): pip install panowan[fp8]"
        ) from None
    if mode == "weight":
        return Float8WeightOnlyConfig()
    device = torch.device(device)
    if not fp8_supported(device):
        where = (f"{torch.cuda.get_device_name(device)} (compute capability "
                 f"{torch.cuda.get_device_capability(device)})" if device.type == "cuda" and
                 torch.cuda.is_available() else f"device {device}")  # fmt: skip
        raise ValueError(f"fp8 'dynamic' needs a CUDA card with float8 matmuls (compute capability 8.9+); the "
                         f"model is on {where}: use 'weight'")  # fmt: skip
    if dtype != torch.bfloat16:
        raise ValueError(
            f"fp8 'dynamic' needs bfloat16 weights, not {dtype} (panowan infer --dtype bfloat16)"
        )
    return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())


def quantize_fp8(model: nn.Module, mode: str) -> Fp8Summary:
    """Quantise, in place, the linear layers of the Wan blocks of `model` (a `DualStreamWan`: both local
    streams; or a plain `WanTransformer3DModel`) to float8 by `mode` ("weight" or "dynamic"; module
    docstring). Call it after the model is on its device in its dtype and before `compile_blocks`.

    ValueError: those of `check_fp8`, LoRA adapters not folded in, or a model already quantised."""
    layers = block_linears(model)
    if not layers:
        raise ValueError("the model has no Wan block with linear layers to quantise")
    weight = next(iter(layers.values())).weight
    config = check_fp8(mode, weight.device, weight.dtype)
    from torchao.quantization import quantize_

    if _has_lora(model):
        raise ValueError("the model has LoRA adapters: fold them into the base weights first "
                         "(panowan.models.lora.merge_lora), then quantise")  # fmt: skip
    if any(is_float8(m.weight) for m in layers.values()):
        raise ValueError("the model's block weights are already float8")
    before = parameter_bytes(model)
    chosen = {id(m) for m in layers.values()}
    for transformer in _transformers(model):
        quantize_(transformer.blocks, config, filter_fn=lambda m, _fqn: id(m) in chosen)
    done = sum(is_float8(m.weight) for m in layers.values())
    return Fp8Summary(mode, done, len(layers) - done, before, parameter_bytes(model))
