"""Complete the panoramas of prepared rooms with a trained dual-stream model.

Model: a training checkpoint (--checkpoint_dir [--checkpoint_step], plus --base_model_dir for presets with
pretrained weights), or, without both, the default model embedded in the package (panowan/assets).
Writes per room OUTPUT_DIR/{area}/{room}/panorama_XXXX.png, panorama_XXXX_depth.npy (metres),
panorama_XXXX_depth.png (16-bit millimetres), panorama_XXXX_depth_color.png and room.ply (all views fused
in view 0's frame). Inputs are checked (rooms prepared, views present, checkpoint configuration and LoRA
rank) before any model is loaded. The same --seed writes the same files. --timings_json writes the seconds
of each phase to a separate file (the completion files do not change).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from panowan.models.exported import (
    EMBEDDED_CONFIG,
    EMBEDDED_FORMAT,
    EMBEDDED_WEIGHTS,
    load_exported_weights,
    read_exported,
)

HELP = "complete the panoramas of prepared rooms (RGB + metric depth + fused point cloud)"
log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_STEPS = 50
"""Sampling steps of a model that recommends none (a training checkpoint): the original script's default."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base_model_dir", default=None, help="pretrained Wan2.1-I2V folder (diffusers or original "
                        "layout); needed with a checkpoint of a preset that uses pretrained weights")  # fmt: skip
    parser.add_argument("--checkpoint_dir", default=None, help="training output folder (or one checkpoint-STEP "
                        "folder); without it and --base_model_dir the embedded default model is used")  # fmt: skip
    parser.add_argument("--model_dir", default=None, help="folder of an exported model (default_model.json + "
                        "default_model.safetensors, as scripts/train_default_model.py writes); default: the "
                        "model embedded in the package")  # fmt: skip
    parser.add_argument("--checkpoint_step", type=int, default=None,
                        help="use CHECKPOINT_DIR/checkpoint-STEP (default: the newest complete one)")  # fmt: skip
    parser.add_argument("--data_root", required=True, help="prepared rooms: DATA_ROOT/{area}/{room}/")
    parser.add_argument("--output_dir", required=True, help="where completions are written")
    parser.add_argument("--num_inference_steps", type=int, default=None,
                        help="sampling steps (default: the exported model's recommended sampling, else 50)")  # fmt: skip
    parser.add_argument("--guidance_scale", type=float, default=1.0,
                        help="classifier-free guidance; > 1 adds a pass with the negative prompt")  # fmt: skip
    parser.add_argument(
        "--negative_prompt", default="", help="prompt of the unconditional pass (guidance > 1)"
    )
    parser.add_argument("--seed", type=int, default=0, help="noise seed (each stream derives its own)")
    parser.add_argument("--sampler", choices=["unipc", "euler"], default=None,
                        help="flow-matching solver (default: the exported model's recommended sampling, else unipc)")  # fmt: skip
    parser.add_argument("--flow_shift", type=float, default=None,
                        help="timestep shift of the schedule (default: the checkpoint's training value, else 3)")  # fmt: skip
    parser.add_argument("--rooms", nargs="*", default=None, help="only these room ids ('area/room')")
    parser.add_argument("--no_composite", action="store_true", help="write the raw model output (known pixels "
                        "are not copied back from the input)")  # fmt: skip
    parser.add_argument(
        "--no_seam_roll", action="store_true", help="do not roll the latents across the ERP seam"
    )
    parser.add_argument("--no_refiner", action="store_true", help="skip the model's depth refiner (the learnt "
                        "per-pixel correction of the decoded depth in the holes; see DualStreamConfig."
                        "depth_refiner_width), to see the diffusion model's own depth")  # fmt: skip
    parser.add_argument(
        "--preset", default=None, help="expected model preset; refused if the checkpoint differs"
    )
    parser.add_argument("--lora_rank", type=int, default=None,
                        help="expected LoRA rank (0: a model trained in full, without LoRA); refused if the "
                        "checkpoint differs (default: the checkpoint's)")  # fmt: skip
    parser.add_argument("--num_frames", type=int, default=None,
                        help="views per room (4k + 1); rooms with more are sampled down (default: the model's)")  # fmt: skip
    parser.add_argument("--resolution", type=int, default=None,
                        help="panorama height (multiple of 16) the model runs at (default: the model's)")  # fmt: skip
    parser.add_argument(
        "--point_stride", type=int, default=1, help="room.ply keeps every N-th row and column"
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                        help="model precision")  # fmt: skip
    parser.add_argument("--timings_json", default=None, help="write the wall seconds of each phase here (JSON: "
                        "model loading; per room reading, text + image encoders, VAE encode, denoising, VAE "
                        "decode, writing, total; every rank's share and, on CUDA, peak memory); the device is "
                        "synchronised around each phase. Completion files are unchanged")  # fmt: skip


