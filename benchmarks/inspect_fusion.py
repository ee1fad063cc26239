"""Does torch.compile (inductor) fuse the elementwise and reduction work of one Wan block? (issue 22, item 1)

    python benchmarks/inspect_fusion.py --json fusion_cpu.json      # tiny preset on the CPU, < 1 min

On a GPU (the device prefix installs the wheels the repository carries):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src
    python3 benchmarks/inspect_fusion.py --preset wan2.1-i2v-14b --tokens 20250 --device cuda --dtype bf16 \
        --iters 50 --json fusion_14b.json   # add --backward for forward + backward; 1.3B: wan2.1-1.3b-i2v

What it measures. One diffusers `WanTransformerBlock` of `--preset`'s widths (a `WanTransformer3DModel` of the
preset with one layer, random weights in `--dtype`, `wan_bench_utils.build_random_wan`, with diffusers'
`_keep_in_fp32_modules` (RoPE tables, `scale_shift_table`) back in float32 as `load_base_model` keeps them;
`--no_keep_fp32`: all in `--dtype` as the other benchmarks build it), batch 1, `--tokens` tokens (20,250 = 17
views at 720x1440), 512 text + 257 image context tokens, the model's own RoPE tables.
Sub-functions of the block, each the block's own code on the block's own modules, are run eagerly and compiled
apart (`torch.compile(dynamic=False)`, as `DualStreamWan.compile_blocks` compiles a region):
- rms_norm_q / rms_norm_qk: `attn1.norm_q` (and `norm_k`), the RMSNorm across heads of the q (k) projection;
- rope_qk: the processor's rotary embedding of q and k (copied from diffusers' `WanAttnProcessor`, where it is
  a closure);
- qk_norm_rope: both together, the whole elementwise chain between the q/k projections and attention;
- norm_modulate: the AdaLN chunk (`scale_shift_table + temb`) and `norm1(x.float()) * (1 + scale) + shift`;
- gate_residual_norm: the gated residual `x.float() + attn_out * gate` and the next FP32 LayerNorm (`norm2`);
then the whole block. For each: eager kernels, compiled kernels, and the median time of each (`--iters`
synchronised calls after `--warmup`).

How kernels are counted. Eager: `torch.profiler` over one call: on CUDA its device events (kernels, memcpy,
memset); on the CPU, down each call tree, the first aten op with a kernel of its own (what it calls inside is
part of it; a composite such as `rms_norm` or `.to()` is looked into; views and allocations are not kernels).
The compiled outputs are checked against eager ones (`max_abs_diff`). Compiled: the launches in inductor's
output code (`torch._inductor.utils.run_and_get_code`, caches off so it is really generated): calls of the
kernels it generated (triton `@triton.jit` kernels, C++ `cpp_fused_*` kernels) and extern calls
(`extern_kernels.mm`, attention and other aten fallbacks); inductor's own metrics (`generated_kernel_count`,
`ir_nodes_pre_fusion`) are recorded beside them. On CUDA the compiled call is also profiled
(`compiled_device_kernels`). "Fused" means fewer compiled kernels than eager ones; the kernel names (inductor
names a kernel after the aten ops in it, e.g. `..._mean_mul_pow_rsqrt_...`) show what landed together. A C++
kernel is one call that may hold several loop nests (one OpenMP region); a triton kernel is one launch.

JSON (`--json`): per sub-function eager_kernels, compiled_kernels (= generated + extern), the names, eager_s
and compiled_s (medians), and the block's compiled kernel and extern call counts. `--autocast` runs everything
under bf16 autocast as training does (inference runs the bf16 model without it).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch._C import DispatchKey

sys.path.insert(0, str(Path(__file__).resolve().parent))
from panowan.models.presets import get_preset
from panowan.models.weight_conversion import cast_keep_fp32
from wan_bench_utils import Shape, build_random_wan, summary, time_cuda

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
CASES = ("rms_norm_q", "rms_norm_qk", "rope_qk", "qk_norm_rope", "norm_modulate", "gate_residual_norm")

_ALLOCATIONS = frozenset(
    {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "resize_"}
)
_CPU_MATMUL = re.compile(
    r"^aten::(mm|addmm|bmm|baddbmm|_scaled_dot_product\w*|_flash_attention\w*|_efficient_attention\w*)$"
)
_CUDA_MATMUL = re.compile(r"gemm|gemv|cutlass|xmma|nvjet|cublas|flash|fmha|sdpa|attention", re.IGNORECASE)


def apply_rotary_emb(
    hidden_states: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor
) -> torch.Tensor:
    """diffusers' `WanAttnProcessor` rotary embedding, verbatim (a closure there); q or k `B,S,heads,hd`."""
    x1, x2 = hidden_states.unflatten(-1, (-1, 2)).unbind(-1)
    cos = freqs_cos[..., 0::2]
    sin = freqs_sin[..., 1::2]
    out = torch.empty_like(hidden_states)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(hidden_states)


