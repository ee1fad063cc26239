"""The quality benchmark's and the ablation's summaries (benchmarks/bench_quality.py, benchmarks/ablation.py): the
item-4 checks follow the measured margins, the ablation table is the mean and spread over seeds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checks_follow_the_margins():
    checks = _load("bench_quality").checks
    best = {"hole_psnr": {"margin": 1.6}, "hole_ssim": {"margin": -0.01}, "hole_absrel": {"margin": 0.05, "ratio": 0.7},
            "hole_consistency_rgb_l1": {"margin": 0.01}}  # fmt: skip
    got = checks("hard", best)
    assert got["hole_psnr_best_plus_1.5dB"] is True and got["hole_ssim_above_best"] is False
    assert (
        got["hole_absrel_le_0.6x_best"] is False
        and got["hole_consistency_rgb_l1_better_than_every_fill"] is True
    )
    assert (
        got["hole_consistency_depth_rel_better_than_every_fill"] is None
    )  # not measured: neither true nor false
    easy = checks("easy", {"hole_psnr": {"margin": -0.2}, "hole_absrel": {"margin": 0.0}})
    assert easy == {"easy_no_worse_than_best_fill_psnr": False, "easy_no_worse_than_best_fill_absrel": True}


def test_ablation_table_is_mean_and_spread_over_seeds():
    ablation = _load("ablation")
    records = [
        {"variant": "full", "seed": s, "metrics": {"hole": {"psnr": p}}} for s, p in ((0, 18.0), (1, 19.0))
    ]
    records.append({"variant": "none", "seed": 0, "eval_error": "infer failed"})
    table = ablation.summarise(records, ["full", "none"])
    assert table["full"]["seeds"] == 2
    assert table["full"]["hole/psnr"] == pytest.approx({"mean": 18.5, "spread": 0.5})
    assert table["none"] == {"seeds": 0}
    assert set(ablation.VARIANTS) == {"full", "no-cross", "no-pose", "none", "alone"}
    assert ablation.VARIANTS["alone"][-2:] == ["--max_grad_norm", "0"]