# ------------------------------------------------------------------------------------------ model source
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


def _checkpoint_folder(checkpoint_dir: Path, step: int | None) -> Path:
    from panowan.train.checkpoint import complete_checkpoints, is_complete

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
        found = complete_checkpoints(checkpoint_dir)
        if not found:
            raise ValueError(f"{checkpoint_dir}: holds no complete checkpoint-STEP folder")
        folder = found[-1][1]
    if (folder / "weights").is_dir() and not is_complete(folder):
        raise ValueError(
            f"{folder}: checkpoint is incomplete (no COMPLETE marker; the run stopped while saving)"
        )
    return folder


def resolve_model(args: argparse.Namespace) -> ModelSource:
    """Which model to load, checked against the flags (preset, LoRA rank) before any weight is read."""
    import json

    from panowan.models.lora import read_trainable_config
    from panowan.models.presets import NOT_ARCHITECTURE, get_preset

    if args.model_dir and (args.checkpoint_dir or args.base_model_dir):
        raise ValueError(
            "--model_dir is an exported model: pass it alone, not with --checkpoint_dir / --base_model_dir"
        )
    if args.checkpoint_dir:
        folder = _checkpoint_folder(Path(args.checkpoint_dir), args.checkpoint_step)
        weights = folder / "weights" if (folder / "weights").is_dir() else folder
        lora, config = read_trainable_config(weights)
        train_cfg = {}
        if (folder / "config.json").is_file():
            train_cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        source = ModelSource("checkpoint", config, lora, weights, train_cfg, f"checkpoint {folder}")
    elif args.base_model_dir:
        raise ValueError(
            "--base_model_dir alone has no trained dual-stream weights: pass --checkpoint_dir too"
        )
    elif args.checkpoint_step is not None:
        raise ValueError("--checkpoint_step needs --checkpoint_dir")
    else:
        source = embedded_source(args.model_dir)
    cfg = source.model_config
    if args.preset is not None:
        preset = get_preset(args.preset)
        # A run may change how often the streams interact, its seed and its condition fill, not the
        # architecture of a preset.
        diff = preset.differences(cfg, ignore=("interaction_interval", *NOT_ARCHITECTURE))
        if diff:
            raise ValueError(f"{source.description} was trained with another model configuration than preset "
                             f"{args.preset!r} (differs in {diff})")  # fmt: skip
    if args.lora_rank is not None:
        have = 0 if source.lora is None else source.lora.rank
        if have != args.lora_rank:
            raise ValueError(
                f"{source.description} has LoRA rank {have}, but --lora_rank is {args.lora_rank}"
            )
    if cfg.codec != "analytic" and not args.base_model_dir:
        raise ValueError(
            f"{source.description} uses the pretrained Wan VAE and transformer: pass --base_model_dir"
        )
    if args.base_model_dir and cfg.codec == "analytic":
        warnings.warn("the model needs no pretrained files; --base_model_dir is ignored", stacklevel=2)
    return source


def embedded_source(folder: str | os.PathLike | None = None) -> ModelSource:
    """An exported model in `folder`; by default the one shipped in panowan/assets, or (with a warning)
    an untrained initialisation when the package holds none."""
    from panowan.models.lora import LoraSettings
    from panowan.models.presets import DualStreamConfig, get_preset

    root = ASSETS if folder is None else Path(folder)
    if folder is None and not (root / EMBEDDED_CONFIG).is_file() and not (root / EMBEDDED_WEIGHTS).is_file():
        warnings.warn(
            f"no trained default model in {ASSETS} ({EMBEDDED_CONFIG} + {EMBEDDED_WEIGHTS}): using an UNTRAINED "
            "initialisation of the tiny preset; its completions are noise, not results",
            stacklevel=2,
        )
        return ModelSource("untrained", get_preset("tiny"), None, None, {}, "untrained tiny model")
    meta, weights = read_exported(root)
    check_sampling(meta.get("sampling", {}), str(root / EMBEDDED_CONFIG))
    lora = None if meta["lora"] is None else LoraSettings.from_dict(meta["lora"])
    config = DualStreamConfig.from_dict(meta["model"])
    described = f"embedded model {weights}" + (
        " with its depth refiner" if config.depth_refiner_width else ""
    )
    return ModelSource("embedded", config, lora, weights, meta.get("train", {}), described,
                       meta.get("sampling", {}))  # fmt: skip


