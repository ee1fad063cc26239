"""GPU benchmark: the wall time of a whole `panowan infer` of one room (17 views of 720 x 1440) with the 14B
Wan I2V model, its VAE and its real-size encoders (UMT5-XXL, CLIP ViT-H/14), random weights, on 2 GPUs.

    python benchmarks/bench_infer_room.py --out infer_room.json                 # 14B, torchrun on 2 GPUs
    python benchmarks/bench_infer_room.py --scale tiny --views 5 --height 64 --steps 2 --out tiny.json  # CPU

Steps (one command):
1. a diffusers-layout base folder with random weights in --workdir (`panowan.models.replicas`: the models
   are built on the GPU in bf16, the VAE in float32, and saved as sharded safetensors);
   meanwhile, in the background, `panowan synth` + `panowan prepare` make one room (CPU work);
2. checkpoint-0 of a `panowan train --preset from_base` run that never stepped: each stream's LoRA,
   interaction layers and PluckerNet at their initial values, written by `save_trainable` from a model
   whose base weights are allocated but never initialised (so no 14B model is built or held on the CPU);
3. `torchrun --standalone --nproc_per_node=N -m panowan infer ... --timings_json`, timed from process
   start to exit (imports, loading and writing included), with the phase seconds the command reports;
4. the plain diffusers `WanTransformer3DModel` loaded from the folder onto one device: its single-stream
   forward at the same shape (warm-up, then the median of --forward_iters), for the ratio
   infer wall / (steps x plain forward).
Prints a table and writes JSON to --out after every step (a run cut short keeps what it measured).
The work folder (about 46 GB at 14B) is deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from panowan.models.replicas import (
    build_i2v_parts,
    tiny_i2v_sizes,
    wan_i2v_14b_sizes,
    write_diffusers_layout,
)
from wan_bench_utils import Shape, empty_wan, random_inputs, summary, time_cuda

ROOM = "area_000/room_0000"
ROOM_PHASES = ("read", "encoders", "vae_encode", "denoise", "vae_decode", "write", "total")

# Seconds per phase of the 14B run on 2 H100/H200, for the printed estimate. From benchmarks/results: the 14B
# forward at this shape takes 1.9 s on an H200 (a denoising step ~2 s), saving its 33 GB 41 s, a VAE pass
# 1-2.5 s; reading and writing one room measured on a CPU (9 s, 6 s); loading is a guess. Steps scale.
ESTIMATE_14B = {
    "build + write base folder (46 GB)": 75.0,
    "wait for synth + prepare (overlapping the write)": 15.0,
    "checkpoint": 10.0,
    "infer: start + load model": 60.0,
    "infer: read, encoders, VAE encode + decode, write": 30.0,
    "plain forward: load + 4 forwards": 25.0,
    "delete work folder": 5.0,
}
STEP_SECONDS_14B = 2.2
PLAIN_FORWARD_RESERVE_S = 45.0  # left to the plain forward when the infer run's time limit is set


# ------------------------------------------------------------------------------------------------ setup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=["14b", "tiny"], default="14b",
                   help="14b: real sizes on CUDA in bf16; tiny: tiny models on the CPU in float32 (a check)")  # fmt: skip
    p.add_argument("--views", type=int, default=17, help="views of the room (4k + 1)")
    p.add_argument("--height", type=int, default=720, help="panorama height (multiple of 16); width 2H")
    p.add_argument("--steps", type=int, default=50, help="sampling steps of the infer run")
    p.add_argument("--nproc", type=int, default=2, help="infer processes (one stream each; 2N = N pairs)")
    p.add_argument("--workers", type=int, default=1,
                   help="synth / prepare worker processes; they parallelise over rooms, so for one room 1 "
                        "(in-process, every core for torch) is fastest")  # fmt: skip
    p.add_argument("--fp8", choices=["off", "weight", "dynamic"], default="off",
                   help="passed to `panowan infer --fp8` (float8 block weights; the plain forward stays bf16)")  # fmt: skip
    p.add_argument("--forward_iters", type=int, default=3, help="timed plain forwards (after one warm-up)")
    p.add_argument("--budget_s", type=float, default=570.0,
                   help="time limit of the whole benchmark: the infer run is killed when it would leave less "
                        f"than {PLAIN_FORWARD_RESERVE_S:.0f} s for the plain forward")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, the room and the noise")
    p.add_argument("--workdir", default="/tmp/bench_infer_room", help="scratch folder (emptied first)")
    p.add_argument("--out", default="bench_infer_room.json", help="JSON output path")
    p.add_argument("--keep", action="store_true", help="keep --workdir")
    args = p.parse_args(argv)
    if args.views < 5 or args.views % 4 != 1:
        p.error(f"--views must be 4k + 1 >= 5, got {args.views}")
    if args.height % 16:
        p.error(f"--height must be a multiple of 16, got {args.height}")
    if args.nproc != 1 and args.nproc % 2:
        p.error(f"--nproc must be 1 or even (one stream per process), got {args.nproc}")
    return args


@dataclasses.dataclass(frozen=True)
class Run:
    """What the chosen scale fixes: sizes, device and precision, and the work folder's layout."""

    sizes: Any
    device: torch.device
    dtype: torch.dtype
    work: Path
    shard_sizes: tuple[str, str]  # transformer, encoders: every model sharded at both scales

    @property
    def base(self) -> Path:
        return self.work / "base"

    @property
    def data(self) -> Path:
        return self.work / "rooms"

    @property
    def run_dir(self) -> Path:
        return self.work / "run"

    @property
    def output(self) -> Path:
        return self.work / "completions"

    @property
    def timings(self) -> Path:
        return self.work / "timings.json"


