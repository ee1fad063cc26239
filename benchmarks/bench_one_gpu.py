"""GPU benchmark: both streams on one card against plain diffusers on the same card (issue 22).

    python benchmarks/bench_one_gpu.py --preset wan2.1-1.3b-i2v --phases train --out one_gpu_train.json
    python benchmarks/bench_one_gpu.py --preset wan2.1-1.3b-i2v --phases infer --out one_gpu_infer.json

Everything runs in one process on one GPU (`LocalExchange`), random bf16 weights, batch 1, 17 views at
720x1440 by default (20,250 tokens per stream). Each ratio divides two numbers of the same run.

Phases:
- train: the plain diffusers `WanTransformer3DModel` step (PEFT LoRA on attention q/k/v/o, diffusers' gradient
  checkpointing of every block, AdamW; optionally also with `compile_repeated_blocks`), then the dual-stream
  step (both streams, interaction layers and PluckerNet, same LoRA and optimiser) in each `--variants` setting:
  `eager-full` (today's default), `compiled-full`, `compiled-selective`, `compiled-selective-F` (a fraction F of
  the blocks checkpointed); a `+fp8` suffix (e.g. `compiled-full+fp8`) stores the frozen base's block linears
  in float8 first (`panowan train --fp8_base weight`: half the weight memory, meant to fit both 14B streams' training on 80 GB).
  Peak memory of each.
- infer: the plain forward (median) and the `--infer_steps`-forward loops of the dual model, eager and compiled:
  the loop against `--infer_steps` plain forwards.
- infer with `--step_cache T1,T2,...` (first-block step caching, `models.step_cache`), after those rows and on
  the compiled regions: a real `--infer_steps`-step denoising loop through the package's own sampling path
  (`sample.pipeline.model_velocity` -> `sample.sampler.sample_flow`, `--sampler`, seam rolling as `panowan infer`
  does it), so x_t evolves as in inference; once without a cache and once per threshold with a fresh
  `StepCache(T)`: seconds, steps computed in full / skipped (and which), against the uncached loop of the same
  run and against `--infer_steps` plain forwards. Also one cached step (first region + the stored residual),
  one computed step with the cache's bookkeeping and one uncached forward, through the same call.
  Random weights: the skip pattern is the random model's. Its first-block residual changes with x_t only
  roughly as a trained model's would, so the steps skipped (and the time they save) at a threshold are not
  those of a trained model; the quality cost of a threshold stays the CPU measurement on the embedded model
  (benchmarks/bench_step_cache.py). The cached step's time and the cost of a computed step hold regardless.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dual_stream import TARGETS, bench_baseline, dual_inputs
from panowan.models.dual_stream import DualStreamWan
from panowan.models.fp8 import quantize_fp8
from panowan.models.lora import add_lora, freeze_base, trainable_parameter_groups
from panowan.models.presets import get_preset
from panowan.models.step_cache import StepCache
from panowan.parallel.exchange import LocalExchange
from panowan.sample.pipeline import model_velocity
from panowan.sample.sampler import SAMPLERS, sample_flow, stream_noise
from wan_bench_utils import Shape, add_shape_args, build_random_wan, summary, time_cuda


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0


def free() -> None:
    gc.collect()
    torch._dynamo.reset()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def dump(results: dict, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(results, indent=2))


def parse_variant(name: str) -> tuple[bool, str, float, bool]:
    """ "compiled-selective-0.75" -> (compiled, policy, fraction, fp8 base); a "+fp8" suffix freezes the base
    in float8 (`panowan train --fp8_base weight`)."""
    core, fp8 = name.removesuffix("+fp8"), name.endswith("+fp8")
    parts = core.split("-")
    if (
        parts[0] not in ("eager", "compiled")
        or len(parts) not in (2, 3)
        or parts[1] not in ("full", "selective")
    ):
        raise ValueError(f"variant {name!r}: want (eager|compiled)-(full|selective)[-FRACTION][+fp8]")
    return parts[0] == "compiled", parts[1], float(parts[2]) if len(parts) == 3 else 1.0, fp8


def build_dual(args, device, fp8_base: bool = False) -> tuple[DualStreamWan, list[torch.nn.Parameter]]:
    config = get_preset(args.preset)
    base = build_random_wan(config.wan, device, seed=args.seed)
    model = DualStreamWan.from_base(base, config, ("rgb", "depth"), LocalExchange(), reuse_base=True)
    # As `panowan train --fp8_base weight` does it: the frozen block linears in float8, then LoRA.
    if fp8_base:
        log(f"frozen base: {quantize_fp8(model, 'weight')}")
    add_lora(model, rank=args.lora_rank, targets=TARGETS)
    freeze_base(model)
    trainable = [p for ps in trainable_parameter_groups(model).values() for p in ps]
    for p in trainable:
        p.data = p.data.float()  # LoRA, interaction and PluckerNet weights and AdamW state in fp32
    return model, trainable


def time_train_variant(args, device, name: str, inputs: tuple, target: dict) -> dict:
    """Build the seeded dual model afresh (fresh optimiser) in setting `name` and time its training step."""
    compiled, policy, fraction, fp8_base = parse_variant(name)
    model, trainable = build_dual(args, device, fp8_base)
    opt = torch.optim.AdamW(trainable, lr=1e-5)
    model.enable_gradient_checkpointing(policy, fraction)
    if compiled:
        model.compile_blocks()

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model(*inputs)
        loss = sum(torch.nn.functional.mse_loss(out[s].float(), target[s].float()) for s in out)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    try:
        first = time_cuda(step, 0, 1)[0]  # compiles, for compiled variants
        times = time_cuda(step, args.warmup, args.steps)
        return {"train_step": summary(times), "first_step_s": first, "peak_gib": peak_gib()}
    except torch.OutOfMemoryError as e:
        return {"error": f"out of memory: {str(e)[:200]}", "peak_gib": peak_gib()}


def bench_train_variants(args, device, on_result=lambda results: None) -> dict:
    config = get_preset(args.preset)
    shape = Shape(args.frames, args.height, 2 * args.height)
    inputs = dual_inputs(config, shape, device, seed=args.seed)  # noisy, cond, timestep, plucker, text, image
    target = {s: torch.randn_like(x) for s, x in inputs[0].items()}
    results = {}
    for name in args.variants.split(","):
        free()
        results[name] = time_train_variant(args, device, name, inputs, target)
        log(f"{name}: {results[name]}")
        on_result(results)
    return results


def bench_infer(args, device) -> dict:
    config = get_preset(args.preset)
    shape = Shape(args.frames, args.height, 2 * args.height)
    model, _ = build_dual(args, device)
    noisy, cond, ts, plucker, text, image = dual_inputs(config, shape, device, seed=args.seed)

    @torch.no_grad()
    def forward():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            model(noisy, cond, ts, plucker, text, image)

    def loop():
        for _ in range(args.infer_steps):
            forward()

    results = {}
    for compiled in (False, True):
        free()
        if compiled:
            model.compile_blocks()
            results["compile_first_forward_s"] = time_cuda(forward, 0, 1)[0]
        name = "compiled" if compiled else "eager"
        results[name] = {
            "forward": summary(time_cuda(forward, 1, args.forward_iters)),
            f"loop_{args.infer_steps}_s": time_cuda(loop, 0, 1)[0],
            "peak_gib": peak_gib(),
        }
        log(f"infer {name}: {results[name]}")
    if args.step_cache:
        results["step_cache"] = bench_step_cache(
            args, device, model, (noisy, cond, plucker, text, image), "compiled"
        )
    return results


STEP_CACHE_NOTE = (
    "random weights: the skip pattern is the random model's (its first-block residual changes with x_t only "
    "roughly as a trained model's would), so the steps skipped and the time saved at a threshold are not a "
    "trained model's; the quality cost of a threshold stays the CPU measurement on the embedded model "
    "(benchmarks/bench_step_cache.py). The per-step times (cached step, computed step) hold regardless."
)


def parse_thresholds(text: str) -> list[float]:
    """'0.05,0.1' -> [0.05, 0.1]; '' -> [] (off). Each must be a valid `StepCache` threshold."""
    thresholds = [float(t) for t in text.split(",") if t.strip()]
    for t in thresholds:
        StepCache(t)  # raises on a negative threshold
    return thresholds


def bench_step_cache(args, device, model, inputs: tuple, regions: str) -> dict:
    """First-block step caching on a real `--infer_steps`-step denoising loop of the dual model.

    The loop is the package's own: `model_velocity` (seam-rolled conditions and Plücker maps, sigma * 1000 as
    the timestep, the cache told the roll) inside `sample_flow` (`--sampler`, seam rolling as `panowan infer`),
    from seeded per-stream noise, so x_t evolves as in inference. Timed once uncached and once per threshold,
    each with a fresh `StepCache`; `regions` says whether the model's regions are compiled."""
    _, cond, plucker, text, image = inputs
    shape = tuple(cond["rgb"].shape)
    shape = (shape[0], shape[1] - 4, *shape[2:])  # noisy latents: condition less its 4 mask channels
    noise = stream_noise(
        dict.fromkeys(("rgb", "depth"), shape), args.seed, dtype=torch.bfloat16, device=device
    )
    steps = args.infer_steps
    out: dict = {"regions": regions, "sampler": args.sampler, "flow_shift": args.flow_shift,
                 "seam_roll": args.seam_roll, "steps": steps, "note": STEP_CACHE_NOTE}  # fmt: skip

    def run(cache: StepCache | None, n: int = steps, pattern: list[str] | None = None) -> None:
        velocity = model_velocity(model, cond, plucker, text, image, cache)

        def fn(latents, sigma, **kw):
            before = cache.skipped if cache is not None else 0
            v = velocity(latents, sigma, **kw)
            if pattern is not None and cache is not None:
                pattern.append("s" if cache.skipped > before else "F")
            return v

        with torch.autocast(device.type, dtype=torch.bfloat16):
            sample_flow(fn, noise, steps=n, sampler=args.sampler, flow_shift=args.flow_shift,
                        seam_roll=args.seam_roll, progress=False)  # fmt: skip

    # One step through the same call: uncached forward, a computed step with the cache's bookkeeping (threshold
    # 0 never skips: first-region change, the exchange of the decision, the stored residuals), and a cached step
    # (first region + the stored residual; an infinite threshold skips every call after the first).
    latents = dict(noise)
    sigma = 0.5

    def one_step(cache: StepCache | None):
        velocity = model_velocity(model, cond, plucker, text, image, cache)

        def call():
            with torch.autocast(device.type, dtype=torch.bfloat16):
                velocity(latents, sigma)

        return call

    iters = max(args.forward_iters, 5)
    per_step = {"full_forward": summary(time_cuda(one_step(None), 1, iters))}
    per_step["computed_step"] = summary(time_cuda(one_step(StepCache(0.0)), 1, iters))
    always = StepCache(float("inf"))
    per_step["cached_step"] = summary(
        time_cuda(one_step(always), 2, iters)
    )  # the first warm-up call computes
    assert always.skipped == iters + 1, f"the cached step did not skip: {always.skipped} of {always.calls}"
    full = per_step["full_forward"]["median_s"]
    per_step["cached_step_vs_full_forward"] = per_step["cached_step"]["median_s"] / full
    per_step["computed_step_vs_full_forward"] = per_step["computed_step"]["median_s"] / full
    out["per_step"] = per_step
    log(f"step cache, one step: {per_step}")

    run(None, n=2)  # warm-up of the sampling path (schedulers, rolls) outside the timed loops
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    uncached = time_cuda(lambda: run(None), 0, 1)[0]
    out["uncached"] = {f"loop_{steps}_s": uncached, "peak_gib": peak_gib()}
    log(f"step cache, uncached sampler loop: {out['uncached']}")
    for t in parse_thresholds(args.step_cache):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        cache, pattern = StepCache(t), []
        seconds = time_cuda(lambda: run(cache, pattern=pattern), 0, 1)[0]  # noqa: B023 (called at once)
        out[f"{t:g}"] = {
            f"loop_{steps}_s": seconds,
            "computed": cache.calls - cache.skipped,
            "skipped": cache.skipped,
            "pattern": "".join(pattern),  # F computed, s skipped, per step
            "vs_uncached_loop": seconds / uncached,
            "peak_gib": peak_gib(),
        }
        log(f"step cache {t:g}: {out[f'{t:g}']}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_args(p, "wan2.1-1.3b-i2v")
    p.add_argument("--phases", default="train,infer", help="comma list: train, infer")
    p.add_argument("--variants", default="eager-full,compiled-full,compiled-selective,compiled-selective-0.75",
                   help="dual-stream training settings to time: (eager|compiled)-(full|selective)[-FRACTION][+fp8]")  # fmt: skip
    p.add_argument(
        "--baseline_compiled",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time plain diffusers with compile_repeated_blocks",
    )
    p.add_argument("--steps", type=int, default=3, help="timed training steps per setting")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after the first (compiling) one")
    p.add_argument("--forward_iters", type=int, default=3, help="timed inference forwards")
    p.add_argument("--infer_steps", type=int, default=50, help="denoising-loop length to time")
    p.add_argument("--step_cache", default="",
                   help="(infer) comma list of StepCache thresholds to time on a real sampling loop; empty: off")  # fmt: skip
    p.add_argument(
        "--sampler", default="unipc", choices=SAMPLERS, help="(--step_cache) sampling loop's solver"
    )
    p.add_argument(
        "--flow_shift", type=float, default=3.0, help="(--step_cache) timestep shift of the schedule"
    )
    p.add_argument("--seam_roll", action=argparse.BooleanOptionalAction, default=True,
                   help="(--step_cache) roll the latents across the ERP seam each step, as panowan infer does")  # fmt: skip
    p.add_argument("--attention_backends", default="", help="(baseline) diffusers attention backends to time")
    p.add_argument("--seed", type=int, default=0, help="weights and inputs seed")
    p.add_argument("--out", default="bench_one_gpu.json", help="JSON output path")
    args = p.parse_args()
    parse_thresholds(args.step_cache)  # a bad --step_cache fails before anything is built
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # cpu: a smoke run at tiny size
    phases = set(args.phases.split(","))
    results: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__,
                     "date": time.strftime("%Y-%m-%d"), "args": vars(args)}  # fmt: skip
    log("baseline: plain diffusers single stream")
    if "train" not in phases:
        args.steps = 1  # bench_baseline times training too: one step is enough when only inference counts
    base = bench_baseline(args, device)
    results["baseline"] = base
    log(f"baseline: {json.dumps(base)}")
    dump(results, args.out)  # written after every phase: a run cut short keeps what it measured
    free()
    ratios = {}
    if "train" in phases:
        results["dual_train"] = bench_train_variants(
            args, device, lambda partial: dump({**results, "dual_train": partial}, args.out)
        )
        for name, r in results["dual_train"].items():
            if "train_step" in r:
                ratios[f"train_{name}_vs_plain_step"] = (
                    r["train_step"]["median_s"] / base["train_step"]["median_s"]
                )
        dump({**results, "ratios": ratios}, args.out)
        free()
    if "infer" in phases:
        results["dual_infer"] = bench_infer(args, device)
        plain_loop = args.infer_steps * base["forward"]["median_s"]
        for name in ("eager", "compiled"):
            r = results["dual_infer"][name]
            ratios[f"loop_{name}_vs_{args.infer_steps}_plain_forwards"] = (
                r[f"loop_{args.infer_steps}_s"] / plain_loop
            )
        sc = results["dual_infer"].get("step_cache")
        if sc:
            key = f"loop_{args.infer_steps}_s"
            ratios[f"sampler_loop_uncached_vs_{args.infer_steps}_plain_forwards"] = (
                sc["uncached"][key] / plain_loop
            )
            for t in parse_thresholds(args.step_cache):
                r = sc[f"{t:g}"]
                r[f"vs_{args.infer_steps}_plain_forwards"] = r[key] / plain_loop
                ratios[f"step_cache_{t:g}_loop_vs_uncached_loop"] = r["vs_uncached_loop"]
                ratios[f"step_cache_{t:g}_loop_vs_{args.infer_steps}_plain_forwards"] = r[key] / plain_loop
            ratios["cached_step_vs_full_forward"] = sc["per_step"]["cached_step_vs_full_forward"]
        dump({**results, "ratios": ratios}, args.out)
        free()
    if "train" in phases and args.baseline_compiled:  # last: the rows above matter more if time runs out
        results["baseline_compiled"] = bench_baseline(args, device, compile_blocks=True)
        log(f"baseline compiled: {results['baseline_compiled']}")
        ratios["plain_compiled_vs_plain_step"] = (
            results["baseline_compiled"]["train_step"]["median_s"] / base["train_step"]["median_s"]
        )
    results["ratios"] = ratios
    dump(results, args.out)
    print(json.dumps(ratios, indent=2))


if __name__ == "__main__":
    main()