def build_model(source: ModelSource, base_model_dir: str | None, device, dtype, groups=None):
    """(model, codec, encoder) for a resolved source. Heavy: reads the weights.

    `groups` (`panowan.parallel.groups.StreamGroups`, under torchrun) restricts the model to this rank's stream
    and connects it to its peer; default: one process holds both streams."""
    import torch
    from diffusers import WanTransformer3DModel

    from panowan.models.codec import build_codec
    from panowan.models.dual_stream import DualStreamWan
    from panowan.models.encoders import build_encoder
    from panowan.models.lora import add_lora, load_trainable

    cfg = source.model_config
    vae = None
    encoder_src: Any = cfg
    if cfg.codec != "analytic":
        from panowan.models.loading import load_base_model

        base_model = load_base_model(base_model_dir, dtype=dtype, preset=cfg)
        base, vae, encoder_src = base_model.transformer, base_model.vae.to(device).eval(), base_model
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
    codec = build_codec(cfg, vae)
    encoder = build_encoder(encoder_src, device=device) if cfg.codec != "analytic" else build_encoder(cfg)
    return model, codec, encoder


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
    meta = {"format": EMBEDDED_FORMAT, "model": model.config.to_dict(), "lora": lora,
            "weights_dtype": str(dtype).removeprefix("torch."), "train": source_info}  # fmt: skip
    if sampling is not None:
        meta["sampling"] = check_sampling(sampling, "sampling")
    atomic_write_json(out_dir / EMBEDDED_CONFIG, meta)
    return [weights, out_dir / EMBEDDED_CONFIG]


# ------------------------------------------------------------------------------------------------- data
def open_rooms(data_root: str, rooms: list[str] | None, num_frames: int, resolution: int | None, seed: int,
               fills: dict[str, str] | None = None):  # fmt: skip
    """(dataset, indices of the rooms to complete); every room validated (prepared, views, poses).
    `fills`: the model's `condition_fills()` (what each stream's condition holds in its holes)."""
    from panowan.data.dataset import RoomDataset

    if not Path(data_root).is_dir():
        raise ValueError(f"{data_root}: data root is not a directory")
    fills = fills or {}
    dataset = RoomDataset(data_root, num_frames=num_frames, height=resolution, seed=seed,
                          cond_fill=fills.get("rgb", "zero"), cond_depth_fill=fills.get("depth", "zero"))  # fmt: skip
    ids = [info.paths.room_id for info in dataset.rooms]
    if rooms is None:
        return dataset, list(range(len(ids)))
    missing = sorted(set(rooms) - set(ids))
    if missing:
        raise ValueError(f"{data_root}: rooms {missing} not found or unusable (usable: {ids[:10]})")
    return dataset, [ids.index(r) for r in rooms]


def default_settings(source: ModelSource, args: argparse.Namespace) -> tuple[int, int | None, float]:
    """num_frames, resolution, flow_shift: flags, else the training run's values, else defaults."""
    train = source.train_config or {}
    num_frames = args.num_frames or int(train.get("num_frames", 17))
    resolution = args.resolution or train.get("resolution")
    flow_shift = args.flow_shift if args.flow_shift is not None else float(train.get("flow_shift", 3.0))
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


