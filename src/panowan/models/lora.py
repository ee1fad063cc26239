"""PEFT LoRA on each stream's Wan transformer, trainable parameter groups, safetensors save / load.

A model without LoRA trains its streams in full (full fine-tuning): every weight of each Wan transformer is
trainable and saved. That is the right choice for a base whose weights are seeded random (the small presets):
there is nothing pretrained to preserve, and low-rank updates of a random matrix learn far slower.

LoRA goes in through diffusers' `transformer.add_adapter(LoraConfig(...))`, called on each Wan
transformer only: the interaction layers and PluckerNet live outside the transformers, so PEFT's
suffix matching can never catch them (NOTES pitfall 8). Groups are selected by module, never by name
substrings.

Files (one folder; in the two-rank placement each rank writes and reads only its own stream's files,
`plucker_net.safetensors` is identical on both):
  lora_{stream}.safetensors         LoRA tensors of that stream's transformer (names relative to it)
  stream_{stream}.safetensors       without LoRA: that stream's whole transformer state dict
  interaction_{stream}.safetensors  that stream's interaction layers
  pixel_decoder_{stream}.safetensors  that stream's pixel decoder (models with `pixel_decoder_width` only)
  plucker_net.safetensors           PluckerNet
  trainable_config.json             {"lora": {rank, alpha, targets}, "model": DualStreamConfig}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file
from torch import nn

from panowan.models.dual_stream import DualStreamWan
from panowan.models.presets import DualStreamConfig
from panowan.parallel.exchange import STREAMS
from panowan.utils.atomic import atomic_write, atomic_write_json

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
# Every linear layer of a Wan block plus the patch embedding and output projection: for a base whose weights
# are seeded random rather than pretrained (the small presets), where adapting attention alone is too little.
EVERY_LINEAR_TARGET = (*DEFAULT_TARGETS, "add_k_proj", "add_v_proj", "ffn.net.0.proj", "ffn.net.2",
                       "proj_out", "patch_embedding")  # fmt: skip
CONFIG_FILE = "trainable_config.json"
PLUCKER_FILE = "plucker_net.safetensors"


@dataclass(frozen=True)
class LoraSettings:
    """rank r, alpha (scaling alpha / r), target module suffixes inside each Wan transformer."""

    rank: int
    alpha: float
    targets: tuple[str, ...] = DEFAULT_TARGETS

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        if not self.targets:
            raise ValueError("LoRA needs at least one target module")

    def to_dict(self) -> dict:
        return {"rank": self.rank, "alpha": float(self.alpha), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, obj: dict) -> LoraSettings:
        """Inverse of `to_dict` (KeyError / TypeError on a malformed dictionary)."""
        return cls(int(obj["rank"]), float(obj["alpha"]), tuple(obj["targets"]))


def lora_file(stream: str) -> str:
    return f"lora_{stream}.safetensors"


def stream_file(stream: str) -> str:
    return f"stream_{stream}.safetensors"


def interaction_file(stream: str) -> str:
    return f"interaction_{stream}.safetensors"


def pixel_decoder_file(stream: str) -> str:
    return f"pixel_decoder_{stream}.safetensors"


def add_lora(
    model: DualStreamWan,
    rank: int = 32,
    alpha: float | None = None,
    targets: Sequence[str] = DEFAULT_TARGETS,
    *,
    seed: int = 0,
) -> LoraSettings:
    """Inject LoRA (alpha defaults to rank) into each local stream's Wan transformer.

    Each stream's adapter is initialised from its own seeded RNG stream, so every placement gets the
    same adapters. Call once, before loading trained adapters with `load_trainable` (never after:
    re-injecting would wipe them, pitfall 8).
    """
    if model.lora_settings is not None:
        raise ValueError(f"the model already has LoRA {model.lora_settings}; adding again would wipe it")
    settings = LoraSettings(rank, float(rank if alpha is None else alpha), tuple(targets))
    for name, transformer in model.streams.items():
        cfg = LoraConfig(
            r=settings.rank,
            lora_alpha=settings.alpha,
            target_modules=list(settings.targets),
            init_lora_weights=True,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1000 + 1 + STREAMS.index(name))
            transformer.add_adapter(cfg)
        if not lora_parameters(transformer):
            raise ValueError(f"LoRA targets {settings.targets} matched no module of stream {name!r}")
    model.lora_settings = settings
    return settings


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Parameters of PEFT LoRA layers' adapter sub-modules (selected by module type)."""
    params: list[nn.Parameter] = []
    for layer in module.modules():
        if isinstance(layer, LoraLayer):
            for attr in layer.adapter_layer_names:
                params.extend(getattr(layer, attr).parameters())
    return params


def _named_lora_tensors(transformer: nn.Module) -> dict[str, torch.Tensor]:
    ids = {id(p) for p in lora_parameters(transformer)}
    return {n: p for n, p in transformer.named_parameters() if id(p) in ids}


def stream_parameters(model: DualStreamWan) -> list[nn.Parameter]:
    """What trains in the local streams: their LoRA adapters, or every weight when the model has no LoRA."""
    if model.lora_settings is None:
        return [p for t in model.streams.values() for p in t.parameters()]
    return [p for t in model.streams.values() for p in lora_parameters(t)]


def trainable_parameter_groups(model: DualStreamWan) -> dict[str, list[nn.Parameter]]:
    """{"streams": `stream_parameters`, "interaction": interaction layers, "pixel": the local streams' pixel
    decoders (empty without), "plucker": PluckerNet}."""
    groups = {
        "streams": stream_parameters(model),
        "interaction": list(model.interactions.parameters()),
        "pixel": [] if model.pixel_decoders is None else list(model.pixel_decoders.parameters()),
        "plucker": list(model.plucker_net.parameters()),
    }
    seen = [id(p) for ps in groups.values() for p in ps]
    assert len(seen) == len(set(seen)), "parameter groups overlap"
    return groups


