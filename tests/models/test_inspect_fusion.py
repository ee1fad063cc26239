"""benchmarks/inspect_fusion.py at tiny size on the CPU: every sub-function of a Wan block and the whole block
are counted (eager kernels, compiled kernels, extern calls) and timed, and the RMSNorm of q is one compiled
kernel holding its reduction and its weight multiply."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "inspect_fusion.py"

pytestmark = pytest.mark.timeout(120)  # ~15 s on 2 idle cores (seven inductor compilations)


def _load():
    spec = importlib.util.spec_from_file_location("inspect_fusion", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def test_tiny_block_counts_and_times(tmp_path: Path) -> None:
    out = tmp_path / "fusion.json"
    fusion = _load()
    result = fusion.main(
        ["--device", "cpu", "--tokens", "256", "--iters", "3", "--warmup", "1", "--json", str(out)]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["rope_grid"] == [1, 8, 32] and result["mode"] == "forward"

    assert set(result["cases"]) == set(fusion.CASES)
    for name, case in result["cases"].items():
        assert case["eager_kernels"] > 0 and case["compiled_kernels"] > 0 and case["generated_kernels"] > 0, (
            name
        )
        assert case["eager_s"] > 0 and case["compiled_s"] > 0, name
        assert case["compiled_kernels"] <= case["eager_kernels"], name
        assert case["max_abs_diff"] < 0.1, name  # bf16: the compiled function computes what eager does

    rms = result["cases"]["rms_norm_q"]
    assert (
        rms["eager_kernels"] >= 5 and rms["fused"]
    )  # cast, pow, mean, add eps, rsqrt, weight mul, cast back
    assert rms["generated_kernels"] == 1 and rms["extern_calls"] == 0
    (kernel,) = rms["generated_names"]
    assert (
        "rsqrt" in kernel and "mean" in kernel and "mul" in kernel
    )  # reduction and weight multiply together

    block = result["block"]
    assert block["extern_calls"] >= 12  # q, k, v, out of both attentions, the image k, v, the two FFN layers
    assert "addmm" in " ".join(block["extern_names"])
    assert 0 < block["generated_kernels"] < block["eager_non_matmul_kernels"] < block["eager_kernels"]
    assert block["compiled_kernels"] == block["generated_kernels"] + block["extern_calls"]
    assert block["eager_s"] > 0 and block["compiled_s"] > 0