@dataclass
class Case:
    """One piece of the block: `fn(*inputs)`, its family and the fewest kernels it could take."""

    name: str
    family: str
    fn: Callable[..., Any]
    inputs: tuple[torch.Tensor, ...]
    ideal_kernels: int
    question: str


def token_grid(tokens: int, max_len: int) -> tuple[int, int, int]:
    """A latent token grid (frames, rows, columns) of exactly `tokens` tokens for the RoPE tables, columns
    about twice the rows as in an ERP panorama, every side at most the model's `rope_max_seq_len`."""
    for t in (d for d in range(1, tokens + 1) if tokens % d == 0):
        rest = tokens // t
        rows = max(d for d in range(1, math.isqrt(max(rest // 2, 1)) + 1) if rest % d == 0)
        if max(t, rows, rest // rows) <= max_len:
            return t, rows, rest // rows
    raise ValueError(f"{tokens} tokens do not factor into a grid with sides <= {max_len}")


def build_block(
    preset: str, device: torch.device, dtype: torch.dtype, seed: int, keep_fp32: bool = True
) -> tuple[nn.Module, nn.Module, dict]:
    """The preset's first Wan block and the model's RoPE module (a one-layer `WanTransformer3DModel`), in
    `dtype` with diffusers' `_keep_in_fp32_modules` (RoPE tables, `scale_shift_table`, the FP32 LayerNorms)
    back in float32 as `load_base_model` keeps them, unless not `keep_fp32` (everything in `dtype`)."""
    wan = {**get_preset(preset).wan, "num_layers": 1}
    model = build_random_wan(wan, device, dtype, seed=seed)
    if keep_fp32:
        cast_keep_fp32(model, dtype)
    model.requires_grad_(True)
    return model.blocks[0], model.rope, wan


def build_cases(
    block: nn.Module,
    rope: nn.Module,
    wan: dict,
    tokens: int,
    device: torch.device,
    dtype: torch.dtype,
    seed: int,
    requires_grad: bool = False,
) -> tuple[list[Case], tuple[Any, ...]]:
    """The sub-function cases and the whole block's inputs (hidden `1,S,D`, context, temb `1,6,D`, RoPE);
    every input but the RoPE tables requires grad when `requires_grad`."""
    dim = wan["num_attention_heads"] * wan["attention_head_dim"]
    heads = wan["num_attention_heads"]
    t, rows, cols = token_grid(tokens, wan["rope_max_seq_len"])
    shape = Shape()
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(*size: int) -> torch.Tensor:
        return torch.randn(*size, generator=g, device=device, dtype=dtype).requires_grad_(requires_grad)

    hidden, q, k, attn_out = (randn(1, tokens, dim) for _ in range(4))  # attn_out: an attention's projection
    context = randn(1, shape.image_tokens + shape.text_tokens, dim)
    temb = randn(1, 6, dim)
    cos, sin = rope(torch.empty(1, 1, t, 2 * rows, 2 * cols, device=device, dtype=dtype))
    attn1 = block.attn1

    def rms_norm_q(q: torch.Tensor) -> torch.Tensor:
        return attn1.norm_q(q)

    def rms_norm_qk(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return attn1.norm_q(q), attn1.norm_k(k)

    def rope_qk(
        q4: torch.Tensor, k4: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        return apply_rotary_emb(q4, cos, sin), apply_rotary_emb(k4, cos, sin)

    def qk_norm_rope(
        q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        q4 = attn1.norm_q(q).unflatten(2, (heads, -1))
        k4 = attn1.norm_k(k).unflatten(2, (heads, -1))
        return apply_rotary_emb(q4, cos, sin), apply_rotary_emb(k4, cos, sin)

    def norm_modulate(x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        shift, scale, _gate, *_ = (block.scale_shift_table + temb.float()).chunk(6, dim=1)
        return (block.norm1(x.float()) * (1 + scale) + shift).type_as(x)

    def gate_residual_norm(
        x: torch.Tensor, attn_out: torch.Tensor, temb: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        _shift, _scale, gate, *_ = (block.scale_shift_table + temb.float()).chunk(6, dim=1)
        x = (x.float() + attn_out * gate).type_as(x)
        return x, block.norm2(x.float()).type_as(x)

    q4, k4 = q.unflatten(2, (heads, -1)), k.unflatten(2, (heads, -1))
    cases = [
        Case("rms_norm_q", "rmsnorm", rms_norm_q, (q,), 1,
             "mean of squares, rsqrt and weight multiply in one kernel"),
        Case("rms_norm_qk", "rmsnorm", rms_norm_qk, (q, k), 2, "one kernel per tensor (or both in one)"),
        Case("rope_qk", "rope", rope_qk, (q4, k4, cos, sin), 2, "the rotation is one kernel per q and k"),
        Case("qk_norm_rope", "rmsnorm+rope", qk_norm_rope, (q, k, cos, sin), 2,
             "RMSNorm and rotation in one kernel per q and k"),
        Case("norm_modulate", "modulation", norm_modulate, (hidden, temb), 1,
             "LayerNorm and (1 + scale) * x + shift in one kernel"),
        Case("gate_residual_norm", "modulation", gate_residual_norm, (hidden, attn_out, temb), 1,
             "gated residual and the next LayerNorm in one kernel"),
    ]  # fmt: skip
    return cases, (hidden, context, temb, (cos, sin))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in _tensors(o)] if isinstance(out, (tuple, list)) else []


def make_runner(
    fn: Callable[..., Any],
    inputs: Sequence[Any],
    backward: bool,
    autocast: bool,
    device: torch.device,
    params: Sequence[torch.Tensor] = (),
) -> Callable[[], Any]:
    """One call of `fn(*inputs)`: under no_grad, or forward + backward when `backward` (`torch.autograd.grad`
    of the outputs with fixed output gradients, so no loss ops and no accumulation into `.grad`, with respect
    to the inputs that require grad and `params`); under bf16 autocast when `autocast`."""
    grads: list[torch.Tensor] = []
    leaves = [x for x in inputs if isinstance(x, torch.Tensor) and x.requires_grad] + list(params)

    def run() -> Any:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            if not backward:
                with torch.no_grad():
                    return fn(*inputs)
            outs = _tensors(fn(*inputs))
        if not grads:
            grads.extend(torch.ones_like(o) for o in outs)
        return torch.autograd.grad(outs, leaves, grads, allow_unused=True)

    return run


@functools.cache
def _is_cpu_kernel(name: str) -> bool:
    """Whether a profiled CPU event is an aten op with a kernel of its own that computes: not a view, not an
    allocation, not a composite (`CompositeImplicitAutograd`: it runs the ops it calls, which are counted)."""
    if not name.startswith("aten::") or name[len("aten::") :] in _ALLOCATIONS:
        return False
    packet = getattr(torch.ops.aten, name[len("aten::") :], None)
    if packet is None:
        return True
    overloads = []
    for overload_name in packet.overloads():
        try:
            overloads.append((overload_name, getattr(packet, overload_name)))
        except (AttributeError, RuntimeError):  # listed for TorchScript, absent here
            continue
    if not overloads:
        return True
    if any(o.is_view for _, o in overloads):
        return False
    composite = DispatchKey.CompositeImplicitAutograd
    return not all(o.has_kernel_for_dispatch_key(composite) for n, o in overloads if not n.startswith("out"))


def _cpu_kernels(events: Sequence[Any]) -> Counter[str]:
    """The eager kernels of a CPU profile: from each top-level event down, the first op with a kernel of its
    own is counted and what it calls internally is part of it (a composite is looked into instead)."""
    found: Counter[str] = Counter()

    def visit(e: Any) -> None:
        if _is_cpu_kernel(e.name):
            found[e.name] += 1
        else:
            for child in e.cpu_children:
                visit(child)

    for e in events:
        if e.cpu_parent is None:
            visit(e)
    return found


def profiled_kernels(run: Callable[[], Any], device: torch.device) -> Counter[str]:
    """Kernels of one call of `run`, by name: CUDA device events on a GPU; on the CPU the first aten op with a
    kernel of its own down each call tree (`_cpu_kernels`)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    _sync(device)
    with profile(activities=activities) as prof:
        run()
        _sync(device)
    events = prof.events()
    if device.type != "cuda":
        return _cpu_kernels(events)
    found = Counter(e.name for e in events if e.device_type == DeviceType.CUDA)
    if not found:  # older profilers attach device kernels to their CPU events
        found = Counter(k.name for e in events for k in getattr(e, "kernels", []))
    return found


def _is_matmul(name: str, device: torch.device) -> bool:
    return bool(_CUDA_MATMUL.search(name) if device.type == "cuda" else _CPU_MATMUL.match(name))


_KERNEL_DEF = re.compile(r"^(\w+) = async_compile\.\w+\(", re.MULTILINE)
_EXTERN_CALL = re.compile(r"\b(extern_kernels\.\w+|torch\.ops\.\w+\.\w+(?:\.\w+)?|aten\.\w+(?:\.\w+)?)\(")
_KERNEL_SOURCE = re.compile(r"r?\'\'\'.*?\'\'\'", re.DOTALL)


def parse_output_code(code: str) -> dict[str, Any]:
    """Launches in one inductor output module: generated kernels (by name) and extern calls (by target),
    read in the whole module less kernel sources and comments, so launches in graph partitions count too."""
    names = _KERNEL_DEF.findall(code)
    launcher = "\n".join(
        line for line in _KERNEL_SOURCE.sub("", code).splitlines() if not line.lstrip().startswith("#")
    )
    generated: Counter[str] = Counter()
    for name in names:
        n = len(re.findall(rf"\b{re.escape(name)}(?:\.run)?\(", launcher))
        if n:
            generated[name] = n
    extern = Counter(m for m in _EXTERN_CALL.findall(launcher) if "assert" not in m)
    return {"generated": generated, "extern": extern}


def compile_and_inspect(
    fn: Callable[..., Any],
    inputs: Sequence[Any],
    backward: bool,
    autocast: bool,
    device: torch.device,
    params: Sequence[torch.Tensor] = (),
) -> tuple[Callable[[], Any], dict[str, Any]]:
    """`torch.compile(fn, dynamic=False)`, compiled by a first call, caches off, and what inductor made."""
    from torch._functorch import config as functorch_config
    from torch._inductor import config as inductor_config
    from torch._inductor import metrics
    from torch._inductor.utils import run_and_get_code

    compiled = torch.compile(fn, dynamic=False)
    run = make_runner(compiled, inputs, backward, autocast, device, params)
    metrics.reset()
    with inductor_config.patch(fx_graph_cache=False), functorch_config.patch(enable_autograd_cache=False):
        _, codes = run_and_get_code(run)
    generated: Counter[str] = Counter()
    extern: Counter[str] = Counter()
    per_graph = []
    for code in codes:
        parsed = parse_output_code(code)
        generated.update(parsed["generated"])
        extern.update(parsed["extern"])
        per_graph.append(sum(parsed["generated"].values()) + sum(parsed["extern"].values()))
    info = {
        "graphs": len(codes),
        "kernels_per_graph": per_graph,
        "generated_kernels": sum(generated.values()),
        "extern_calls": sum(extern.values()),
        "generated_names": dict(generated),
        "extern_names": dict(extern),
        "inductor_generated_kernel_count": metrics.generated_kernel_count,
        "inductor_ir_nodes_pre_fusion": metrics.ir_nodes_pre_fusion,
    }
    return run, info


def measure(
    fn: Callable[..., Any],
    inputs: Sequence[Any],
    args: argparse.Namespace,
    device: torch.device,
    params: Sequence[torch.Tensor] = (),
) -> dict[str, Any]:
    """Eager and compiled kernels and times of `fn(*inputs)` (backward: gradients of inputs and `params`)."""
    autocast = args.autocast
    eager = make_runner(fn, inputs, args.backward, autocast, device, params)
    reference = _tensors(eager())  # also the lazy initialisation, outside the profile
    eager_kernels = profiled_kernels(eager, device)
    eager_times = time_cuda(eager, args.warmup, args.iters)
    compiled, info = compile_and_inspect(fn, inputs, args.backward, autocast, device, params)
    pairs = zip(_tensors(compiled()), reference)
    diff = max(((o.float() - r.float()).abs().max().item() for o, r in pairs), default=0.0)
    compiled_times = time_cuda(compiled, args.warmup, args.iters)
    result = {
        "eager_kernels": sum(eager_kernels.values()),
        "eager_non_matmul_kernels": sum(n for k, n in eager_kernels.items() if not _is_matmul(k, device)),
        "eager_names": dict(eager_kernels.most_common()),
        "compiled_kernels": info["generated_kernels"] + info["extern_calls"],
        **info,
        "eager_s": summary(eager_times)["median_s"],
        "compiled_s": summary(compiled_times)["median_s"],
        "max_abs_diff": diff,  # compiled against eager outputs (gradients with --backward)
    }
    if device.type == "cuda":
        result["compiled_device_kernels"] = sum(profiled_kernels(compiled, device).values())
    result["speedup"] = result["eager_s"] / result["compiled_s"]
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--preset", default="tiny", help="model preset (random weights): tiny, wan2.1-i2v-14b, ..."
    )
    p.add_argument("--tokens", type=int, default=1024, help="sequence length (20250 = 17 views at 720x1440)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="bf16", help="weights and inputs")
    p.add_argument("--autocast", action="store_true", help="run under bf16 autocast (as training does)")
    p.add_argument(
        "--no_keep_fp32", action="store_true", help="RoPE tables and modulation table in --dtype too"
    )
    p.add_argument("--backward", action="store_true", help="measure forward + backward instead of forward")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    p.add_argument("--no_block", action="store_true", help="skip the whole block")
    p.add_argument("--iters", type=int, default=20, help="timed calls (median)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    wanted = [c for c in args.cases.split(",") if c]
    if unknown := sorted(set(wanted) - set(CASES)):
        p.error(f"unknown cases {unknown}; choose from {CASES}")

    block, rope, wan = build_block(args.preset, device, dtype, args.seed, keep_fp32=not args.no_keep_fp32)
    cases, block_inputs = build_cases(block, rope, wan, args.tokens, device, dtype, args.seed, args.backward)
    params = list(block.parameters())
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "diffusers": __import__("diffusers").__version__,
        "preset": args.preset,
        "dim": wan["num_attention_heads"] * wan["attention_head_dim"],
        "tokens": args.tokens,
        "rope_grid": list(token_grid(args.tokens, wan["rope_max_seq_len"])),
        "dtype": args.dtype,
        "autocast": args.autocast,
        "keep_fp32_modules": not args.no_keep_fp32,
        "mode": "forward+backward" if args.backward else "forward",
        "cases": {},
    }
    for case in cases:
        if case.name not in wanted:
            continue
        r = measure(case.fn, case.inputs, args, device, params)
        r.update(family=case.family, question=case.question, ideal_kernels=case.ideal_kernels)
        r["fused"] = r["compiled_kernels"] < r["eager_kernels"]
        # the fewest forward kernels: a question of the forward graph only
        r["as_fused_as_ideal"] = None if args.backward else r["generated_kernels"] <= case.ideal_kernels
        results["cases"][case.name] = r
    if not args.no_block:
        results["block"] = measure(block, block_inputs, args, device, params)
    print_table(results)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


def print_table(results: dict[str, Any]) -> None:
    print(
        f"{results['device']}  torch {results['torch']}  {results['preset']}  D={results['dim']}  "
        f"S={results['tokens']}  {results['dtype']}  {results['mode']}"
    )
    print(f"{'case':20s} {'eager k':>8s} {'compiled k (gen+ext)':>21s} {'fused':>6s} {'eager ms':>9s} "
          f"{'compiled ms':>12s} {'speedup':>8s}")  # fmt: skip
    rows = [*results["cases"].items()] + ([("block", results["block"])] if "block" in results else [])
    for name, r in rows:
        k = f"{r['compiled_kernels']} ({r['generated_kernels']}+{r['extern_calls']})"
        fused = "yes" if r["compiled_kernels"] < r["eager_kernels"] else "no"
        print(f"{name:20s} {r['eager_kernels']:8d} {k:>21s} {fused:>6s} {1e3 * r['eager_s']:9.3f} "
              f"{1e3 * r['compiled_s']:12.3f} {r['speedup']:7.2f}x")  # fmt: skip
    for name, r in results["cases"].items():
        print(f"  {name}: {', '.join(r['generated_names'])}")


if __name__ == "__main__":
    main()