def freeze_base(model: DualStreamWan) -> None:
    """Freeze every Wan weight; LoRA adapters, interaction layers, pixel decoders and PluckerNet stay trainable. Without
    LoRA nothing is frozen (full fine-tuning)."""
    model.requires_grad_(False)
    for group in trainable_parameter_groups(model).values():
        for p in group:
            p.requires_grad_(True)


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda p: save_file(data, str(p)))


def save_trainable(model: DualStreamWan, folder: str | Path) -> list[Path]:
    """Write what trains in the local streams (LoRA adapters, or without LoRA the whole transformers) and
    the new modules; nothing of a frozen base."""
    folder = Path(folder)
    written = []
    for name, transformer in model.streams.items():
        if model.lora_settings is not None:
            _save_tensors(folder / lora_file(name), _named_lora_tensors(transformer))
            written.append(folder / lora_file(name))
        else:
            _save_tensors(folder / stream_file(name), dict(transformer.state_dict()))
            written.append(folder / stream_file(name))
        _save_tensors(folder / interaction_file(name), dict(model.interactions[name].state_dict()))
        written.append(folder / interaction_file(name))
        if model.pixel_decoders is not None:
            _save_tensors(folder / pixel_decoder_file(name), dict(model.pixel_decoders[name].state_dict()))
            written.append(folder / pixel_decoder_file(name))
    _save_tensors(folder / PLUCKER_FILE, dict(model.plucker_net.state_dict()))
    written.append(folder / PLUCKER_FILE)
    meta = {
        "lora": None if model.lora_settings is None else model.lora_settings.to_dict(),
        "model": model.config.to_dict(),
    }
    atomic_write_json(folder / CONFIG_FILE, meta)
    written.append(folder / CONFIG_FILE)
    return written


def read_trainable_config(folder: str | Path) -> tuple[LoraSettings | None, DualStreamConfig]:
    """The LoRA settings and model configuration a trainable folder was saved with."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{path}: missing (not a folder written by save_trainable)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        lora = None if meta["lora"] is None else LoraSettings.from_dict(meta["lora"])
        return lora, DualStreamConfig.from_dict(meta["model"])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable trainable config ({exc})") from exc


def _load_into(path: Path, targets: dict[str, torch.Tensor]) -> None:
    """Copy the tensors of `path` into `targets` (name -> parameter/buffer), checking keys and shapes."""
    if not path.is_file():
        raise ValueError(f"{path}: missing")
    tensors = load_file(str(path))
    missing, unexpected = sorted(set(targets) - set(tensors)), sorted(set(tensors) - set(targets))
    if missing or unexpected:
        raise ValueError(
            f"{path}: missing keys {missing[:5]} ({len(missing)}), unexpected keys {unexpected[:5]} ({len(unexpected)})"
        )
    bad = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
        for k, v in targets.items()
        if tensors[k].shape != v.shape
    ]
    if bad:
        raise ValueError(f"{path}: shape mismatch (another LoRA rank or model configuration?) {bad[:3]}")
    with torch.no_grad():
        for k, v in targets.items():
            v.copy_(tensors[k])


def load_trainable(model: DualStreamWan, folder: str | Path) -> None:
    """Load what `save_trainable` wrote into `model` (LoRA already added with the same settings)."""
    folder = Path(folder)
    lora, config = read_trainable_config(folder)
    diff = model.config.differences(config)
    if diff:
        raise ValueError(f"{folder / CONFIG_FILE}: saved for another model configuration (differs in {diff})")
    if lora != model.lora_settings:
        raise ValueError(
            f"{folder / CONFIG_FILE}: saved with LoRA {lora}, the model has {model.lora_settings} "
            "(call add_lora with the saved rank, alpha and targets first)"
        )
    for name, transformer in model.streams.items():
        if lora is not None:
            _load_into(folder / lora_file(name), _named_lora_tensors(transformer))
        else:
            _load_into(folder / stream_file(name), dict(transformer.state_dict(keep_vars=True)))
        layers = model.interactions[name]
        _load_into(folder / interaction_file(name), dict(layers.state_dict(keep_vars=True)))
        if model.pixel_decoders is not None:
            decoder = model.pixel_decoders[name]
            _load_into(folder / pixel_decoder_file(name), dict(decoder.state_dict(keep_vars=True)))
    _load_into(folder / PLUCKER_FILE, dict(model.plucker_net.state_dict(keep_vars=True)))


__all__ = [
    "DEFAULT_TARGETS",
    "LoraSettings",
    "add_lora",
    "freeze_base",
    "load_trainable",
    "lora_parameters",
    "read_trainable_config",
    "save_trainable",
    "stream_file",
    "stream_parameters",
    "trainable_parameter_groups",
]


def merge_lora(model: DualStreamWan) -> None:
    """Fold every LoRA adapter into its base weight (W + scale B A) and remove the PEFT layers, in place,
    through diffusers' own `fuse_lora` + `unload_lora` on each stream's transformer.

    The merged model computes the same function with the plain diffusers module tree (no adapter
    kernels, base-sized files); afterwards `model.lora_settings` is None and no LoRA can be loaded.
    """
    if model.lora_settings is None:
        raise ValueError("the model has no LoRA to merge")
    for transformer in model.streams.values():
        transformer.fuse_lora()
        transformer.unload_lora()
    assert not any(isinstance(m, LoraLayer) for m in model.modules()), "a LoRA layer survived the merge"
    model.lora_settings = None
