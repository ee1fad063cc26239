"""Which model to load and how to build it: the embedded default, an exported model folder, or a training
checkpoint; and writing a model as an exported one.

Everything up to `build_model` reads only small files (json, folder listings), so that inputs can be checked
before any weight is read; the exception is verification: `resolve_source` hashes the weight files against
their manifest (a checkpoint's COMPLETE marker, an export's default_model.json) at disk speed, unless
`verify=False` (`panowan infer --no_verify`: names and sizes only, one warning). `panowan infer`
(`panowan.commands.infer`, which re-exports these names) and the Python API
(`panowan.sample.completer.Completer`) both resolve models here.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from panowan.models.exported import (
    EMBEDDED_CONFIG,
    EMBEDDED_FORMAT,
    EMBEDDED_WEIGHTS,
    MANIFEST_KEY,
    load_exported_weights,
    read_exported,
    verify_exported,
)

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
"""The package's embedded default model (`default_model.json` + `default_model.safetensors`)."""
DEFAULT_STEPS = 50
"""Sampling steps of a model that recommends none (a training checkpoint): the original script's default."""


@dataclass
class ModelSource:
    """What will be loaded, resolved from cheap reads only (no weights)."""

    kind: str  # "embedded", "untrained", "checkpoint"
    model_config: Any
    lora: Any  # LoraSettings | None
    weights: Path | None
    train_config: dict
    description: str
    sampling: dict = field(default_factory=dict)
    """Recommended sampling of an exported model ({"num_inference_steps": N, "sampler": S}), chosen on
    validation rooms when it was exported; the flags override it."""
    fingerprint: str = ""
    """What identifies the weights: "sha256:..." of an exported model's weights (from its manifest), a
    checkpoint's folder, "untrained". completion.json records it, so that a rerun with other weights redoes a
    room instead of keeping another model's completion."""


def _inference_file(name: str) -> bool:
    """The files of a checkpoint that inference reads (its weights and run config; not the optimiser state)."""
    return name.startswith("weights/") or name == "config.json"


_warned_unverified = False


def _warn_unverified() -> None:
    global _warned_unverified
    if not _warned_unverified:
        _warned_unverified = True
        warnings.warn("model files are checked by name and size only, not hashed (--no_verify): a corrupted "
                      "byte would go unnoticed", stacklevel=3)  # fmt: skip


def _checkpoint_folder(checkpoint_dir: Path, step: int | None, verify: bool = True) -> Path:
    """The checkpoint folder `--checkpoint_dir` [+ `--checkpoint_step`] names, its weights verified against the
    manifest of its marker (`verify` False: names and sizes only). Without a step: the newest complete one
    that verifies (a newer one that fails is skipped with a warning naming it and its file)."""
    from panowan.train.checkpoint import complete_checkpoints, is_complete, newest_verified, verify_checkpoint

    if not checkpoint_dir.is_dir():
        raise ValueError(f"{checkpoint_dir}: checkpoint folder does not exist")
    if step is not None:
        folder = checkpoint_dir / f"checkpoint-{step}"
        if not folder.is_dir():
            found = [s for s, _ in complete_checkpoints(checkpoint_dir)]
            raise ValueError(f"{folder}: no such checkpoint (complete checkpoints: steps {found})")
    elif (checkpoint_dir / "weights").is_dir() or (checkpoint_dir / "trainable_config.json").is_file():
        folder = checkpoint_dir
    else:
        if not complete_checkpoints(checkpoint_dir):
            raise ValueError(f"{checkpoint_dir}: holds no complete checkpoint-STEP folder")
        return newest_verified(checkpoint_dir, hashes=verify, files=_inference_file)
    if (folder / "weights").is_dir() and not is_complete(folder):
        raise ValueError(
            f"{folder}: checkpoint is incomplete (no COMPLETE marker; the run stopped while saving)"
        )
    if is_complete(folder):
        verify_checkpoint(folder, hashes=verify, files=_inference_file)
    return folder


