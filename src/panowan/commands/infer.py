"""`panowan infer`: complete the panoramas of prepared rooms with a trained dual-stream model (the flags of
the Python API, `panowan.sample.completer.Completer`).

Model: a training checkpoint (--checkpoint_dir [--checkpoint_step], plus --base_model_dir for presets with
pretrained weights), or, without both, the default model embedded in the package (panowan/assets).
Writes per room OUTPUT_DIR/{area}/{room}/panorama_XXXX.png, panorama_XXXX_depth.npy (metres),
panorama_XXXX_depth.png (16-bit millimetres), panorama_XXXX_depth_color.png and room.ply (all views fused
in view 0's frame). A room with more views than the model's frames is completed in several passes, so
every view is written (`panowan.sample.multipass`). Inputs are checked (rooms prepared, views present,
checkpoint configuration and LoRA rank) before any model is loaded. The same --seed writes the same files. --timings_json writes the seconds
of each phase to a separate file (the completion files do not change).

Resuming: a room whose output files all exist (`sample.pipeline.room_output_files`) and whose
completion.json records the same seed and sampling settings is skipped unless --overwrite (which first removes the room's completion.json, so a rewrite cut short is redone next time).
SIGTERM / SIGINT: the room being completed is finished and written, no other is begun (under torchrun the
two ranks of a pair agree after each room), and the exit code is 128 + the signal number (143, 130: the
rooms are not all done, so a script does not go on to evaluate them); the same command then completes only
the missing rooms. A second signal kills at once (every file is written atomically; the room is redone).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from panowan.sample import model_source as _model_source
from panowan.sample.model_source import (  # noqa: F401  (re-exported: scripts and tests import them from here)
    DEFAULT_STEPS,
    ModelSource,
    _checkpoint_folder,
    build_model,
    check_sampling,
    export_embedded,
    model_settings,
    sampling_settings,
    weight_settings,
)
from panowan.utils.signals import StopRequest

HELP = "complete the panoramas of prepared rooms (RGB + metric depth + fused point cloud)"
log = logging.getLogger(__name__)

ASSETS = _model_source.ASSETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base_model_dir", default=None, help="pretrained Wan2.1-I2V folder (diffusers or original "
                        "layout); needed with a checkpoint of a preset that uses pretrained weights")  # fmt: skip
    parser.add_argument("--checkpoint_dir", default=None, help="training output folder (or one checkpoint-STEP "
                        "folder); without it and --base_model_dir the embedded default model is used")  # fmt: skip
    parser.add_argument("--model_dir", default=None, help="folder of an exported model (default_model.json + "
                        "default_model.safetensors, as scripts/train_default_model.py writes); default: the "
                        "model embedded in the package")  # fmt: skip
    parser.add_argument("--checkpoint_step", type=int, default=None,
                        help="use CHECKPOINT_DIR/checkpoint-STEP (default: the newest complete one that verifies)")  # fmt: skip
    parser.add_argument("--no_verify", action="store_true", help="do not hash the model's files against their "
                        "manifest (a checkpoint's COMPLETE marker, an export's default_model.json); names and "
                        "sizes are still checked. For huge checkpoints, whose hashing costs a full read; warned")  # fmt: skip
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
    parser.add_argument("--overwrite", action="store_true", help="redo rooms whose completion files all exist "
                        "in --output_dir (default: skip them, so a rerun does only what is missing)")  # fmt: skip
    parser.add_argument("--no_composite", action="store_true", help="write the raw model output (known pixels "
                        "are not copied back from the input)")  # fmt: skip
    parser.add_argument(
        "--no_seam_roll", action="store_true", help="do not roll the latents across the ERP seam"
    )
    parser.add_argument(
        "--preset", default=None, help="expected model preset; refused if the checkpoint differs"
    )
    parser.add_argument("--lora_rank", type=int, default=None,
                        help="expected LoRA rank (0: a model trained in full, without LoRA); refused if the "
                        "checkpoint differs (default: the checkpoint's)")  # fmt: skip
    parser.add_argument("--num_frames", type=int, default=None,
                        help="frames a pass (4k + 1); rooms with more views are completed in several passes "
                        "(default: the model's)")  # fmt: skip
    parser.add_argument("--resolution", type=int, default=None,
                        help="panorama height (multiple of 16) the model runs at (default: the model's)")  # fmt: skip
    parser.add_argument(
        "--point_stride", type=int, default=1, help="room.ply keeps every N-th row and column"
    )
    parser.add_argument("--step_cache", type=float, default=0.0, metavar="THRESHOLD",
                        help="first-block step caching: skip the blocks after the first at steps where the first "
                        "block's residual changed by less than THRESHOLD (relative L1, e.g. 0.05); 0 (default) "
                        "runs every block; the skipped steps are recorded in completion.json")  # fmt: skip
    parser.add_argument("--no_batch_guidance", action="store_true", help="with --guidance_scale > 1, run the "
                        "unconditional pass after the conditional one instead of beside it in one forward of "
                        "batch 2 (half the activation memory, more kernel launches)")  # fmt: skip
    parser.add_argument("--compile", action="store_true", help="torch.compile the model's regions (Wan blocks, "
                        "interaction layers; one graph each kind): faster steps on a GPU after a one-off "
                        "compilation of tens of seconds")  # fmt: skip
    parser.add_argument("--attention_backend", default=None, help="diffusers attention backend for every "
                        "attention (e.g. flash, _native_cudnn, _native_flash, sage; default: PyTorch's SDPA, "
                        "which picks the fastest kernel it has)")  # fmt: skip
    parser.add_argument("--fp8", choices=["off", "weight", "dynamic"], default="off", help="float8 Wan block "
                        "linears (pip install panowan[fp8]): 'weight' stores them in float8 (computed in --dtype; any "
                        "device), 'dynamic' multiplies in float8 too (CUDA sm89+, --dtype bfloat16)")  # fmt: skip
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                        help="model precision")  # fmt: skip
    parser.add_argument("--timings_json", default=None, help="write the wall seconds of each phase here (JSON: "
                        "model loading; per room reading, text + image encoders, VAE encode, denoising, VAE "
                        "decode, writing, total; every rank's share and, on CUDA, peak memory); the device is "
                        "synchronised around each phase. Completion files are unchanged")  # fmt: skip


# ------------------------------------------------------------------------------ model source and rooms
# The model source, model building and room opening live in the sample layer (`panowan.sample.model_source`,
# `panowan.sample.rooms`); the model's names stay importable from here. `ASSETS` here is where this command's
# embedded default is looked up (tests point it elsewhere).


def embedded_source(folder: str | os.PathLike | None = None) -> ModelSource:
    """`panowan.sample.model_source.embedded_source`, with the default model in this module's `ASSETS`."""
    return _model_source.embedded_source(folder, assets=ASSETS)


