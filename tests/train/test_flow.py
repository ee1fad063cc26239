"""Flow matching: sigma densities (KS tests against the exact distributions and diffusers' samplers),
Wan's shift (against diffusers' scheduler), noising and x0 recovery, per-sample generators."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from panowan.train import flow


def _draw(density: str, n: int = 4000, **kw) -> np.ndarray:
    return flow.sample_density(density, n, torch.Generator().manual_seed(1), **kw).numpy()


@pytest.mark.parametrize(("mean", "std"), [(0.0, 1.0), (0.5, 0.7)])
def test_logit_normal_has_logit_normal_mean_and_spread(mean: float, std: float) -> None:
    s = _draw("logit_normal", logit_mean=mean, logit_std=std)
    logits = np.log(s / (1 - s))
    assert abs(logits.mean() - mean) < 4 * std / math.sqrt(len(s))
    assert abs(logits.std() - std) < 0.05 * std
    assert stats.kstest(logits, "norm", args=(mean, std)).pvalue > 0.01
    # Not uniform: the pitfall of the original (logit_normal silently sampled uniformly).
    assert stats.kstest(s, "uniform").pvalue < 1e-6


def test_uniform_is_uniform() -> None:
    s = _draw("uniform")
    assert stats.kstest(s, "uniform").pvalue > 0.01
    assert s.min() >= 0 and s.max() < 1


def test_densities_match_diffusers_samplers() -> None:
    from diffusers.training_utils import compute_density_for_timestep_sampling

    torch.manual_seed(0)
    for density, kw in (
        ("logit_normal", {"logit_mean": 0.3, "logit_std": 0.8}),
        ("mode", {"mode_scale": 1.29}),
    ):
        ref = compute_density_for_timestep_sampling(
            density,
            4000,
            logit_mean=kw.get("logit_mean"),
            logit_std=kw.get("logit_std"),
            mode_scale=kw.get("mode_scale"),
        ).numpy()
        ours = _draw(density, **kw)
        assert stats.ks_2samp(ours, ref).pvalue > 0.01, density


def test_shift_matches_diffusers_flow_scheduler() -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    unshifted = torch.linspace(1, 1000, 1000, dtype=torch.float64).flip(0) / 1000
    assert torch.allclose(flow.shift_sigma(unshifted, 3.0).float(), sched.sigmas.float(), atol=1e-6)
    assert torch.equal(flow.shift_sigma(unshifted, 1.0), unshifted)


def test_loss_weightings() -> None:
    s = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    assert torch.allclose(flow.loss_weighting("sigma_sqrt", s).double(), 1 / s**2, rtol=1e-6)
    assert torch.allclose(flow.loss_weighting("cosmap", s).double(), 2 / (math.pi * (1 - 2 * s + 2 * s**2)))
    assert torch.equal(flow.loss_weighting("none", s), torch.ones_like(s))
    assert flow.scheme_parts("logit_normal") == ("logit_normal", "none")
    assert flow.scheme_parts("cosmap") == ("uniform", "cosmap")
    with pytest.raises(ValueError, match="weighting_scheme"):
        flow.scheme_parts("bogus")


def test_add_noise_and_x0_recovery() -> None:
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 2, 3, 5, generator=g), torch.randn(3, 4, 2, 3, 5, generator=g)
    sigma = torch.tensor([0.1, 0.5, 1.0])
    x_t, target = flow.add_noise(x0, noise, sigma)
    for b in range(3):  # explicit per-sample formula
        assert torch.allclose(x_t[b], (1 - sigma[b]) * x0[b] + sigma[b] * noise[b])
    assert torch.equal(target, noise - x0)
    assert torch.allclose(flow.x0_from_velocity(x_t, target, sigma), x0, atol=1e-6)


def test_per_sample_generators_are_placement_independent() -> None:
    kw = {"shift": 3.0}
    both, _ = flow.sample_sigmas([0, 1], step=5, seed=3, weighting_scheme="logit_normal", **kw)
    one, _ = flow.sample_sigmas([1], step=5, seed=3, weighting_scheme="logit_normal", **kw)
    assert both[1] == one[0] and both[0] != both[1]
    other_step, _ = flow.sample_sigmas([0, 1], step=6, seed=3, weighting_scheme="logit_normal", **kw)
    assert not torch.equal(both, other_step)
    rgb = flow.sample_noise((2, 2, 3, 4), [0, 1], 5, 3, "rgb")
    depth = flow.sample_noise((2, 2, 3, 4), [0, 1], 5, 3, "depth")
    assert not torch.allclose(rgb, depth)  # independent per stream
    assert not torch.allclose(rgb[0], rgb[1])  # independent per slot (rank)
    assert torch.equal(flow.sample_noise((2, 2, 3, 4), [1], 5, 3, "rgb")[0], rgb[1])
