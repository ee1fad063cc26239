"""The required placement tests on the tiny DualStreamWan (gloo, CPU):
- two ranks (rank 0 rgb, rank 1 depth) give the one-process outputs and gradients, with and without
  gradient checkpointing;
- four ranks (2 pairs, batch 1 each) give, after sync_gradients, the gradients of one pair on batch 2.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _parallel_harness import load_results, run_ranks

from panowan.models.dual_stream import DualStreamWan
from panowan.models.replicas import tiny_dual_stream, tiny_inputs
from panowan.parallel.exchange import STREAMS
from panowan.parallel.grad_sync import sync_gradients
from panowan.parallel.groups import StreamGroups

SEED, TOL = 5, 1e-5

pytestmark = pytest.mark.timeout(120)  # a deadlocked rank fails the test instead of hanging it


def _build(local_streams: tuple[str, ...], exchange=None) -> DualStreamWan:
    """Tiny model, every parameter trainable, interaction layers moved off their zero initialisation
    (otherwise nothing crosses the exchange and the gradient comparison would be vacuous)."""
    model, _ = tiny_dual_stream(SEED, local_streams=local_streams, exchange=exchange)
    model.requires_grad_(True)
    with torch.no_grad():
        for n in local_streams:  # a per-stream generator: identical in every placement
            g = torch.Generator().manual_seed(100 + STREAMS.index(n))
            for p in model.interactions[n].parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def _inputs(batch: int, take: slice | None = None) -> tuple[dict, dict]:
    """Forward kwargs and targets for all streams, optionally restricted to samples `take`."""
    kwargs = tiny_inputs(batch=batch, seed=SEED)
    g = torch.Generator().manual_seed(SEED + 1)
    targets = {n: torch.randn(kwargs["noisy"][n].shape, generator=g) for n in STREAMS}
    if take is not None:
        kwargs = {
            k: ({n: x[take] for n, x in v.items()} if isinstance(v, dict) else v[take])
            for k, v in kwargs.items()
        }
        targets = {n: t[take] for n, t in targets.items()}
    return kwargs, targets


def _run(model: DualStreamWan, kwargs: dict, targets: dict) -> tuple[dict, DualStreamWan]:
    """Outputs and named grads for a loss summed over the model's streams (mean over the batch)."""
    local = model.local_streams
    kwargs = {
        **kwargs,
        "noisy": {n: kwargs["noisy"][n] for n in local},
        "condition": {n: kwargs["condition"][n] for n in local},
    }
    outputs = model(**kwargs)
    sum(((outputs[n] - targets[n]) ** 2).mean() for n in local).backward()
    return outputs, model


def _named_grads(model: DualStreamWan) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _sync(model: DualStreamWan, groups: StreamGroups) -> None:
    stream_params = [*model.streams.parameters(), *model.interactions.parameters()]
    sync_gradients(groups, stream_params, list(model.plucker_net.parameters()))


def _reference(batch: int, checkpointing: bool = False) -> tuple[dict, dict]:
    model = _build(STREAMS)
    if checkpointing:
        model.enable_gradient_checkpointing()
    outputs, model = _run(model, *_inputs(batch))
    return {n: o.detach() for n, o in outputs.items()}, _named_grads(model)


def test_depth_loss_reaches_rgb_stream() -> None:
    """Makes the two-rank comparison non-vacuous: with the perturbed interaction layers, the rgb stream's
    first block gets gradient from the depth loss, which in the two-rank placement can only arrive through
    the exchange's backward."""
    model = _build(STREAMS)
    kwargs, targets = _inputs(1)
    outputs = model(**kwargs)
    weight = model.streams["rgb"].blocks[0].attn1.to_q.weight
    (g_depth,) = torch.autograd.grad(((outputs["depth"] - targets["depth"]) ** 2).mean(), weight)
    assert g_depth.abs().max() > 1e-4


def _compare(got: dict, reference: dict, what: str) -> None:
    for name, g in got.items():
        torch.testing.assert_close(g, reference[name], atol=TOL, rtol=0, msg=f"{what}: {name}")


def _two_rank_worker(rank: int, out_dir: Path) -> None:
    groups = StreamGroups.from_world()
    result = {}
    for checkpointing in (False, True):
        exchange = groups.make_exchange()
        model = _build(groups.local_streams, exchange)
        if checkpointing:
            model.enable_gradient_checkpointing()
        outputs, model = _run(model, *_inputs(1))
        _sync(model, groups)
        result[checkpointing] = {
            "outputs": {n: o.detach() for n, o in outputs.items()},
            "grads": _named_grads(model),
            "stats": vars(exchange.stats).copy(),
        }
    torch.save(result, out_dir / f"rank{rank}.pt")


