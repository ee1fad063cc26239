"""Regions (models.regions): every checkpoint policy and budget trains like no checkpointing; the selective
policy really keeps attention (the kernels run once, not twice); compiled regions equal eager ones."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from panowan.models.regions import ATTENTION_OPS, checkpointed_blocks
from panowan.models.replicas import tiny_dual_stream, tiny_inputs


class AttentionCounter(TorchDispatchMode):
    """Counts the fused attention forward kernels dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.forwards = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.forwards += func in ATTENTION_OPS
        return func(*args, **(kwargs or {}))


def _loss_and_grads(setup=None) -> tuple[float, dict[str, torch.Tensor]]:
    model, _ = tiny_dual_stream(seed=3)
    if setup is not None:
        setup(model)
    x = tiny_inputs(batch=1, frames=5, seed=4)
    g = torch.Generator().manual_seed(5)
    target = {s: torch.randn(x["noisy"][s].shape, generator=g) for s in x["noisy"]}
    out = model(**x)
    loss = sum(torch.nn.functional.mse_loss(out[s], target[s]) for s in out)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads


@pytest.fixture(scope="module")
def reference():
    return _loss_and_grads()


@pytest.mark.parametrize(
    "policy,fraction", [("full", 1.0), ("selective", 1.0), ("selective", 0.5), ("full", 0.0)]
)
def test_every_policy_and_budget_trains_like_no_checkpointing(reference, policy, fraction):
    loss, grads = _loss_and_grads(lambda m: m.enable_gradient_checkpointing(policy, fraction))
    ref_loss, ref_grads = reference
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    assert grads.keys() == ref_grads.keys() and len(grads) > 100
    for n, g in ref_grads.items():
        torch.testing.assert_close(grads[n], g, rtol=1e-5, atol=1e-7, msg=n)


def _attention_forwards(policy: str | None) -> int:
    model, _ = tiny_dual_stream(seed=1)
    if policy is not None:
        model.enable_gradient_checkpointing(policy)
    x = tiny_inputs(batch=1, frames=5, seed=2)
    with AttentionCounter() as counter:
        out = model(**x)
        sum(o.square().mean() for o in out.values()).backward()
    return counter.forwards


def test_selective_policy_keeps_attention_full_recomputes_it():
    plain = _attention_forwards(None)
    assert plain > 0, "no fused attention kernel seen: ATTENTION_OPS misses this build's kernel"
    assert _attention_forwards("full") == 2 * plain  # every region is checkpointed, so all run twice
    assert _attention_forwards("selective") == plain


def test_compiled_selective_regions_equal_eager(reference):
    """The checkpoint sits inside the compiled function (aot_eager: the same graph capture and
    forward/backward partition as inductor, without generating kernels)."""

    def setup(model):
        model.enable_gradient_checkpointing("selective", 0.5)
        model.compile_blocks(backend="aot_eager")

    torch._dynamo.reset()
    loss, grads = _loss_and_grads(setup)
    ref_loss, ref_grads = reference
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for n, g in ref_grads.items():
        torch.testing.assert_close(grads[n], g, rtol=1e-4, atol=1e-6, msg=n)


def test_bad_settings_are_refused():
    model, _ = tiny_dual_stream(seed=1)
    with pytest.raises(ValueError, match="policy"):
        model.enable_gradient_checkpointing("some")
    with pytest.raises(ValueError, match="fraction"):
        model.enable_gradient_checkpointing("full", 1.5)
    assert [checkpointed_blocks(40, f) for f in (0.0, 0.5, 0.76, 1.0)] == [0, 20, 30, 40]
