"""`TrainConfig`: every setting of a training run, its command-line flags and its JSON file form.

Each field's `help` metadata is its documentation (shown by `panowan train --help`). Precedence:
dataclass defaults < `--config FILE` (JSON object of field names) < flags given on the command line.
The resolved config is written to `output_dir/config.json` and into every checkpoint.

Flag names follow the original training script (`--base_model_dir`, `--train_batch_size`, ...).
`--resolution` is the panorama height H; the width is 2H.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from panowan.models.presets import CHECKPOINT_POLICIES, CONDITION_FILLS, INTERACTIONS

MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
)  # fmt: skip
ON_NONFINITE = ("skip", "abort")


def _f(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field whose metadata holds its help text (and optional argparse `choices`)."""
    if isinstance(default, list | dict):
        # A fresh copy per instance: a shared list default would leak edits between configs.
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class TrainConfig:
    """A training run. Field docs are the `help` metadata (see `panowan train --help`)."""

    # --- where things are ----------------------------------------------------------------------
    data_root: str = _f(
        "", "data root holding {area}/{room}/ folders (prepared with `panowan prepare`); required"
    )
    output_dir: str = _f(
        "", "run folder: checkpoints, metrics.jsonl, config.json, tensorboard/, validation/; required"
    )
    base_model_dir: str | None = _f(
        None,
        "pretrained Wan2.1-I2V folder (diffusers or original layout); required unless the preset needs no pretrained files (tiny)",
    )
    preset: str = _f(
        "wan2.1-i2v-14b",
        "model size preset (panowan.models.presets): wan2.1-i2v-14b, wan2.1-1.3b-i2v, tiny, small, small-p4, small-w192; "
        "or from_base: "
        "the architecture of --base_model_dir's transformer with interaction layers sized to it",
    )
    config: str | None = _f(
        None, "JSON file of settings (field names as keys); flags given on the command line override it"
    )
    # --- data ------------------------------------------------------------------------------------
    resolution: int = _f(480, "panorama height H in pixels (multiple of 16); the width is 2H")
    num_frames: int = _f(
        17, "views per sample (4k + 1: 5, 9, 13, 17, ...); rooms with more views are sampled down"
    )
    train_batch_size: int = _f(1, "rooms per data-parallel pair per micro-step")
    yaw_augment: bool = _f(
        False,
        "rotate every view of a sample in yaw by a random whole-pixel roll (poses and Plücker maps follow exactly)",
    )
    yaw_step_px: int = _f(8, "yaw rolls are multiples of this many pixels (8 keeps the latent grid aligned)")
    dataloader_workers: int = _f(
        0,
        "threads that read the rooms of a micro-batch in parallel and the next micro-batch while this one "
        "trains (0: the training thread, no read-ahead); the samples and their order do not depend on it",
    )
    cache_files: bool = _f(
        False,
        "keep every decoded room file, processed view and Plücker map in memory after first use: removes "
        "decoding from the step of small panoramas (memory grows to ~30 bytes a pixel a view of the data set)",
    )
    validation_room: str | None = _f(
        None, "room id 'area/room' held out for validation (default: the last room, when validation is on)"
    )
    # --- model -----------------------------------------------------------------------------------
    lora_rank: int = _f(
        32,
        "LoRA rank of each stream's Wan attention projections; 0: no LoRA, every weight of both Wan streams "
        "trains (full fine-tuning: the right choice for a seeded random base such as the small presets, "
        "where low-rank updates learn far slower; memory permitting for a pretrained one)",
    )
    lora_alpha: float | None = _f(None, "LoRA alpha (scaling alpha / rank); default: the rank")
    lora_targets: list[str] = _f(  # noqa: RUF009 (a field() with help metadata)
        ["to_q", "to_k", "to_v", "to_out.0"],
        "module names (suffixes inside each Wan transformer) that get LoRA; e.g. add ffn.net.0.proj ffn.net.2 "
        "proj_out patch_embedding to adapt a model whose base has no pretrained weights",
    )
    interaction_interval: int | None = _f(
        None, "an interaction layer after every N Wan blocks (default: the preset's)"
    )
    interactions: str | None = _f(
        None,
        "which exchanges the model has: pose+cross (the method), pose (no cross-stream exchange), cross (no "
        "pose exchange) or none (independent streams); the ablations; default: the --init_from model's, else "
        "the preset's (pose+cross)",
        choices=INTERACTIONS,
    )
    pixel_decoder_width: int | None = _f(
        None,
        "width of each stream's learnt full-resolution decoding stage (an ERP U-Net trained with the transformer "
        "through the pixel loss; 0: none, the codec decodes alone); default: the --init_from model's, else the "
        "preset's (0)",
    )
    pixel_decoder_levels: int | None = _f(
        None,
        "resolution levels of the pixel decoders' U-Net below the full one (more see farther across a hole); "
        "default: the --init_from model's, else the preset's (4)",
    )
    pixel_decoder_rays: bool | None = _f(
        None,
        "whether the pixel decoders also read each pixel's camera-frame ray direction (--pixel_decoder_rays / "
        "--no-pixel_decoder_rays); default: the --init_from model's, else the preset's (off). Changing a "
        "pixel-decoder setting of an --init_from model starts its decoders fresh",
    )
    rgb_condition_fill: str | None = _f(
        None,
        "what the RGB condition holds in its holes: zero (Wan I2V's convention), or a classical fill (telea, ns, "
        "harmonic, depth_steered, room_shell, shell_gate: the baselines of those names; analytic-codec presets; sampling "
        "decodes RGB as a correction of it); default: the --init_from model's, else the preset's (zero)",
        choices=CONDITION_FILLS,
    )
    depth_condition_fill: str | None = _f(
        None,
        "the same for the depth stream's condition (the normalised depth's holes); default: the --init_from "
        "model's, else the preset's (zero)",
        choices=CONDITION_FILLS,
    )
    init_from: str | None = _f(
        None,
        "exported model folder (default_model.json + .safetensors, as `infer --model_dir` takes) whose weights "
        "start this run instead of the seeded initialisation: chains runs that one lease cannot hold; same "
        "architecture required; LoRA, if any, starts fresh on top; the optimiser and schedule start anew",
    )
    gradient_checkpointing: bool = _f(
        False, "recompute Wan blocks and interaction layers in backward to save memory"
    )
    checkpoint_policy: str = _f(
        "full",
        "with --gradient_checkpointing, what backward recomputes: 'full' (each block whole: least memory) or "
        "'selective' (all but the attention kernels, whose outputs are kept: at long sequences most of the "
        "recompute saved for one B,S,D tensor per block)",
        choices=CHECKPOINT_POLICIES,
    )
    checkpoint_fraction: float = _f(
        1.0,
        "with --gradient_checkpointing, the memory budget: the fraction of each stream's Wan blocks that are "
        "checkpointed (0..1); the others keep every activation for backward (faster, more memory)",
    )
    compile_blocks: bool | None = _f(
        None,
        "torch.compile the model's regions (every Wan block and interaction layer; one compiled graph per kind, "
        "--compile_blocks / --no-compile_blocks); default: on when training on a CUDA GPU, where it pays for its "
        "one-off compilation within tens of steps (1.3B shape, one H100: 2.98 -> 2.25 s a step after about 40 s "
        "of compiling; BENCHMARKS.md), off on a CPU",
    )
    fp8_base: str = _f(
        "off",
        "store the frozen base's Wan-block linears in float8 ('weight': torchao's float8 weight-only quantisation, "
        "one scale per output row; LoRA and every new module train in full precision on top): about half the weight "
        "memory (both 14B streams: 31.6 instead of 61.7 GiB; the 14B step is not yet timed); needs LoRA and torchao "
        "(panowan[fp8]). Infer such a checkpoint with --fp8 weight to see the base it was trained on",
        choices=("off", "weight"),
    )
    # --- optimisation ----------------------------------------------------------------------------
    max_train_steps: int = _f(1000, "optimiser steps of the run (skipped steps count)")
    learning_rate: float = _f(1e-4, "peak AdamW learning rate")
    adam_beta1: float = _f(0.9, "AdamW beta1")
    adam_beta2: float = _f(0.999, "AdamW beta2")
    adam_epsilon: float = _f(1e-8, "AdamW epsilon")
    adam_weight_decay: float = _f(1e-4, "AdamW decoupled weight decay")
    max_grad_norm: float = _f(
        1.0, "clip the global gradient norm (over both streams and all ranks) to this; 0 = no clipping"
    )
    lr_scheduler: str = _f(
        "constant", "LR schedule (diffusers.optimization.get_scheduler)", choices=LR_SCHEDULERS
    )
    lr_warmup_steps: int = _f(0, "linear warm-up steps of the LR schedule")
    gradient_accumulation_steps: int = _f(1, "micro-steps per optimiser step")
    mixed_precision: str = _f("bf16", "autocast precision; fp16 uses a GradScaler", choices=MIXED_PRECISION)
    seed: int = _f(0, "run seed: model init, data order, sigmas and noise")
    # --- flow matching ---------------------------------------------------------------------------
    weighting_scheme: str = _f(
        "logit_normal",
        "SD3 naming: a sigma density (logit_normal, mode, uniform) or a loss weighting with uniform sigma (sigma_sqrt, cosmap, none)",
        choices=("logit_normal", "mode", "uniform", "sigma_sqrt", "cosmap", "none"),
    )
    logit_mean: float = _f(0.0, "mean of the normal behind logit_normal sigmas")
    logit_std: float = _f(1.0, "standard deviation of the normal behind logit_normal sigmas")
    mode_scale: float = _f(1.29, "scale of SD3's mode sampling")
    flow_shift: float = _f(3.0, "Wan's timestep shift: sigma' = shift s / (1 + (shift - 1) s)")
    # --- losses ----------------------------------------------------------------------------------
    mse_weight: float = _f(1.0, "weight of the flow-matching MSE")
    hole_weight: float = _f(
        0.0, "extra MSE weight of latent positions not known from view 0 (weight 1 + hole_weight)"
    )
    structural_weight: float = _f(
        0.1, "weight of the latent structural-consistency loss (patch self-similarity of x0)"
    )
    structural_patch: int = _f(2, "latent cells per side of the pooled patches of the structural loss")
    global_weight: float = _f(
        0.1, "weight of the latent global-consistency loss (per-view channel statistics of x0)"
    )
    ssim_weight: float = _f(0.1, "weight of the SSIM loss on decoded x0 frames (RGB and depth)")
    ssim_latent_frames: int = _f(2, "SSIM budget: decode this many leading latent frames (1 + 4(k-1) views)")
    ssim_crop: list[int] | None = _f(  # noqa: RUF009 (a field() with help metadata)
        [32, 64],
        "SSIM budget: decode a random crop of ROWS COLS latent cells (clipped to the panorama). The default,"
        " 256x512 pixels, costs 8.9 GiB through the Wan VAE decoder with gradient; a whole 720x1440 panorama"
        " does not fit an 80 GB card (BENCHMARKS.md)",
        nargs=2,
    )
    pixel_weight: float = _f(
        1.0,
        "weight of the pixel decoders' loss (decoded x0 against the ground truth in the holes: RGB L1 + MSE, depth "
        "L1 of the normalised log depth); used only by models with pixel decoders",
    )
    pixel_frames: int = _f(1, "pixel-loss budget: target views per sample decoded at full resolution")
    latitude_weighting: bool = _f(False, "weight every loss by cos(latitude) (solid angle of ERP rows)")
    # --- checkpoints, faults ---------------------------------------------------------------------
    checkpointing_steps: int = _f(
        500, "write output_dir/checkpoint-STEP every N optimiser steps (and at the end)"
    )
    checkpoints_total_limit: int | None = _f(None, "keep only the newest N complete checkpoints")
    resume_from_checkpoint: str = _f(
        "latest",
        "'latest' (newest complete checkpoint in output_dir, if any), 'none', or a checkpoint folder",
    )
    verify_checkpoints: bool = _f(
        True,
        "before resuming, hash every file of the checkpoint against the manifest in its COMPLETE marker (and "
        "an --init_from export against its own); a file that is missing, resized or changed is named, and "
        "'latest' falls back to the newest checkpoint that verifies. --no-verify_checkpoints checks names and "
        "sizes only (huge checkpoints, whose hashing costs a full read), with a warning",
    )
    on_nonfinite: str = _f(
        "skip",
        "a non-finite loss or grad norm on any rank: all ranks skip the step, or abort",
        choices=ON_NONFINITE,
    )
    max_skip_fraction: float = _f(
        0.1,
        "stop with an error when the fraction of corrupt rooms, or of skipped steps (after 10), exceeds this",
    )
    nccl_timeout_s: float = _f(
        600.0, "collective timeout: a dead rank ends the job after this instead of hanging it"
    )
    # --- watching --------------------------------------------------------------------------------
    validation_steps: int = _f(
        0, "every N optimiser steps sample the held-out room and write images (0 = off)"
    )
    validation_sampling_steps: int = _f(20, "sampling steps of the validation completion")
    tensorboard: bool = _f(True, "write TensorBoard scalars to output_dir/tensorboard")
    progress: bool = _f(True, "tqdm progress bar on rank 0")

    def __post_init__(self) -> None:
        self._check_required()
        self._check_ranges()

    @property
    def width(self) -> int:
        """Panorama width: twice `resolution`."""
        return 2 * self.resolution

    @property
    def height(self) -> int:
        return self.resolution

    def _init_model(self) -> dict[str, Any] | None:
        """The `DualStreamConfig` dict of the --init_from export (None without one): what a run inherits."""
        if not self.init_from:
            return None
        from panowan.models.exported import read_exported

        return read_exported(self.init_from)[0]["model"]

    def condition_fills(self) -> dict[str, str]:
        """Each stream's condition fill ({"rgb": ..., "depth": ...}): the flag, else the --init_from model's,
        else the preset's."""
        init = self._init_model()
        if init is not None:
            from panowan.models.presets import DualStreamConfig

            inherited = DualStreamConfig.from_dict(init).condition_fills()
        elif self.preset == "from_base":
            inherited = {"rgb": "zero", "depth": "zero"}
        else:
            from panowan.models.presets import get_preset

            inherited = get_preset(self.preset).condition_fills()
        flags = {"rgb": self.rgb_condition_fill, "depth": self.depth_condition_fill}
        return {s: flags[s] or inherited[s] for s in inherited}

    def architecture_overrides(self) -> dict[str, Any]:
        """`DualStreamConfig` fields this run sets beyond the preset: `interactions` and the pixel decoders'
        settings from their flags, else from the --init_from model (whose architecture a run must keep, the
        pixel decoders' aside)."""
        inherited = self._init_model() or {}
        out = {}
        for name in ("interactions", "pixel_decoder_width", "pixel_decoder_levels", "pixel_decoder_rays"):
            value = getattr(self, name)
            value = inherited.get(name) if value is None else value
            if value is not None:
                out[name] = value
        return out

    def needs_pretrained(self) -> bool:
        """True unless the preset builds everything from scratch (its codec needs no VAE weights)."""
        from panowan.models.presets import get_preset

        return self.preset == "from_base" or get_preset(self.preset).codec != "analytic"

    def _check_required(self) -> None:
        if not self.data_root:
            raise ValueError("--data_root is required")
        if self.init_from:
            from panowan.models.exported import read_exported

            read_exported(self.init_from)  # a missing or foreign folder fails here, before any heavy work
        if not self.output_dir:
            raise ValueError("--output_dir is required")
        if self.needs_pretrained() and not self.base_model_dir:
            raise ValueError(
                f"--base_model_dir is required with preset {self.preset!r} (only the analytic-codec presets tiny, small, small-p4 need no pretrained files)"
            )
        if not self.needs_pretrained() and self.base_model_dir:
            warnings.warn(
                f"preset {self.preset!r} uses no pretrained files; --base_model_dir is ignored", stacklevel=3
            )
        if not self.gradient_checkpointing and (
            self.checkpoint_policy != "full" or self.checkpoint_fraction != 1.0
        ):
            warnings.warn(
                "--checkpoint_policy / --checkpoint_fraction are ignored without --gradient_checkpointing",
                stacklevel=3,
            )
        if self.lora_rank == 0 and (
            self.lora_alpha is not None or self.lora_targets != _FIELDS["lora_targets"].default_factory()
        ):
            warnings.warn("--lora_rank 0 trains the streams in full: --lora_alpha and --lora_targets are ignored",
                          stacklevel=3)  # fmt: skip

    def _check_ranges(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        need(
            0.0 <= self.checkpoint_fraction <= 1.0,
            f"--checkpoint_fraction must be in [0, 1], got {self.checkpoint_fraction}",
        )

        need(
            self.resolution > 0 and self.resolution % 16 == 0,
            f"--resolution must be a positive multiple of 16, got {self.resolution}",
        )
        need(
            self.num_frames >= 5 and self.num_frames % 4 == 1,
            f"--num_frames must be 4k + 1 >= 5, got {self.num_frames}",
        )
        for name in ("train_batch_size", "max_train_steps", "gradient_accumulation_steps", "checkpointing_steps",
                     "structural_patch", "ssim_latent_frames", "pixel_frames", "validation_sampling_steps", "yaw_step_px"):  # fmt: skip
            need(getattr(self, name) >= 1, f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lora_rank", "lr_warmup_steps", "validation_steps", "dataloader_workers", "max_grad_norm", "hole_weight", "mse_weight",
                     "structural_weight", "global_weight", "ssim_weight", "pixel_weight", "adam_weight_decay"):  # fmt: skip
            need(getattr(self, name) >= 0, f"--{name} must be >= 0, got {getattr(self, name)}")
        need(self.learning_rate > 0, f"--learning_rate must be positive, got {self.learning_rate}")
        need(self.flow_shift > 0, f"--flow_shift must be positive, got {self.flow_shift}")
        need(self.logit_std > 0, f"--logit_std must be positive, got {self.logit_std}")
        need(
            0 <= self.max_skip_fraction <= 1,
            f"--max_skip_fraction must be in [0, 1], got {self.max_skip_fraction}",
        )
        need(self.nccl_timeout_s > 0, f"--nccl_timeout_s must be positive, got {self.nccl_timeout_s}")
        need(self.checkpoints_total_limit is None or self.checkpoints_total_limit >= 1,
             f"--checkpoints_total_limit must be >= 1, got {self.checkpoints_total_limit}")  # fmt: skip
        need(self.pixel_decoder_width is None or self.pixel_decoder_width >= 0,
             f"--pixel_decoder_width must be >= 0, got {self.pixel_decoder_width}")  # fmt: skip
        need(self.pixel_decoder_levels is None or 1 <= self.pixel_decoder_levels <= 8,
             f"--pixel_decoder_levels must be in [1, 8], got {self.pixel_decoder_levels}")  # fmt: skip
        need(self.interaction_interval is None or self.interaction_interval >= 1,
             f"--interaction_interval must be >= 1, got {self.interaction_interval}")  # fmt: skip
        need(self.ssim_crop is None or (len(self.ssim_crop) == 2 and min(self.ssim_crop) >= 2),
             f"--ssim_crop needs two sizes >= 2 (latent rows, cols), got {self.ssim_crop}")  # fmt: skip
        need(
            self.width % self.yaw_step_px == 0,
            f"--yaw_step_px {self.yaw_step_px} must divide the width {self.width}",
        )
        need(self.fp8_base == "off" or self.lora_rank >= 1, f"--fp8_base {self.fp8_base} freezes the base in "
             "float8, so only LoRA can adapt it: give --lora_rank >= 1 (0 trains every base weight)")  # fmt: skip
        for name, value in (("mixed_precision", self.mixed_precision), ("lr_scheduler", self.lr_scheduler),
                            ("fp8_base", self.fp8_base),
                            ("on_nonfinite", self.on_nonfinite), ("weighting_scheme", self.weighting_scheme),
                            *((("interactions", self.interactions),) if self.interactions else ()),
                            *((f, getattr(self, f)) for f in ("rgb_condition_fill", "depth_condition_fill")
                              if getattr(self, f))):  # fmt: skip
            choices = _FIELDS[name].metadata["choices"]
            need(value in choices, f"--{name} must be one of {choices}, got {value!r}")
        from panowan.models.presets import PRESET_NAMES

        presets = (*PRESET_NAMES, "from_base")
        need(self.preset in presets, f"--preset must be one of {presets}, got {self.preset!r}")
        for flag in ("rgb_condition_fill", "depth_condition_fill"):
            fill = getattr(self, flag)
            need(fill in (None, "zero") or not self.needs_pretrained(),
                 f"--{flag} {fill} needs an analytic-codec preset (tiny, small, ...), not {self.preset!r}")  # fmt: skip
        if self.mse_weight + self.structural_weight + self.global_weight + self.ssim_weight == 0:
            raise ValueError("every loss weight is 0: nothing to train")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any], source: str = "config") -> TrainConfig:
        unknown = sorted(set(obj) - set(_FIELDS))
        if unknown:
            raise ValueError(f"{source}: unknown settings {unknown}")
        return cls(**obj)


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# Settings that may change between a run and its resumption without changing its result.
RESUME_NEUTRAL = ("config", "resume_from_checkpoint", "progress", "tensorboard", "max_train_steps",
                  "checkpointing_steps", "checkpoints_total_limit", "validation_steps", "nccl_timeout_s",
                  "verify_checkpoints")  # fmt: skip