def resolve_model(args: argparse.Namespace) -> ModelSource:
    """Which model the flags name, checked (preset, LoRA rank) before any weight is read."""
    return _model_source.resolve_model(args, assets=ASSETS)


def _agreed_stop(stop: StopRequest | None, groups, device) -> bool:
    """Whether to stop after this room, the same on both ranks of a pair (they complete rooms together: one
    stopping alone would leave its peer waiting in the exchange). A peer's signal is recorded in `stop`."""
    if stop is None:
        return False
    if groups is None:
        return bool(stop.signum)
    from panowan.parallel.groups import max_over_ranks

    signum = max_over_ranks(stop.signum or 0, device, groups.pair_group)
    if signum:
        stop.request(signum)
    return bool(signum)


def infer(args: argparse.Namespace, stop: StopRequest | None = None) -> list[Path]:
    """The whole command; returns the room folders written. With `stop`, stops after the room in progress
    once it is requested (module docstring)."""
    return _infer(args, stop)[0]


def _infer(args: argparse.Namespace, stop: StopRequest | None) -> tuple[list[Path], int]:
    """`infer`, and how many of this rank's rooms were left undone by a stop."""
    import torch

    from panowan.models.attention import attention_backend
    from panowan.sample.completer import Completer
    from panowan.sample.rooms import missing_rooms, open_rooms
    from panowan.utils.timing import PhaseTimer, memory_record, write_timings

    started = time.perf_counter()

    if args.num_inference_steps is not None and args.num_inference_steps < 1:
        raise ValueError(f"--num_inference_steps must be >= 1, got {args.num_inference_steps}")
    if args.guidance_scale < 1:
        raise ValueError(f"--guidance_scale must be >= 1, got {args.guidance_scale}")
    if args.step_cache < 0:
        raise ValueError(f"--step_cache must be >= 0, got {args.step_cache}")
    backend = attention_backend(args.attention_backend)
    source = resolve_model(args)
    steps, sampler = sampling_settings(source, args.num_inference_steps, args.sampler)
    num_frames, resolution, flow_shift = model_settings(
        source, args.num_frames, args.resolution, args.flow_shift
    )
    dataset, indices = open_rooms(args.data_root, args.rooms, num_frames, resolution, args.seed,
                                  source.model_config.condition_fills())  # fmt: skip
    if not getattr(args, "overwrite", False):
        cache = {"step_cache": args.step_cache} if args.step_cache > 0 else {}
        settings = {"seed": args.seed, "steps": steps, "sampler": sampler, "guidance": args.guidance_scale,
                    "flow_shift": flow_shift, "composite": not args.no_composite, "seam_roll": not args.no_seam_roll,
                    **cache, **weight_settings(source, args.fp8)}  # fmt: skip
        indices = missing_rooms(dataset, indices, args.output_dir, settings)
    groups = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # torchrun: one stream per rank, pairs of ranks; pair p completes rooms p, p + N, ...
        from panowan.parallel.groups import StreamGroups, broadcast_from_rank0, init_distributed

        device = init_distributed()
        groups = StreamGroups.from_world()
        # Rank 0's list on every rank: it scanned the output folder before any rank could have written.
        indices = broadcast_from_rank0(indices)[groups.pair_index :: groups.num_pairs]
    else:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype)
    timed = args.timings_json is not None  # untimed runs never synchronise the device for a clock
    load_timer = PhaseTimer(device, enabled=timed)
    log.info("loading %s", source.description)
    with load_timer.phase("load_model"):
        model, codec, encoder = build_model(source, args.base_model_dir, device, dtype, groups, fp8=args.fp8,
                                            compile=args.compile)  # fmt: skip
    completer = Completer(model, codec, encoder, source, num_frames=num_frames, resolution=resolution,
                          flow_shift=flow_shift, fp8=args.fp8)  # fmt: skip
    writes = groups is None or groups.rank % 2 == 0  # the pair's first rank writes its rooms
    with backend:
        written, room_seconds, left = completer.complete_rooms(
            dataset, indices, args.output_dir, write=writes, point_stride=args.point_stride, timed=timed,
            stop=lambda: _agreed_stop(stop, groups, device), steps=steps, guidance=args.guidance_scale,
            seed=args.seed, sampler=sampler, composite=not args.no_composite, seam_roll=not args.no_seam_roll,
            negative_prompt=args.negative_prompt, progress=True, step_cache=args.step_cache,
            batch_guidance=not args.no_batch_guidance,
        )  # fmt: skip
    if timed:
        record = {"rank": 0 if groups is None else groups.rank, "streams": list(model.local_streams),
                  "writes": writes, "load_model": load_timer.seconds["load_model"], "rooms": room_seconds,
                  "infer": load_timer.now() - started, **memory_record(device)}  # fmt: skip
        write_timings(args.timings_json, record, groups, {
            "device": str(device), "dtype": args.dtype, "steps": steps, "sampler": sampler,
            "num_frames": num_frames, "resolution": resolution,
        })  # fmt: skip
    if groups is not None:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return written, left


def run(args: argparse.Namespace) -> int:
    import sys

    from panowan.utils.signals import StopRequest, exit_code

    with StopRequest() as stop:
        _, left = _infer(args, stop)
    if stop.requested and left:
        # `left`: rooms of this rank (of its pair, under torchrun) not begun.
        print(f"received {stop.signal_name}: stopped with {left} rooms not begun; rerun the same command to "
              "complete them", file=sys.stderr)  # fmt: skip
        return exit_code(stop.signum)
    return 0