def infer(args: argparse.Namespace) -> list[Path]:
    """The whole command; returns the room folders written."""
    import torch

    from panowan.sample.pipeline import complete_room, write_completion
    from panowan.utils.timing import PhaseTimer

    started = time.perf_counter()

    if args.num_inference_steps is not None and args.num_inference_steps < 1:
        raise ValueError(f"--num_inference_steps must be >= 1, got {args.num_inference_steps}")
    if args.guidance_scale < 1:
        raise ValueError(f"--guidance_scale must be >= 1, got {args.guidance_scale}")
    source = resolve_model(args)
    if args.no_refiner and not source.model_config.depth_refiner_width:
        warnings.warn(f"{source.description} has no depth refiner; --no_refiner is ignored", stacklevel=2)
    steps, sampler = sampling_settings(source, args.num_inference_steps, args.sampler)
    num_frames, resolution, flow_shift = default_settings(source, args)
    dataset, indices = open_rooms(args.data_root, args.rooms, num_frames, resolution, args.seed,
                                  source.model_config.condition_fills())  # fmt: skip
    groups = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # torchrun: one stream per rank, pairs of ranks; pair p completes rooms p, p + N, ...
        from panowan.parallel.groups import StreamGroups, init_distributed

        device = init_distributed()
        groups = StreamGroups.from_world()
        indices = indices[groups.pair_index :: groups.num_pairs]
    else:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype)
    timed = args.timings_json is not None  # untimed runs never synchronise the device for a clock
    load_timer = PhaseTimer(device, enabled=timed)
    log.info("loading %s", source.description)
    with load_timer.phase("load_model"):
        model, codec, encoder = build_model(source, args.base_model_dir, device, dtype, groups)
    writes = groups is None or groups.rank % 2 == 0  # the pair's first rank writes its rooms
    written = []
    room_seconds: dict[str, dict[str, float]] = {}
    for index in indices:
        timer = PhaseTimer(device, enabled=timed)
        with timer.phase("total"):
            with timer.phase("read"):
                sample = dataset[index]
            info = dataset.rooms[index]
            poses = [info.poses[info.views.index(v)] for v in sample.view_indices]
            completion = complete_room(
                model, codec, encoder, sample, steps=steps, guidance=args.guidance_scale,
                seed=args.seed, sampler=sampler, flow_shift=flow_shift, composite=not args.no_composite,
                seam_roll=not args.no_seam_roll, negative_prompt=args.negative_prompt, timer=timer,
                refine=not args.no_refiner,
            )  # fmt: skip
            completion.settings["model"] = source.description if source.kind == "checkpoint" else source.kind
            if writes:
                with timer.phase("write"):
                    written.append(
                        write_completion(args.output_dir, completion, poses, point_stride=args.point_stride)
                    )
                log.info("wrote %s", written[-1])
        room_seconds[sample.room_id] = timer.seconds
    if timed:
        record = {"rank": 0 if groups is None else groups.rank, "streams": list(model.local_streams),
                  "writes": writes, "load_model": load_timer.seconds["load_model"], "rooms": room_seconds,
                  "infer": load_timer.now() - started, **_memory_record(device)}  # fmt: skip
        write_timings(args.timings_json, record, groups, {
            "device": str(device), "dtype": args.dtype, "steps": steps, "sampler": sampler,
            "num_frames": num_frames, "resolution": resolution,
        })  # fmt: skip
    if groups is not None:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return written


def _memory_record(device) -> dict[str, Any]:
    """Peak CUDA memory of this process (GiB), or nothing off CUDA."""
    import torch

    if device.type != "cuda":
        return {}
    return {"peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30,
            "device_name": torch.cuda.get_device_name(device)}  # fmt: skip


def write_timings(path: str, record: dict[str, Any], groups, settings: dict[str, Any]) -> None:
    """Gather every rank's phase seconds (`record`); rank 0 writes them to `path` (JSON, seconds).

    Top level: the first rank's `load_model`, `infer` (from the command's start to the end of its rooms) and
    `peak_memory_gib` (the largest of any rank, on CUDA); `rooms` (each room as timed by the rank that wrote
    it); `ranks` (every rank's own record). Every rank must call this (a collective under torchrun)."""
    from panowan.utils.atomic import atomic_write_json

    records = [record]
    if groups is not None:
        import torch.distributed as dist

        records = [None] * groups.world_size
        dist.all_gather_object(records, record)
    if record["rank"] != 0:
        return
    first = records[0]
    out = {**settings, "world_size": len(records), "load_model": first["load_model"], "infer": first["infer"],
           "rooms": {k: v for r in records if r["writes"] for k, v in r["rooms"].items()}, "ranks": records}  # fmt: skip
    peaks = [r["peak_memory_gib"] for r in records if "peak_memory_gib" in r]
    if peaks:
        out["peak_memory_gib"] = max(peaks)
        out["device_name"] = first["device_name"]
    atomic_write_json(path, out)


def run(args: argparse.Namespace) -> int:
    infer(args)
    return 0