def make_run(args: argparse.Namespace) -> Run:
    if args.scale == "tiny":
        return Run(tiny_i2v_sizes(), torch.device("cpu"), torch.float32, Path(args.workdir), ("20KB", "20KB"))
    if torch.cuda.device_count() < max(args.nproc, 1):
        raise SystemExit(f"--scale 14b needs {args.nproc} CUDA devices, found {torch.cuda.device_count()}")
    return Run(
        wan_i2v_14b_sizes(), torch.device("cuda", 0), torch.bfloat16, Path(args.workdir), ("10GB", "5GB")
    )


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_device(device: torch.device) -> None:
    """Give cached blocks back, so the infer processes find the GPU empty."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def estimate(args: argparse.Namespace) -> dict[str, float]:
    """Expected seconds per phase of the 14B run (printed first, kept in the JSON); nothing at tiny scale."""
    if args.scale != "14b":
        return {}
    rows = {**ESTIMATE_14B, f"infer: denoise {args.steps} steps": args.steps * STEP_SECONDS_14B}
    log("estimate for 14B on 2 GPUs (seconds): " + ", ".join(f"{k} {v:.0f}" for k, v in rows.items()))
    log(f"estimated total {sum(rows.values()) / 60:.1f} min (the room's synth + prepare overlap the write)")
    return rows


# --------------------------------------------------------------------------------------------- the steps


def make_room(args: argparse.Namespace, run: Run, result: dict) -> threading.Thread:
    """Start `panowan synth` + `panowan prepare` of one room in a background thread (CPU work, overlapping
    the GPU build and the disk write of the base folder); seconds and commands go into `result`."""
    py = [sys.executable, "-m", "panowan"]
    synth = [*py, "synth", "--out", str(run.data), "--rooms", "1", "--views", str(args.views), "--height",
             str(args.height), "--width", str(2 * args.height), "--seed", str(args.seed), "--workers",
             str(args.workers)]  # fmt: skip
    prepare = [*py, "prepare", "--data_root", str(run.data), "--workers", str(args.workers)]
    result["commands"] = {"synth": shlex.join(synth), "prepare": shlex.join(prepare)}

    def work() -> None:
        for name, cmd in (("synth", synth), ("prepare", prepare)):
            start = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            result[f"{name}_s"] = time.perf_counter() - start
            if done.returncode:
                result["error"] = f"{name} failed ({done.returncode}): {done.stderr[-2000:]}"
                return

    thread = threading.Thread(target=work, name="room", daemon=True)
    thread.start()
    return thread


def write_base(run: Run, seed: int) -> dict[str, Any]:
    """The base folder with random weights; seconds building (on the device) and writing."""
    from panowan.models.loading import cast_keep_fp32

    start = time.perf_counter()
    parts = build_i2v_parts(run.sizes, device=run.device, dtype=run.dtype, seed=seed)
    # As diffusers loads it: the modules it keeps in float32 are float32 in the file too.
    cast_keep_fp32(parts.transformer, run.dtype)
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    build_s = time.perf_counter() - start
    write = write_diffusers_layout(parts, run.base, image_size=run.sizes.image_size,
                                   transformer_shard_size=run.shard_sizes[0], shard_size=run.shard_sizes[1])  # fmt: skip
    del parts
    free_device(run.device)
    size = sum(f.stat().st_size for f in run.base.rglob("*") if f.is_file())
    return {
        "build_s": build_s,
        "write_s": sum(write.values()),
        "write_s_by_part": write,
        "files_gb": size / 1e9,
    }


class _SaveOnlyExchange:
    """The exchange of a one-stream model that is saved and never run (no process group needed)."""

    def __init__(self, stream: str) -> None:
        self.local_streams = (stream,)

    def swap(self, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise RuntimeError("this model is built to be saved, not run")


def write_checkpoint(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    """checkpoint-0 of `panowan train --preset from_base` that never stepped, as the trainer writes it:
    weights/ (`save_trainable`, one stream at a time as the two ranks of a pair do), config.json (the
    TrainConfig, whose resolution and num_frames infer uses), the COMPLETE marker. The base transformer of
    each stream is allocated on the device but not initialised: only what is built beside it is saved."""
    from panowan.models.dual_stream import DualStreamWan
    from panowan.models.loading import config_for_base
    from panowan.models.lora import add_lora, save_trainable
    from panowan.parallel.exchange import STREAMS
    from panowan.train.checkpoint import MARKER, PREFIX
    from panowan.train.config import TrainConfig
    from panowan.utils.atomic import atomic_write_json

    start = time.perf_counter()
    train = TrainConfig(data_root=str(run.data), output_dir=str(run.run_dir), base_model_dir=str(run.base),
                        preset="from_base", resolution=args.height, num_frames=args.views, seed=args.seed)  # fmt: skip
    # As the trainer's build_model: the base's architecture, interaction layers seeded by the run seed.
    config = dataclasses.replace(config_for_base(run.base), init_seed=train.seed)
    folder = run.run_dir / f"{PREFIX}0"
    for stream in STREAMS:
        base = empty_wan(config.wan, run.device, run.dtype)
        model = DualStreamWan.from_base(base, config, (stream,), _SaveOnlyExchange(stream), reuse_base=True)
        add_lora(model, train.lora_rank, train.lora_alpha, tuple(train.lora_targets), seed=train.seed)
        save_trainable(model, folder / "weights")
        del model, base
        free_device(run.device)
    atomic_write_json(folder / "config.json", train.to_dict())
    atomic_write_json(folder / MARKER, {"step": 0})
    return {"checkpoint_s": time.perf_counter() - start, "lora_rank": train.lora_rank}


def infer_command(args: argparse.Namespace, run: Run) -> list[str]:
    """`torchrun` (as its module, so the same interpreter and environment run it) of `panowan infer`."""
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={args.nproc}",
    ]
    return [*launcher, "-m", "panowan", "infer", "--base_model_dir", str(run.base), "--checkpoint_dir",
            str(run.run_dir), "--data_root", str(run.data), "--output_dir", str(run.output),
            "--num_inference_steps", str(args.steps), "--seed", str(args.seed), "--dtype",
            str(run.dtype).removeprefix("torch."), "--timings_json", str(run.timings), "--fp8", args.fp8]  # fmt: skip


def run_infer(cmd: list[str], args: argparse.Namespace, timeout: float) -> float:
    """Wall seconds of `cmd` from process start to exit; its output goes to ours. Stopped after `timeout`
    seconds: SIGTERM, which torchrun passes on to its workers, then SIGKILL."""
    env = dict(os.environ)
    # torchrun would set 1 thread per process; the ranks' CPU work (reading, writing files) wants the cores.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(args.nproc, 1))))
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)  # our process group: whoever stops us stops it too
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise RuntimeError(f"infer did not finish in {timeout:.0f} s (stopped; see --budget_s)") from None
    wall = time.perf_counter() - start
    if rc:
        raise RuntimeError(f"infer failed with exit code {rc}")
    return wall


def plain_forward(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    """The single-stream forward of the folder's diffusers transformer at the room's shape (batch 1)."""
    from panowan.models.loading import load_base_model

    start = time.perf_counter()
    model = load_base_model(
        run.base, dtype=run.dtype, device=run.device, components=("transformer",)
    ).transformer
    load_s = time.perf_counter() - start
    shape = Shape(args.views, args.height, 2 * args.height, image_tokens=run.sizes.image_tokens)
    x, ts, text, image = random_inputs(run.sizes.transformer, shape, run.device, run.dtype, seed=args.seed)
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    with torch.no_grad():
        times = time_cuda(lambda: model(x, ts, text, image, return_dict=False), 1, args.forward_iters)
    out = {"load_s": load_s, **summary(times)}
    if run.device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated(run.device) / 2**30
    return out


# ------------------------------------------------------------------------------------------------ report


def environment(args: argparse.Namespace, run: Run) -> dict[str, Any]:
    import diffusers
    import transformers

    shape = Shape(args.views, args.height, 2 * args.height)
    cuda = run.device.type == "cuda"
    return {
        "card": torch.cuda.get_device_name(run.device) if cuda else "cpu",
        "gpus": torch.cuda.device_count() if cuda else 0,
        "nproc": args.nproc,
        "fp8": args.fp8,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "scale": args.scale,
        "dtype": str(run.dtype).removeprefix("torch."),
        "steps": args.steps,
        "shape": {
            "views": args.views,
            "height": args.height,
            "width": 2 * args.height,
            "latent_thw": list(shape.latent),
            "tokens_per_stream": shape.tokens,
            "transformer_in_channels": run.sizes.transformer["in_channels"],
        },
    }


def add_ratios(result: dict[str, Any]) -> None:
    forward, steps = result.get("plain_forward", {}).get("median_s"), result["steps"]
    rooms = result.get("infer_timings", {}).get("rooms", {})
    if not forward or "infer_wall_s" not in result:
        return
    result["ratio_wall_to_steps_x_forward"] = result["infer_wall_s"] / (steps * forward)
    if ROOM in rooms:
        result["ratio_denoise_to_steps_x_forward"] = rooms[ROOM]["denoise"] / (steps * forward)


def table(result: dict[str, Any]) -> str:
    """The measured seconds, one row each."""
    timings = result.get("infer_timings", {})
    room = timings.get("rooms", {}).get(ROOM, {})
    shape = result["shape"]
    rows: list[tuple[str, Any]] = [
        ("card", f"{result['card']} x {result['nproc']} processes"),
        ("shape", f"{shape['views']} views x {shape['height']}x{shape['width']}, {result['steps']} steps"),
        ("base folder: build (s)", result.get("base", {}).get("build_s")),
        ("base folder: write (s)", result.get("base", {}).get("write_s")),
        ("base folder: size (GB)", result.get("base", {}).get("files_gb")),
        ("room: synth (s)", result.get("room", {}).get("synth_s")),
        ("room: prepare (s)", result.get("room", {}).get("prepare_s")),
        ("checkpoint (s)", result.get("checkpoint", {}).get("checkpoint_s")),
        ("INFER WALL (s)", result.get("infer_wall_s")),
        ("  load model (s)", timings.get("load_model")),
        *((f"  room: {k} (s)", room.get(k)) for k in ROOM_PHASES),
        ("  peak memory (GiB)", timings.get("peak_memory_gib")),
        ("plain forward, median (s)", result.get("plain_forward", {}).get("median_s")),
        ("wall / (steps x forward)", result.get("ratio_wall_to_steps_x_forward")),
        ("denoise / (steps x forward)", result.get("ratio_denoise_to_steps_x_forward")),
        ("total benchmark (s)", result.get("total_s")),
    ]
    width = max(len(name) for name, _ in rows)
    fmt = lambda v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(f"{name:<{width}}  {fmt(value)}" for name, value in rows)


def save(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))


# -------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    run = make_run(args)
    out = Path(args.out)
    result: dict[str, Any] = {**environment(args, run), "args": vars(args), "estimate_s": estimate(args)}
    shutil.rmtree(run.work, ignore_errors=True)
    run.work.mkdir(parents=True)
    try:
        result["room"] = {}
        room = make_room(args, run, result["room"])
        log("building and writing the base folder")
        result["base"] = write_base(run, args.seed)
        save(result, out)
        log(f"base folder written ({result['base']['files_gb']:.2f} GB); waiting for the room")
        room.join()
        if "error" in result["room"]:
            raise RuntimeError(result["room"]["error"])
        log("writing the checkpoint")
        result["checkpoint"] = write_checkpoint(run, args)
        save(result, out)
        cmd = infer_command(args, run)
        result["commands"] = {**result["room"]["commands"], "infer": shlex.join(cmd)}
        log(f"running {result['commands']['infer']}")
        timeout = args.budget_s - (time.perf_counter() - started) - PLAIN_FORWARD_RESERVE_S
        result["infer_wall_s"] = run_infer(cmd, args, max(timeout, 60.0))
        result["infer_timings"] = json.loads(run.timings.read_text())
        save(result, out)
        log("timing the plain forward")
        result["plain_forward"] = plain_forward(run, args)
        free_device(run.device)
        add_ratios(result)
    except Exception as e:  # keep what was measured: one GPU call must tell as much as it can
        result["error"] = f"{type(e).__name__}: {e}"
        raise
    finally:
        result["total_s"] = time.perf_counter() - started
        save(result, out)
        print(table(result), flush=True)
        if not args.keep:
            shutil.rmtree(run.work, ignore_errors=True)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
