"""sync_gradients, all_ranks_finite and broadcast_parameters on 4 gloo ranks (2 pairs, batch 1 each)
against the one-process model on the batch of 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _parallel_harness import load_results, run_ranks
from _toy_streams import grads, make_inputs, make_params, toy_forward, toy_loss

from panowan.parallel.exchange import STREAMS, LocalExchange
from panowan.parallel.grad_sync import all_ranks_finite, broadcast_parameters, sync_gradients
from panowan.parallel.groups import StreamGroups

SEED, BATCH, TOKENS = 11, 2, 4

pytestmark = pytest.mark.timeout(120)  # a deadlocked rank fails the test instead of hanging it


def _worker(rank: int, out_dir: Path) -> None:
    groups = StreamGroups.from_world()
    (stream,) = groups.local_streams
    pair = groups.pair_index
    params = make_params(SEED)
    inputs, pose, targets = make_inputs(SEED + 1, BATCH, TOKENS)
    take = slice(pair, pair + 1)  # pair p holds sample p of the batch
    outputs = toy_forward(
        params, {stream: inputs[stream][take]}, pose[take], torch.arange(BATCH)[take], groups.make_exchange()
    )
    toy_loss(outputs, {stream: targets[stream][take]}).backward()
    stream_params, shared = list(params[stream].values()), list(params["shared"].values())
    # Pair 1 never uses "extra" (sample 0 only): its grad is None there and counts as zeros.
    assert (params[stream]["extra"].grad is None) == (pair == 1)
    sync_gradients(groups, stream_params, shared, bucket_bytes=200)  # small buckets: several collectives
    result = {"stream": stream, "pair": pair, "grads": grads(params, (stream,))}

    result["finite_all"] = all_ranks_finite(torch.tensor([1.0, 2.0]))
    result["finite_one_nan"] = all_ranks_finite(torch.tensor(float("nan") if rank == 3 else 0.0))

    with torch.no_grad():  # replicas drift apart; broadcast makes them equal to pair 0's
        for p in (*stream_params, *shared):
            p.add_(rank)
    broadcast_parameters(groups, stream_params, shared)
    result["params"] = {n: p.detach().clone() for n, p in params[stream].items()}
    result["shared"] = params["shared"]["w_pose"].detach().clone()
    torch.save(result, out_dir / f"rank{rank}.pt")


def test_four_ranks_match_one_pair_with_batch_two(tmp_path: Path) -> None:
    run_ranks(4, _worker, tmp_path)
    ranks = load_results(tmp_path, 4)
    params = make_params(SEED)
    inputs, pose, targets = make_inputs(SEED + 1, BATCH, TOKENS)
    toy_loss(toy_forward(params, inputs, pose, torch.arange(BATCH), LocalExchange()), targets).backward()
    reference = grads(params, STREAMS)
    assert [(r["stream"], r["pair"]) for r in ranks] == [("rgb", 0), ("depth", 0), ("rgb", 1), ("depth", 1)]
    for r in ranks:
        for name, g in r["grads"].items():
            torch.testing.assert_close(g, reference[name], atol=1e-6, rtol=0, msg=name)
            assert g.abs().sum() > 0, name
        assert r["finite_all"] is True and r["finite_one_nan"] is False
        shift = r["stream"] == "depth"  # pair 0's rank of this stream added 0 or 1
        for name, p in r["params"].items():
            torch.testing.assert_close(p, params[r["stream"]][name].detach() + shift, atol=0, rtol=0)
        torch.testing.assert_close(r["shared"], params["shared"]["w_pose"].detach(), atol=0, rtol=0)
