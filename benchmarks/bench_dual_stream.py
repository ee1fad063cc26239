"""GPU benchmark: the dual-stream system against plain diffusers, at the real model size.

Run with one process per GPU (2 GPUs = one pair, one stream each; 2N = N data-parallel pairs):

    torchrun --nproc_per_node=2 benchmarks/bench_dual_stream.py --out results.json

Phases, all in one run so every ratio compares numbers from the same cards:
1. check: on a shallow model of the full width (same blocks, `--check_layers` deep), the two-rank
   forward equals the one-process forward on the same weights and inputs (interaction layers
   perturbed so that they matter), before anything is timed;
2. baseline: plain diffusers `WanTransformer3DModel` with PEFT LoRA, gradient checkpointing, AdamW:
   one training step and one inference forward, on every GPU at once;
3. system: `DualStreamWan` in the stream-per-rank placement, same settings: training step (with the
   gradient all-reduce of data-parallel pairs when N > 1), inference forward, exchange time.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import zlib
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from panowan.models.dual_stream import DualStreamWan
from panowan.models.lora import add_lora, freeze_base, trainable_parameter_groups
from panowan.models.presets import get_preset
from panowan.parallel.exchange import LocalExchange
from panowan.parallel.grad_sync import sync_gradients
from panowan.parallel.groups import StreamGroups, init_distributed
from wan_bench_utils import (
    Shape,
    add_shape_args,
    build_random_wan,
    forward_flops,
    random_inputs,
    summary,
    time_cuda,
)

TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def log(msg: str) -> None:
    if dist.get_rank() == 0:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0


def perturb_interactions(model: DualStreamWan, scale: float = 0.02) -> None:
    """Give every interaction parameter a deterministic offset (by name), so they matter in the check."""
    for stream, layers in model.interactions.items():
        for name, p in layers.named_parameters():
            g = torch.Generator().manual_seed(zlib.crc32(f"{stream}.{name}".encode()))
            p.data += scale * torch.randn(p.shape, generator=g).to(p.device, p.dtype)


def dual_inputs(config, shape: Shape, device, seed: int = 1, batch: int = 1):
    g = torch.Generator(device=device).manual_seed(seed)
    t, h, w = shape.latent
    z = config.z_dim
    noisy = {
        s: torch.randn(batch, z, t, h, w, generator=g, device=device, dtype=torch.bfloat16)
        for s in ("rgb", "depth")
    }
    cond = {
        s: torch.randn(batch, z + 4, t, h, w, generator=g, device=device, dtype=torch.bfloat16)
        for s in ("rgb", "depth")
    }
    plucker = torch.randn(batch, 6, shape.frames, shape.height, shape.width, generator=g, device=device)
    wan = config.wan
    text = torch.randn(batch, 512, wan["text_dim"], generator=g, device=device, dtype=torch.bfloat16)
    image = torch.randn(batch, 257, wan["image_dim"], generator=g, device=device, dtype=torch.bfloat16)
    timestep = torch.full((batch,), 500.0, device=device)
    return noisy, cond, timestep, plucker, text, image


def one_process_errors(config, device, seed: int, inputs: tuple, got: dict) -> dict:
    """Relative error of each stream's output `got[s]` against the one-process model (both streams on this
    GPU, same seeded weights and perturbation) on `inputs` = (noisy, cond, timestep, plucker, text, image)."""
    base = build_random_wan(config.wan, device, seed=seed)
    ref_model = DualStreamWan.from_base(base, config, ("rgb", "depth"), LocalExchange(), reuse_base=True)
    perturb_interactions(ref_model)
    with torch.no_grad():
        ref = {k: v.float() for k, v in ref_model(*inputs).items()}
    return {f"rel_err_{s}": ((got[s] - ref[s]).norm() / ref[s].norm()).item() for s in ("rgb", "depth")}


def check_placement(args, groups: StreamGroups, device) -> dict:
    """Two-rank forward == one-process forward on a shallow full-width model (pair 0 only)."""
    config = get_preset(args.preset)
    config.wan["num_layers"] = args.check_layers
    shape = Shape(args.frames, args.height, 2 * args.height)
    result = {}
    if groups.pair_index == 0:
        noisy, cond, ts, plucker, text, image = dual_inputs(config, shape, device)
        local_streams = groups.local_streams
        base = build_random_wan(config.wan, device, seed=args.seed)
        model = DualStreamWan.from_base(base, config, local_streams, groups.make_exchange(), reuse_base=True)
        perturb_interactions(model)
        with torch.no_grad():
            out = model(
                {s: noisy[s] for s in local_streams},
                {s: cond[s] for s in local_streams},
                ts,
                plucker,
                text,
                image,
            )
        mine = out[local_streams[0]].float()
        del model, base
        if groups.rank == 0:
            other = torch.empty_like(mine)
            dist.recv(other, src=1)
            inputs = (noisy, cond, ts, plucker, text, image)
            result.update(
                one_process_errors(config, device, args.seed, inputs, {"rgb": mine, "depth": other})
            )
            # Sanity: the interactions changed the output (else the check would be vacuous).
            base = build_random_wan(config.wan, device, seed=args.seed)
            x = torch.cat([noisy["rgb"], cond["rgb"]], 1)
            with torch.no_grad():
                plain = base(x, ts, text, image, return_dict=False)[0].float()
            ref_rgb = mine
            result["interaction_effect_rel"] = ((plain - ref_rgb).norm() / ref_rgb.norm()).item()
            del base
        elif groups.rank == 1:
            dist.send(mine.contiguous(), dst=0)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    dist.barrier()
    return result


def bench_baseline(args, device, compile_blocks: bool = False) -> dict:
    """Plain diffusers single stream: LoRA training step and inference forward. `compile_blocks`: with
    diffusers' own regional compilation (`compile_repeated_blocks`; one more warm-up step compiles)."""
    config = get_preset(args.preset)
    shape = Shape(args.frames, args.height, 2 * args.height)
    model = build_random_wan(config.wan, device, seed=args.seed)
    params = sum(p.numel() for p in model.parameters())
    from peft import LoraConfig

    model.requires_grad_(False)
    model.add_adapter(LoraConfig(r=args.lora_rank, lora_alpha=args.lora_rank, target_modules=list(TARGETS)))
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.data = p.data.float()  # LoRA weights and AdamW state in fp32, as in the system
    model.enable_gradient_checkpointing()
    if compile_blocks:
        model.compile_repeated_blocks()
    opt = torch.optim.AdamW(trainable, lr=1e-5)
    x, ts, text, image = random_inputs(config.wan, shape, device, seed=args.seed)
    target = torch.randn(1, config.wan["out_channels"], *shape.latent, device=device, dtype=torch.bfloat16)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model(x, ts, text, image, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(out.float(), target.float())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    train = time_cuda(step, args.warmup + compile_blocks, args.steps)
    train_peak = peak_gib()

    @torch.no_grad()
    def forward():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            model(x, ts, text, image, return_dict=False)

    infer = time_cuda(forward, 1, args.forward_iters)
    fwd_flops = forward_flops(config.wan, shape, params)
    out = {
        "params": params,
        "tokens": shape.tokens,
        "train_step": summary(train),
        "train_peak_gib": train_peak,
        "forward": summary(infer),
        "forward_tflops": fwd_flops / summary(infer)["median_s"] / 1e12,
    }
    backends = {}
    if args.attention_backends:
        from diffusers.models.attention_dispatch import attention_backend

        for name in args.attention_backends.split(","):
            try:
                with attention_backend(name):
                    backends[name] = summary(time_cuda(forward, 1, args.forward_iters))["median_s"]
            except Exception as e:  # a backend missing on this machine is reported, not fatal
                backends[name] = f"unavailable: {type(e).__name__}: {str(e)[:120]}"
    out["forward_by_attention_backend"] = backends
    return out


def bench_system(args, groups: StreamGroups, device, train_steps: bool = True) -> dict:
    config = get_preset(args.preset)
    if args.interaction_inner_dim:
        config.interaction_inner_dim = args.interaction_inner_dim
    shape = Shape(args.frames, args.height, 2 * args.height)
    base = build_random_wan(config.wan, device, seed=args.seed)
    exchange = groups.make_exchange()
    model = DualStreamWan.from_base(base, config, groups.local_streams, exchange, reuse_base=True)
    add_lora(model, rank=args.lora_rank, targets=TARGETS)
    freeze_base(model)
    trainable_groups = trainable_parameter_groups(model)
    for ps in trainable_groups.values():
        for p in ps:
            p.data = p.data.float()
    model.enable_gradient_checkpointing()
    stream_params = trainable_groups["streams"] + trainable_groups["interaction"]
    shared_params = trainable_groups["plucker"]
    opt = torch.optim.AdamW(stream_params + shared_params, lr=1e-5)
    noisy, cond, ts, plucker, text, image = dual_inputs(
        config, shape, device, seed=args.seed + groups.pair_index
    )
    mine = groups.local_streams
    noisy, cond = {s: noisy[s] for s in mine}, {s: cond[s] for s in mine}
    target = {s: torch.randn_like(noisy[s]) for s in mine}

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model(noisy, cond, ts, plucker, text, image)
        loss = sum(torch.nn.functional.mse_loss(out[s].float(), target[s].float()) for s in mine)
        loss.backward()
        sync_gradients(groups, stream_params, shared_params)
        opt.step()
        opt.zero_grad(set_to_none=True)

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    stats = getattr(exchange, "stats", None)
    train = time_cuda(step, args.warmup, 1) if train_steps else [float("nan")]
    if stats is not None:
        stats.reset()
    train += time_cuda(step, 0, args.steps - 1) if train_steps and args.steps > 1 else []
    train_peak = peak_gib()
    exch_train = dict(vars(stats)) if stats is not None else {}

    @torch.no_grad()
    def forward():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            model(noisy, cond, ts, plucker, text, image)

    if stats is not None:
        stats.reset()
    infer = time_cuda(forward, 1, args.forward_iters)
    exch_fwd = dict(vars(stats)) if stats is not None else {}
    loop = None
    if args.infer_steps:
        loop = time_cuda(lambda: [forward() for _ in range(args.infer_steps)], 0, 1)[0]
    result = {
        "train_step": summary(train),
        "train_peak_gib": train_peak,
        "forward": summary(infer),
        f"denoise_loop_{args.infer_steps}_s": loop,
        "exchange_train_per_step": {
            k: (v / max(1, len(train) - 1) if isinstance(v, float | int) else v)
            for k, v in exch_train.items()
        },
        "exchange_forward_total": exch_fwd,
        "interaction_inner_dim": config.interaction_inner_dim,
    }
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_args(p)
    p.add_argument("--steps", type=int, default=3, help="timed training steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps")
    p.add_argument("--forward_iters", type=int, default=3, help="timed inference forwards")
    p.add_argument("--infer_steps", type=int, default=50, help="denoising-loop length to time (0: skip)")
    p.add_argument(
        "--check_layers", type=int, default=8, help="depth of the full-width correctness check model"
    )
    p.add_argument(
        "--interaction_inner_dim", type=int, default=0, help="override the preset's interaction width"
    )
    p.add_argument(
        "--attention_backends",
        default="",
        help="comma list of diffusers attention backends to time on the baseline forward",
    )
    p.add_argument(
        "--skip",
        default="",
        help="comma list of phases to skip: check,baseline,system,train (the system's training steps)",
    )
    p.add_argument("--seed", type=int, default=0, help="weights and inputs seed")
    p.add_argument("--out", default="bench_dual_stream.json", help="JSON output path (rank 0)")
    args = p.parse_args()

    device = init_distributed()
    groups = StreamGroups.from_world()
    skip = set(filter(None, args.skip.split(",")))
    results: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "world_size": groups.world_size,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "args": vars(args),
    }
    if "check" not in skip:
        log("phase 1: two-rank vs one-process forward")
        results["check"] = check_placement(args, groups, device)
        log(f"check: {results['check']}")
        if groups.rank == 0 and max(results["check"].get(f"rel_err_{s}", 0) for s in ("rgb", "depth")) > 2e-2:
            print("CHECK FAILED: two-rank output differs from one-process output", flush=True)
    if "baseline" not in skip:
        log("phase 2: plain diffusers single-stream baseline")
        results["baseline"] = bench_baseline(args, device)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log(f"baseline: {json.dumps(results['baseline'])}")
        dist.barrier()
    if "system" not in skip:
        log("phase 3: dual-stream system")
        results["system"] = bench_system(args, groups, device, train_steps="train" not in skip)
        per_rank = [None] * groups.world_size
        dist.all_gather_object(
            per_rank,
            {
                "rank": groups.rank,
                "peak": results["system"]["train_peak_gib"],
                "step": results["system"]["train_step"]["median_s"],
            },
        )
        results["system_per_rank"] = per_rank
    if groups.rank == 0:
        b, s = results.get("baseline"), results.get("system")
        if b and s:
            pairs = groups.num_pairs
            results["ratios"] = {
                "train_step_vs_single_stream": s["train_step"]["median_s"] / b["train_step"]["median_s"],
                "forward_vs_single_stream": s["forward"]["median_s"] / b["forward"]["median_s"],
                "exchange_share_of_train_step": s["exchange_train_per_step"].get("forward_seconds", 0)
                / s["train_step"]["median_s"]
                + s["exchange_train_per_step"].get("backward_seconds", 0) / s["train_step"]["median_s"],
                "pairs": pairs,
                "samples_per_s": pairs / s["train_step"]["median_s"],
            }
            if s.get(f"denoise_loop_{args.infer_steps}_s"):
                results["ratios"]["denoise_loop_vs_50x_forward"] = s[f"denoise_loop_{args.infer_steps}_s"] / (
                    args.infer_steps * b["forward"]["median_s"]
                )
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
        print(json.dumps(results.get("ratios", {}), indent=2))
        print(f"{'what':40s} {'value':>12s}")
        if b:
            print(f"{'baseline train step (s)':40s} {b['train_step']['median_s']:12.3f}")
            print(f"{'baseline forward (s)':40s} {b['forward']['median_s']:12.3f}")
            print(f"{'baseline train peak (GiB)':40s} {b['train_peak_gib']:12.1f}")
        if s:
            print(f"{'system train step (s)':40s} {s['train_step']['median_s']:12.3f}")
            print(f"{'system forward (s)':40s} {s['forward']['median_s']:12.3f}")
            print(f"{'system train peak rank0 (GiB)':40s} {s['train_peak_gib']:12.1f}")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    main()
