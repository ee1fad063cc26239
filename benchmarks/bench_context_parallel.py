"""GPU benchmark: dual-stream inference with context parallelism, two GPUs per stream (4 GPUs).

    torchrun --nproc_per_node=4 benchmarks/bench_context_parallel.py --out cp.json

Ranks 0-1 hold the rgb stream, ranks 2-3 the depth stream; each stream's 20,250 tokens are split over its two
GPUs (diffusers' Ulysses attention in the Wan blocks, `panowan.parallel.context`). First a check on a shallow
model of the full width: the context-parallel outputs equal the one-process forward (interaction layers
perturbed off zero). Then the 14B forward and a denoising loop are timed. Compare with the two-GPU placement
from `bench_dual_stream.py --skip check,baseline,train` run in the same call.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dual_stream import dual_inputs, one_process_errors, perturb_interactions
from panowan.models.dual_stream import DualStreamWan
from panowan.models.presets import get_preset
from panowan.parallel.context import ContextGroups, ContextParallelExchange, enable_context_parallel
from panowan.parallel.groups import init_distributed
from wan_bench_utils import Shape, build_random_wan, summary, time_cuda


def build(config, groups: ContextGroups, device, seed: int) -> DualStreamWan:
    base = build_random_wan(config.wan, device, seed=seed)
    model = DualStreamWan.from_base(
        base, config, groups.local_streams, ContextParallelExchange(groups), reuse_base=True
    )
    enable_context_parallel(model.streams[groups.stream], groups, device)
    return model


def check(args, groups: ContextGroups, device) -> dict:
    config = get_preset(args.preset)
    config.wan["num_layers"] = args.check_layers
    shape = Shape(args.frames, args.height, 2 * args.height)
    noisy, cond, ts, plucker, text, image = dual_inputs(config, shape, device)
    model = build(config, groups, device, args.seed)
    perturb_interactions(model)
    s = groups.stream
    with torch.no_grad():
        mine = model({s: noisy[s]}, {s: cond[s]}, ts, plucker, text, image)[s].float()
    del model
    result = {}
    if groups.rank == 0:
        other = torch.empty_like(mine)
        dist.recv(other, src=groups.degree)
        inputs = (noisy, cond, ts, plucker, text, image)
        result = one_process_errors(config, device, args.seed, inputs, {"rgb": mine, "depth": other})
    elif groups.rank == groups.degree:
        dist.send(mine.contiguous(), dst=0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    dist.barrier()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="wan2.1-i2v-14b", help="model preset (random weights)")
    p.add_argument("--frames", type=int, default=17, help="views (4k+1)")
    p.add_argument("--height", type=int, default=720, help="panorama height; width is 2x")
    p.add_argument("--forward_iters", type=int, default=3, help="timed forwards")
    p.add_argument("--infer_steps", type=int, default=20, help="denoising-loop length to time")
    p.add_argument("--check_layers", type=int, default=8, help="depth of the correctness-check model")
    p.add_argument("--seed", type=int, default=0, help="weights and inputs seed")
    p.add_argument("--out", default="bench_context_parallel.json", help="JSON output (rank 0)")
    args = p.parse_args()
    device = init_distributed()
    groups = ContextGroups.from_world(device.type)
    results: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "world_size": dist.get_world_size(),
                     "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "args": vars(args)}  # fmt: skip
    results["check"] = check(args, groups, device)
    if groups.rank == 0:
        print("check", results["check"], flush=True)
    config = get_preset(args.preset)
    shape = Shape(args.frames, args.height, 2 * args.height)
    model = build(config, groups, device, args.seed)
    noisy, cond, ts, plucker, text, image = dual_inputs(config, shape, device, seed=args.seed)
    s = groups.stream

    @torch.no_grad()
    def forward():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            model({s: noisy[s]}, {s: cond[s]}, ts, plucker, text, image)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    results["forward"] = summary(time_cuda(forward, 1, args.forward_iters))
    loop = time_cuda(lambda: [forward() for _ in range(args.infer_steps)], 0, 1)[0]
    results[f"denoise_loop_{args.infer_steps}_s"] = loop
    results["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    if groups.rank == 0:
        Path(args.out).write_text(json.dumps(results, indent=2))
        print(
            json.dumps(
                {k: results[k] for k in ("forward", f"denoise_loop_{args.infer_steps}_s", "peak_gib")}
            ),
            flush=True,
        )
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
