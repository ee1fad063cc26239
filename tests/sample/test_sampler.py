"""Sampler tests against analytic flows: Gaussian data has a closed-form flow-matching velocity."""

from __future__ import annotations

import pytest
import torch

from panowan.sample.sampler import (
    guided_velocity,
    sample_flow,
    seam_offsets,
    stream_noise,
)


def gaussian_velocity(mu: float, s: float):
    """Exact E[noise - x0 | x_sigma] for x0 ~ N(mu, s^2), x_sigma = (1 - sigma) x0 + sigma noise."""

    def fn(latents, sigma, shift=0):
        a, t = 1.0 - sigma, sigma
        var = a * a * s * s + t * t
        return {k: (t - a * s * s) / var * (x - a * mu) - mu for k, x in latents.items()}

    return fn


@pytest.mark.parametrize("sampler", ["unipc", "euler"])
@pytest.mark.parametrize("flow_shift", [1.0, 3.0])
def test_gaussian_moments_reproduced(sampler, flow_shift):
    params = {"rgb": (0.7, 0.4), "depth": (-1.2, 1.5)}
    noise = stream_noise({"rgb": (1, 20000), "depth": (1, 20000)}, seed=3, dtype=torch.float64)

    def fn(latents, sigma):
        return {k: gaussian_velocity(*params[k])({k: x}, sigma)[k] for k, x in latents.items()}

    steps = 30 if sampler == "unipc" else 200
    out = sample_flow(fn, noise, steps=steps, sampler=sampler, flow_shift=flow_shift, progress=False)
    for name, (mu, s) in params.items():
        x = out[name]
        # Sampling error of the mean/std of 20000 samples is ~ s / 140; the ODE error must stay below it.
        assert abs(x.mean().item() - mu) < 0.02 * max(s, 1), (name, x.mean().item(), mu)
        assert abs(x.std().item() - s) < 0.02 * max(s, 1), (name, x.std().item(), s)


def test_deterministic_map_matches_exact_transport():
    """For a Gaussian the flow ODE map is affine: x0 = mu + s * noise. Check sample by sample."""
    mu, s = 0.3, 0.5
    noise = stream_noise({"x": (1, 1000)}, seed=0, dtype=torch.float64)
    for sampler, steps, shift in (("unipc", 100, 3.0), ("euler", 800, 1.0), ("unipc", 600, 5.0)):
        out = sample_flow(
            gaussian_velocity(mu, s), noise, steps=steps, sampler=sampler, flow_shift=shift, progress=False
        )
        torch.testing.assert_close(out["x"], mu + s * noise["x"], atol=5e-3, rtol=0)


def test_noise_independent_per_stream_and_seeded():
    a = stream_noise({"rgb": (4, 8), "depth": (4, 8)}, seed=1)
    b = stream_noise({"depth": (4, 8)}, seed=1)
    c = stream_noise({"rgb": (4, 8)}, seed=2)
    assert not torch.equal(a["rgb"], a["depth"])
    assert torch.equal(a["depth"], b["depth"])  # a process owning one stream draws the same noise
    assert not torch.equal(a["rgb"], c["rgb"])


def test_seam_roll_is_exact_for_translation_equivariant_velocity():
    """A circular-convolution velocity commutes with rolls, so rolling the model input changes nothing."""
    base = gaussian_velocity(0.1, 0.8)

    def fn(latents, sigma, shift=0):
        v = base(latents, sigma)
        return {
            k: v[k] + 0.3 * (torch.roll(x, 1, -1) - 2 * x + torch.roll(x, -1, -1)) for k, x in latents.items()
        }

    noise = stream_noise({"rgb": (1, 2, 3, 4, 16), "depth": (1, 2, 3, 4, 16)}, seed=5, dtype=torch.float64)
    for sampler in ("unipc", "euler"):
        plain = sample_flow(fn, noise, steps=12, sampler=sampler, progress=False)
        rolled = sample_flow(fn, noise, steps=12, sampler=sampler, seam_roll=True, progress=False)
        for k in plain:
            torch.testing.assert_close(rolled[k], plain[k], atol=1e-12, rtol=0)


def test_seam_roll_passes_shifted_inputs():
    """Offsets vary between steps, and the model sees its input rolled by the announced shift."""
    seen = []
    ref = torch.arange(16.0).reshape(1, 16).double()

    def fn(latents, sigma, shift=0):
        seen.append(shift)
        # the roll the sampler applied can be recovered from the probe channel
        assert torch.equal(latents["probe"], torch.roll(ref, shift, -1))
        return {"probe": torch.zeros_like(latents["probe"])}

    sample_flow(fn, {"probe": ref}, steps=8, sampler="euler", seam_roll=True, progress=False)
    assert seen == seam_offsets(8, 16)
    assert len(set(seen)) >= 5 and all(s % 2 == 0 for s in seen)


@pytest.mark.parametrize("guidance, calls_per_step", [(1.0, (1, 0)), (4.0, (1, 1))])
def test_guidance_call_count(guidance, calls_per_step):
    counts = {"cond": 0, "uncond": 0}

    def cond(latents, sigma):
        counts["cond"] += 1
        return {k: torch.ones_like(x) for k, x in latents.items()}

    def uncond(latents, sigma):
        counts["uncond"] += 1
        return {k: torch.zeros_like(x) for k, x in latents.items()}

    steps = 7
    noise = {"rgb": torch.zeros(1, 3), "depth": torch.zeros(1, 3)}
    out = sample_flow(
        cond, noise, steps=steps, sampler="euler", guidance=guidance, uncond_fn=uncond, progress=False
    )
    assert (counts["cond"], counts["uncond"]) == (steps * calls_per_step[0], steps * calls_per_step[1])
    # Euler integrates a constant velocity exactly: x(0) = x(1) - v, v = guidance * 1 + (1 - guidance) * 0.
    torch.testing.assert_close(out["rgb"], torch.full((1, 3), -guidance))


def test_guided_velocity_formula():
    c, u = {"a": torch.tensor([2.0])}, {"a": torch.tensor([1.0])}
    assert guided_velocity(c, u, 3.0)["a"].item() == pytest.approx(4.0)


def test_bad_arguments():
    fn = gaussian_velocity(0, 1)
    noise = {"x": torch.zeros(2)}
    with pytest.raises(ValueError, match="uncond_fn"):
        sample_flow(fn, noise, steps=2, guidance=2.0, progress=False)
    with pytest.raises(ValueError, match="sampler"):
        sample_flow(fn, noise, steps=2, sampler="ddim", progress=False)
    with pytest.raises(ValueError, match="steps"):
        sample_flow(fn, noise, steps=0, progress=False)