def is_exported(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds an exported model (rather than a training checkpoint)."""
    return (Path(folder) / EMBEDDED_CONFIG).is_file()


def resolve_source(
    *,
    model_dir: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_step: int | None = None,
    base_model_dir: str | os.PathLike | None = None,
    preset: str | None = None,
    lora_rank: int | None = None,
    assets: str | os.PathLike | None = None,
    verify: bool = True,
) -> ModelSource:
    """Which model to load, checked (preset, LoRA rank, pretrained files, the weights against their manifest)
    before any weight is loaded into a model.

    `model_dir`: an exported model; `checkpoint_dir` (+ `checkpoint_step`): a training run; neither: the
    embedded default in `assets` (default `ASSETS`). The arguments are `panowan infer`'s flags of the same
    names, and the messages name them so (`verify` is `not --no_verify`)."""
    from panowan.models.lora import read_trainable_config
    from panowan.models.presets import NOT_ARCHITECTURE, get_preset

    if model_dir and (checkpoint_dir or base_model_dir):
        raise ValueError(
            "--model_dir is an exported model: pass it alone, not with --checkpoint_dir / --base_model_dir"
        )
    if checkpoint_dir:
        if not verify:
            _warn_unverified()
        folder = _checkpoint_folder(Path(checkpoint_dir), checkpoint_step, verify)
        weights = folder / "weights" if (folder / "weights").is_dir() else folder
        lora, config = read_trainable_config(weights)
        train_cfg = {}
        if (folder / "config.json").is_file():
            train_cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        source = ModelSource("checkpoint", config, lora, weights, train_cfg, f"checkpoint {folder}",
                             fingerprint=f"checkpoint {folder.resolve()}")  # fmt: skip
    elif base_model_dir:
        raise ValueError(
            "--base_model_dir alone has no trained dual-stream weights: pass --checkpoint_dir too"
        )
    elif checkpoint_step is not None:
        raise ValueError("--checkpoint_step needs --checkpoint_dir")
    else:
        if not verify:
            _warn_unverified()
        source = embedded_source(model_dir, assets=assets, verify=verify)
    cfg = source.model_config
    if preset is not None:
        wanted = get_preset(preset)
        # A run may change how often the streams interact, its seed and its condition fill, not the
        # architecture of a preset.
        diff = wanted.differences(cfg, ignore=("interaction_interval", *NOT_ARCHITECTURE))
        if diff:
            raise ValueError(f"{source.description} was trained with another model configuration than preset "
                             f"{preset!r} (differs in {diff})")  # fmt: skip
    if lora_rank is not None:
        have = 0 if source.lora is None else source.lora.rank
        if have != lora_rank:
            raise ValueError(f"{source.description} has LoRA rank {have}, but --lora_rank is {lora_rank}")
    if cfg.codec != "analytic" and not base_model_dir:
        raise ValueError(
            f"{source.description} uses the pretrained Wan VAE and transformer: pass --base_model_dir"
        )
    if base_model_dir and cfg.codec == "analytic":
        warnings.warn("the model needs no pretrained files; --base_model_dir is ignored", stacklevel=3)
    return source


def resolve_model(args, *, assets: str | os.PathLike | None = None) -> ModelSource:
    """`resolve_source` from `panowan infer`'s parsed flags (an `argparse.Namespace`)."""
    return resolve_source(
        model_dir=args.model_dir, checkpoint_dir=args.checkpoint_dir, checkpoint_step=args.checkpoint_step,
        base_model_dir=args.base_model_dir, preset=args.preset, lora_rank=args.lora_rank, assets=assets,
        verify=not getattr(args, "no_verify", False),
    )  # fmt: skip


def embedded_source(
    folder: str | os.PathLike | None = None, *, assets: str | os.PathLike | None = None, verify: bool = True
) -> ModelSource:
    """An exported model in `folder`; by default the one shipped in `assets` (default: panowan/assets), or
    (with a warning) an untrained initialisation when that holds none. Its weights are verified against the
    manifest of its config (`models.exported.verify_exported`; `verify` False: their size only)."""
    from panowan.models.lora import LoraSettings
    from panowan.models.presets import DualStreamConfig, get_preset

    default = Path(ASSETS if assets is None else assets)
    root = default if folder is None else Path(folder)
    if folder is None and not (root / EMBEDDED_CONFIG).is_file() and not (root / EMBEDDED_WEIGHTS).is_file():
        warnings.warn(
            f"no trained default model in {default} ({EMBEDDED_CONFIG} + {EMBEDDED_WEIGHTS}): using an UNTRAINED "
            "initialisation of the tiny preset; its completions are noise, not results",
            stacklevel=2,
        )
        return ModelSource("untrained", get_preset("tiny"), None, None, {}, "untrained tiny model",
                           fingerprint="untrained")  # fmt: skip
    meta, weights = read_exported(root)
    check_sampling(meta.get("sampling", {}), str(root / EMBEDDED_CONFIG))
    verify_exported(root, meta, hashes=verify)
    lora = None if meta["lora"] is None else LoraSettings.from_dict(meta["lora"])
    config = DualStreamConfig.from_dict(meta["model"])
    digest = meta.get(MANIFEST_KEY, {}).get(EMBEDDED_WEIGHTS, {}).get("sha256")
    return ModelSource("embedded", config, lora, weights, meta.get("train", {}), f"embedded model {weights}",
                       meta.get("sampling", {}), f"sha256:{digest}" if digest else f"unverified {weights.resolve()}")  # fmt: skip


def weight_settings(source: ModelSource, fp8: str = "off") -> dict[str, str]:
    """What completion.json records of the weights (and `sample.rooms.missing_rooms` compares): the source's
    fingerprint, and the fp8 storage unless off."""
    return {"model_fingerprint": source.fingerprint, **({"fp8": fp8} if fp8 != "off" else {})}


def build_model(
    source: ModelSource, base_model_dir: str | None, device, dtype, groups=None, *, fp8: str = "off",
    compile: bool = False, vae_tiling: bool | None = None,
):  # fmt: skip
    """(model, codec, encoder) for a resolved source. Heavy: reads the weights.

    `groups` (`panowan.parallel.groups.StreamGroups`, under torchrun) restricts the model to this rank's stream
    and connects it to its peer; default: one process holds both streams. `fp8` ("weight" or "dynamic";
    `panowan.models.fp8`) quantises the Wan blocks' linear layers once the model is on `device` in `dtype`
    (LoRA adapters folded in first); `compile` then compiles its regions (`DualStreamWan.compile_blocks`). `vae_tiling`
    (default: on CUDA) makes the Wan VAE encode and decode in tiles (`models.loading.enable_vae_memory_savers`)."""
    import torch
    from diffusers import WanTransformer3DModel

    from panowan.models.codec import build_codec
    from panowan.models.dual_stream import DualStreamWan
    from panowan.models.encoders import build_encoder
    from panowan.models.lora import add_lora, load_trainable

    if fp8 != "off":
        from panowan.models.fp8 import check_fp8

        check_fp8(fp8, device, dtype)  # before any weight is read
    cfg = source.model_config
    vae = None
    encoder_src: Any = cfg
    if cfg.codec != "analytic":
        from panowan.models.loading import load_base_model

        base_model = load_base_model(base_model_dir, dtype=dtype, preset=cfg)
        base, vae, encoder_src = base_model.transformer, base_model.vae.to(device).eval(), base_model
        if torch.device(device).type == "cuda" if vae_tiling is None else vae_tiling:
            # Tiled, sliced VAE passes take under 1 GiB at 17 views of 720x1440 instead of 8-11 GiB (BENCHMARKS.md,
            # VAE), for ~2 s more a room: untiled, the encode beside both 14B streams on one 80 GB card is out of memory.
            from panowan.models.loading import enable_vae_memory_savers

            enable_vae_memory_savers(vae)
    else:
        # The trainer's seeded random base (train seed = init_seed); the embedded model overwrites it.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.init_seed)
            base = WanTransformer3DModel(**cfg.wan).eval()
    if groups is None:
        model = DualStreamWan.from_base(base, cfg)
    else:
        model = DualStreamWan.from_base(
            base, cfg, groups.local_streams, groups.make_exchange(), reuse_base=True
        )
    if source.lora is not None:
        add_lora(model, source.lora.rank, source.lora.alpha, source.lora.targets)
    if source.kind == "checkpoint":
        load_trainable(model, source.weights)
    elif source.kind == "embedded":
        load_exported_weights(model, source.weights)
    model = model.to(device, dtype).eval().requires_grad_(False)
    if fp8 != "off":
        apply_fp8(model, fp8)
    if compile:
        model.compile_blocks()
    codec = build_codec(cfg, vae)
    encoder = build_encoder(encoder_src, device=device) if cfg.codec != "analytic" else build_encoder(cfg)
    return model, codec, encoder


def apply_fp8(model, mode: str):
    """`models.fp8.quantize_fp8` of a built inference model, its LoRA adapters folded into the base weights
    first (`models.lora.merge_lora`: the same function, and what float8 should store); logs and returns the
    summary. The model's `lora_settings` are None afterwards."""
    from panowan.models.fp8 import quantize_fp8

    if model.lora_settings is not None:
        from panowan.models.lora import merge_lora

        merge_lora(model)
    summary = quantize_fp8(model, mode)
    log.info("%s", summary)
    return summary


def export_embedded(
    model,
    source_info: dict[str, Any],
    out_dir: str | os.PathLike = ASSETS,
    *,
    compact: bool = True,
    sampling: dict[str, Any] | None = None,
) -> list[Path]:
    """Write a model as the embedded default: its state dict (safetensors) + config json.

    `sampling` (optional): the recommended `{"num_inference_steps": N, "sampler": "unipc" | "euler"}` (plus any
    note of how it was chosen), which `panowan infer` and `panowan demo` use unless their flags say otherwise.

    `compact` (the default) folds the LoRA adapters into the base weights and stores parameters in
    float16, which halves the package size; loading casts back to the model's dtype. The weights of a
    seeded random base plus adapters are then one matrix each, so nothing of the function is lost
    beyond float16 rounding (a test bounds it)."""
    import copy

    import torch
    from safetensors.torch import save_file

    from panowan.models.lora import merge_lora
    from panowan.utils.atomic import atomic_write, atomic_write_json
    from panowan.utils.manifest import manifest_of

    out_dir = Path(out_dir)
    model = copy.deepcopy(model).float().cpu()
    if compact and model.lora_settings is not None:
        merge_lora(model)
    lora = None if model.lora_settings is None else model.lora_settings.to_dict()
    params = {name for name, _ in model.named_parameters()}
    dtype = torch.float16 if compact else torch.float32
    tensors = {k: (v.to(dtype) if k in params else v).contiguous() for k, v in model.state_dict().items()}
    weights = out_dir / EMBEDDED_WEIGHTS
    atomic_write(weights, lambda p: save_file(tensors, str(p)))
    # The config is written after the weights and holds their manifest: a loader verifies the bytes.
    meta = {"format": EMBEDDED_FORMAT, "model": model.config.to_dict(), "lora": lora,
            "weights_dtype": str(dtype).removeprefix("torch."), "train": source_info,
            MANIFEST_KEY: manifest_of(out_dir, [EMBEDDED_WEIGHTS])}  # fmt: skip
    if sampling is not None:
        meta["sampling"] = check_sampling(sampling, "sampling")
    atomic_write_json(out_dir / EMBEDDED_CONFIG, meta)
    return [weights, out_dir / EMBEDDED_CONFIG]


# ------------------------------------------------------------------------------------------- settings
def model_settings(
    source: ModelSource,
    num_frames: int | None = None,
    resolution: int | None = None,
    flow_shift: float | None = None,
) -> tuple[int, int | None, float]:
    """num_frames, resolution, flow_shift: those given, else the training run's values, else defaults."""
    train = source.train_config or {}
    num_frames = num_frames or int(train.get("num_frames", 17))
    resolution = resolution or train.get("resolution")
    flow_shift = flow_shift if flow_shift is not None else float(train.get("flow_shift", 3.0))
    return num_frames, resolution, flow_shift


def check_sampling(sampling: dict[str, Any], where: str) -> dict[str, Any]:
    """`sampling` if it is a valid recommendation (see `export_embedded`), else ValueError naming `where`."""
    steps, sampler = sampling.get("num_inference_steps", 1), sampling.get("sampler", "unipc")
    if not (isinstance(steps, int) and steps >= 1 and sampler in ("unipc", "euler")):
        raise ValueError(f"{where}: bad sampling recommendation {sampling} (num_inference_steps >= 1, sampler "
                         "unipc or euler)")  # fmt: skip
    return sampling


def sampling_settings(
    source: ModelSource, steps: int | None, sampler: str | None, default_steps: int = DEFAULT_STEPS
) -> tuple[int, str]:
    """(steps, sampler): those given, else the exported model's recommendation, else `default_steps` UniPC steps."""
    if steps is None:
        steps = int(source.sampling.get("num_inference_steps", default_steps))
    return steps, sampler or str(source.sampling.get("sampler", "unipc"))