def _base_type(hint: Any) -> Any:
    """`int | None` -> int; `list[int] | None` -> list[int]."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        assert len(args) == 1, hint
        return args[0]
    return hint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field. Defaults are SUPPRESSed so that `config_from_args` knows what was given."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        kind = _base_type(hints[f.name])
        meta = f.metadata
        help_text = f"{meta['help']} (default: {f.default if f.default is not dataclasses.MISSING else None})"
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_text.replace("%", "%%")}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is list:
            kwargs.update(type=typing.get_args(kind)[0], nargs=meta.get("nargs", "+"), metavar="N")
        else:
            kwargs["type"] = kind
        if "choices" in meta:
            kwargs["choices"] = meta["choices"]
        parser.add_argument(f"--{f.name}", **kwargs)


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"--config {path}: no such file") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"--config {path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"--config {path}: must hold a JSON object of settings")
    return obj


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults < `--config` file < flags given on the command line."""
    given = {name: getattr(args, name) for name in _FIELDS if hasattr(args, name)}
    merged: dict[str, Any] = {}
    if given.get("config"):
        merged.update(load_config_file(given["config"]))
        merged.pop("config", None)
        source = f"--config {given['config']}"
    else:
        source = "config"
    merged.update(given)
    return TrainConfig.from_dict(merged, source)


def changed_settings(saved: dict[str, Any], current: TrainConfig) -> list[str]:
    """Names of the settings that differ from a saved config, ignoring those that do not change results."""
    now = current.to_dict()
    return sorted(k for k in set(saved) | set(now) if k not in RESUME_NEUTRAL and saved.get(k) != now.get(k))
