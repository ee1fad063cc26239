"""StepCache: never skipping changes nothing; a repeated call skips and gives the computed output; the
decision is joint over streams; residuals follow the seam roll; training refuses it."""

from __future__ import annotations

import pytest
import torch

from panowan.models.replicas import tiny_dual_stream, tiny_inputs
from panowan.models.step_cache import StepCache
from panowan.parallel.exchange import LocalExchange


def _perturbed(x: dict, scale: float, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    noisy = {s: v + scale * torch.randn(v.shape, generator=g) for s, v in x["noisy"].items()}
    return {**x, "noisy": noisy}


@torch.no_grad()
def test_threshold_zero_never_skips_and_changes_nothing():
    model, _ = tiny_dual_stream(seed=1)
    x = tiny_inputs(batch=1, frames=5, seed=2)
    cache = StepCache(threshold=0.0)
    for k in range(3):
        xk = _perturbed(x, 0.1 * k, k)
        want = model(**xk)
        got = model(**xk, step_cache=cache)
        for s in want:
            assert torch.equal(got[s], want[s])
    assert (cache.calls, cache.skipped) == (3, 0)


@torch.no_grad()
def test_repeated_call_skips_and_equals_the_computed_output():
    model, _ = tiny_dual_stream(seed=1)
    x = tiny_inputs(batch=1, frames=5, seed=2)
    cache = StepCache(threshold=0.05)
    first = model(**x, step_cache=cache)
    again = model(**x, step_cache=cache)  # first block's residual unchanged: the rest is skipped
    assert (cache.calls, cache.skipped) == (2, 1)
    for s in first:
        torch.testing.assert_close(again[s], first[s], rtol=1e-5, atol=1e-6)
    far = model(**_perturbed(x, 3.0, 7), step_cache=cache)  # a large change: computed again
    assert cache.skipped == 1
    assert not torch.allclose(far["rgb"], first["rgb"])


class OtherStreamChanged(LocalExchange):
    """Reports an infinite change for the peer's stream (as a rank whose stream moved would)."""

    def swap(self, states):
        if all(t.numel() == 1 for t in states.values()):
            return {n: torch.full_like(t, float("inf")) for n, t in states.items()}
        return super().swap(states)


@torch.no_grad()
def test_the_decision_is_joint_over_streams():
    model, _ = tiny_dual_stream(seed=1, exchange=OtherStreamChanged())
    x = tiny_inputs(batch=1, frames=5, seed=2)
    cache = StepCache(threshold=0.05)
    model(**x, step_cache=cache)
    model(**x, step_cache=cache)
    assert cache.skipped == 0


def test_residuals_follow_the_seam_roll():
    grid = (2, 3, 4)
    cache = StepCache(threshold=1.0, shift_columns=1)
    rest = torch.arange(2 * 3 * 4 * 2, dtype=torch.float32).reshape(1, 24, 2)
    cache.store_rest({"rgb": rest}, grid)  # stored un-rolled: columns rolled back by 1
    cache.shift_columns = 3
    got = cache.cached_rest(torch.zeros_like(rest), "rgb").reshape(1, *grid, 2)
    want = torch.roll(rest.reshape(1, *grid, 2), 2, dims=3)  # -1 then +3
    assert torch.equal(got, want)


def test_training_and_bad_thresholds_are_refused():
    model, _ = tiny_dual_stream(seed=1)
    x = tiny_inputs(batch=1, frames=5, seed=2)
    with pytest.raises(ValueError, match="no_grad"):
        model(**x, step_cache=StepCache(threshold=0.1))
    with pytest.raises(ValueError, match=">= 0"):
        StepCache(threshold=-1.0)