def test_two_ranks_match_one_process(tmp_path: Path) -> None:
    run_ranks(2, _two_rank_worker, tmp_path)
    ranks = load_results(tmp_path, 2)
    n_cross = sum(p.kind == "cross" for p in _build(STREAMS).schedule)
    assert n_cross >= 2
    for checkpointing in (False, True):
        ref_outputs, ref_grads = _reference(1, checkpointing)
        covered: set[str] = set()
        for rank, r in enumerate(ranks):
            got = r[checkpointing]
            assert set(got["outputs"]) == {STREAMS[rank]}
            for n, o in got["outputs"].items():
                torch.testing.assert_close(o, ref_outputs[n], atol=TOL, rtol=0)
            _compare(got["grads"], ref_grads, f"rank {rank}, checkpointing {checkpointing}")
            covered |= set(got["grads"])
            # One exchange per cross-stream point each way; recomputation repeats none of them.
            assert (got["stats"]["forward_calls"], got["stats"]["backward_calls"]) == (n_cross, n_cross)
        # Every parameter of the one-process model has its gradient on some rank.
        assert covered == set(ref_grads)


def _four_rank_worker(rank: int, out_dir: Path) -> None:
    groups = StreamGroups.from_world()
    model = _build(groups.local_streams, groups.make_exchange())
    take = slice(groups.pair_index, groups.pair_index + 1)  # pair p holds sample p
    _, model = _run(model, *_inputs(2, take))
    _sync(model, groups)
    torch.save(_named_grads(model), out_dir / f"rank{rank}.pt")


def test_four_ranks_match_one_pair_with_batch_two(tmp_path: Path) -> None:
    run_ranks(4, _four_rank_worker, tmp_path)
    _, ref_grads = _reference(2)
    for rank, got in enumerate(load_results(tmp_path, 4)):
        assert set(got) == {
            k
            for k in ref_grads
            if not k.startswith(f"streams.{STREAMS[1 - rank % 2]}.")
            and not k.startswith(f"interactions.{STREAMS[1 - rank % 2]}.")
        }
        _compare(got, ref_grads, f"rank {rank}")


def _context_parallel_worker(rank: int, out_dir: Path) -> None:
    from panowan.parallel.context import ContextGroups, ContextParallelExchange, enable_context_parallel

    groups = ContextGroups.from_world("cpu")
    model = _build(groups.local_streams, ContextParallelExchange(groups))
    enable_context_parallel(model.streams[groups.stream], groups, torch.device("cpu"))
    seen: list[tuple[int, int]] = []  # (query tokens, key tokens) of every interaction layer
    for layer in model.interactions[groups.stream]:
        layer.register_forward_hook(lambda m, i, o: seen.append((i[0].shape[1], i[1].shape[1])))
    kwargs, _ = _inputs(1)
    kwargs = {**kwargs, "noisy": {groups.stream: kwargs["noisy"][groups.stream]},
              "condition": {groups.stream: kwargs["condition"][groups.stream]}}  # fmt: skip
    with torch.no_grad():
        out = model(**kwargs)
    torch.save({"stream": groups.stream, "out": out[groups.stream], "seen": seen}, out_dir / f"rank{rank}.pt")


def test_context_parallel_equals_one_process(tmp_path: Path) -> None:
    """Four ranks, each stream's tokens split over two (Ulysses attention inside Wan, full-sequence keys in the
    interaction layers): every rank's output equals the one-process model's for its stream."""
    run_ranks(4, _context_parallel_worker, tmp_path)
    kwargs, _ = _inputs(1)
    with torch.no_grad():
        ref = _build(STREAMS)(**kwargs)
    for rank, got in enumerate(load_results(tmp_path, 4)):
        assert got["stream"] == STREAMS[rank // 2]
        tokens = ref[got["stream"]][0, 0].numel() // 4  # latent cells / (2 x 2 patches) = tokens per stream
        # Queries are the rank's half of the tokens; keys/values are whole sequences.
        assert got["seen"] and all(q == tokens // 2 and k == tokens for q, k in got["seen"])
        torch.testing.assert_close(got["out"], ref[got["stream"]], atol=TOL, rtol=0)
