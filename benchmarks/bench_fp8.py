"""GPU benchmark: float8 weights of the Wan blocks (`panowan.models.fp8`, `infer --fp8`) against bfloat16.

    python benchmarks/bench_fp8.py --out bench_fp8.json                      # 14B, 17 views at 720x1440
    python benchmarks/bench_fp8.py --preset tiny --device cpu --height 64 --width 128 --views 5   # smoke run

Random bf16 weights, batch 1, one process, no autocast (the model is in bf16). Phases, in one run so every
ratio compares numbers of the same card:
- plain: the diffusers `WanTransformer3DModel` forward in bf16, then the same weights with fp8 "weight"
  (float8 storage, bf16 matmuls) and "dynamic" (float8 activations and matmuls, per-row scales; CUDA sm89+
  only, skipped elsewhere): median seconds of a forward, peak memory, parameter bytes, and the error of the
  output against bf16 on the same inputs (relative L2, cosine similarity, max abs).
- dual (`--dual`, default on): the dual-stream forward (both streams on this card, `LocalExchange`, as
  `bench_one_gpu.py`'s infer phase, without LoRA) in bf16 and with fp8 "weight"; an out-of-memory is recorded.
`--compile` compiles the blocks (plain: `compile_repeated_blocks`; dual: `compile_blocks`) after quantising;
the first, compiling forward is timed apart. JSON (`--out`) is rewritten after every measurement.
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
from bench_dual_stream import dual_inputs
from panowan.models.dual_stream import DualStreamWan
from panowan.models.fp8 import fp8_supported, parameter_bytes, quantize_fp8
from panowan.models.presets import get_preset
from panowan.parallel.exchange import LocalExchange
from wan_bench_utils import Shape, build_random_wan, random_inputs, summary, time_cuda


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def gib(n: float) -> float:
    return n / 2**30


def peak_gib(device: torch.device) -> float | None:
    return gib(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def free(device: torch.device) -> None:
    gc.collect()
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def dump(results: dict, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(results, indent=2))


def errors(out: torch.Tensor, ref: torch.Tensor) -> dict:
    """Relative L2, cosine similarity and max abs difference of `out` against `ref` (in float32)."""
    a, b = out.float().flatten(), ref.float().flatten()
    return {
        "rel_l2": ((a - b).norm() / b.norm()).item(),
        "cosine": torch.nn.functional.cosine_similarity(a, b, dim=0).item(),
        "max_abs": (a - b).abs().max().item(),
        "ref_max_abs": b.abs().max().item(),
    }


def measure(name: str, model, forward, device, args, ref=None) -> tuple[dict, object]:
    """Time `forward` (median of --iters after --warmup; with --compile the first call apart), record peak
    memory, parameter bytes and, against `ref`, the error; returns (record, output)."""
    record: dict = {"param_gib": gib(parameter_bytes(model))}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if args.compile:
        record["first_forward_s"] = time_cuda(forward, 0, 1)[0]
    record["forward"] = summary(time_cuda(forward, args.warmup, args.iters))
    out = forward()
    record["peak_gib"] = peak_gib(device)
    if ref is not None:
        if isinstance(out, dict):
            record["error"] = {s: errors(out[s], ref[s]) for s in out}
        else:
            record["error"] = errors(out, ref)
    log(f"{name}: {json.dumps(record)}")
    return record, out


def bench_plain(args, device, shape: Shape, modes: list[str]) -> dict:
    config = get_preset(args.preset)
    x, ts, text, image = random_inputs(config.wan, shape, device, seed=args.seed)
    results: dict = {}
    ref = None
    for mode in ["bf16", *modes]:
        free(device)
        log(f"plain {mode}: building the random-weight model")
        model = build_random_wan(config.wan, device, seed=args.seed)  # same seed: the same weights
        if mode != "bf16":
            fp8 = quantize_fp8(model, mode)
            results[f"{mode}_summary"] = str(fp8)
            log(str(fp8))
        if args.compile:
            model.compile_repeated_blocks()

        @torch.no_grad()
        def forward(model=model):
            return model(x, ts, text, image, return_dict=False)[0]

        try:
            results[mode], out = measure(f"plain {mode}", model, forward, device, args, ref)
        except torch.OutOfMemoryError as e:
            results[mode] = {"error": f"out of memory: {str(e)[:200]}", "peak_gib": peak_gib(device)}
            log(f"plain {mode}: {results[mode]}")
            out = None
        if mode == "bf16":
            ref = out
        del model, forward, out
        yield results
    return results


def bench_dual(args, device, shape: Shape):
    config = get_preset(args.preset)
    inputs = dual_inputs(config, shape, device, seed=args.seed)  # noisy, cond, timestep, plucker, text, image
    results: dict = {}
    free(device)
    try:
        log("dual bf16: building both streams")
        base = build_random_wan(config.wan, device, seed=args.seed)
        model = DualStreamWan.from_base(
            base, config, ("rgb", "depth"), LocalExchange(), reuse_base=True
        ).eval()
        del base
        ref = None
        for mode in ("bf16", "weight"):
            if mode == "weight":
                torch._dynamo.reset()
                fp8 = quantize_fp8(model, "weight")
                results["weight_summary"] = str(fp8)
                log(str(fp8))
                free(device)
            if args.compile:
                model.compile_blocks()

            @torch.no_grad()
            def forward(model=model):
                return model(*inputs)

            results[mode], out = measure(f"dual {mode}", model, forward, device, args, ref)
            if mode == "bf16":
                ref = {s: v.float() for s, v in out.items()}
            del forward, out
            yield results
    except torch.OutOfMemoryError as e:
        results["error"] = f"out of memory: {str(e)[:200]}"
        results["peak_gib"] = peak_gib(device)
        log(f"dual: {results['error']}")
        yield results
        if "weight" not in results:  # bf16 did not fit: build the streams from an fp8 base instead
            yield from _dual_from_fp8_base(args, device, config, inputs, results)


def _dual_from_fp8_base(args, device, config, inputs, results: dict):
    """Both streams in fp8 "weight" when their bf16 weights do not fit the card: the base is quantised before
    the second stream is copied from it (no bf16 reference then: no error figures)."""
    gc.collect()
    free(device)
    try:
        log("dual weight: building both streams from an fp8 base (bf16 did not fit)")
        base = build_random_wan(config.wan, device, seed=args.seed)
        results["weight_base_summary"] = str(quantize_fp8(base, "weight"))
        model = DualStreamWan.from_base(
            base, config, ("rgb", "depth"), LocalExchange(), reuse_base=True
        ).eval()
        del base
        if args.compile:
            model.compile_blocks()

        @torch.no_grad()
        def forward(model=model):
            return model(*inputs)

        results["weight"], _ = measure("dual weight (fp8 base)", model, forward, device, args)
    except (torch.OutOfMemoryError, RuntimeError, TypeError, ValueError) as e:
        results["weight_error"] = f"{type(e).__name__}: {str(e)[:300]}"
        log(f"dual weight: {results['weight_error']}")
    yield results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="wan2.1-i2v-14b", help="model preset (random weights)")
    p.add_argument("--views", type=int, default=17, help="views (pixel frames), 4k+1")
    p.add_argument("--height", type=int, default=720, help="panorama height")
    p.add_argument("--width", type=int, default=None, help="panorama width (default 2 x height)")
    p.add_argument("--modes", default="weight,dynamic", help="fp8 modes to time against bf16 (comma list)")
    p.add_argument("--dual", action=argparse.BooleanOptionalAction, default=True,
                   help="also the dual-stream forward in bf16 and fp8 weight (both streams on this card)")  # fmt: skip
    p.add_argument("--compile", action="store_true", help="compile the blocks after quantising")
    p.add_argument("--iters", type=int, default=3, help="timed forwards per setting")
    p.add_argument("--warmup", type=int, default=1, help="untimed forwards before them")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--seed", type=int, default=0, help="weights and inputs seed")
    p.add_argument("--out", default="bench_fp8.json", help="JSON output path")
    args = p.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    shape = Shape(args.views, args.height, args.width or 2 * args.height)
    modes = [m for m in args.modes.split(",") if m]
    if "dynamic" in modes and not fp8_supported(device):
        log(f"skipping fp8 dynamic: {device} has no float8 matmuls (CUDA compute capability 8.9+)")
        modes.remove("dynamic")
    import torchao

    results: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "torchao": torchao.__version__, "date": time.strftime("%Y-%m-%d"),
        "args": vars(args), "tokens_per_stream": shape.tokens,
    }  # fmt: skip
    log(
        f"{args.preset} at {shape.frames}x{shape.height}x{shape.width} ({shape.tokens} tokens) on {results['device']}"
    )
    for partial in bench_plain(args, device, shape, modes):
        results["plain"] = partial
        dump(results, args.out)  # after every measurement: a run cut short keeps what it measured
    if args.dual:
        for partial in bench_dual(args, device, shape):
            results["dual"] = partial
            dump(results, args.out)
    ratios = {}
    plain = results["plain"]
    for mode in modes:
        if "forward" in plain.get(mode, {}) and "forward" in plain["bf16"]:
            ratios[f"plain_{mode}_vs_bf16_forward"] = (
                plain[mode]["forward"]["median_s"] / plain["bf16"]["forward"]["median_s"]
            )
            if plain[mode]["peak_gib"] is not None:
                ratios[f"plain_{mode}_vs_bf16_peak"] = plain[mode]["peak_gib"] / plain["bf16"]["peak_gib"]
    dual = results.get("dual", {})
    if "forward" in dual.get("weight", {}):
        ratios["dual_weight_vs_bf16_forward"] = (
            dual["weight"]["forward"]["median_s"] / dual["bf16"]["forward"]["median_s"]
        )
    results["ratios"] = ratios
    dump(results, args.out)
    print(json.dumps(ratios, indent=2))


if __name__ == "__main__":
    main()
