"""PointToPointExchange on two gloo ranks against the one-process computation with LocalExchange."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _parallel_harness import load_results, run_ranks
from _toy_streams import grads, make_inputs, make_params, toy_forward, toy_loss

from panowan.parallel.exchange import STREAMS, LocalExchange, PointToPointExchange
from panowan.parallel.grad_sync import sync_gradients
from panowan.parallel.groups import StreamGroups, stream_layout

SEED, BATCH, TOKENS = 3, 2, 5

pytestmark = pytest.mark.timeout(120)  # a deadlocked rank fails the test instead of hanging it


def _reference(use_checkpoint: bool) -> tuple[dict, dict, dict]:
    """One process, both streams: outputs, parameter grads, input grads."""
    params = make_params(SEED)
    inputs, pose, targets = make_inputs(SEED + 1, BATCH, TOKENS)
    for x in inputs.values():
        x.requires_grad_()
    outputs = toy_forward(params, inputs, pose, torch.arange(BATCH), LocalExchange(), use_checkpoint)
    toy_loss(outputs, targets).backward()
    return outputs, grads(params, STREAMS), {s: inputs[s].grad for s in STREAMS}


def _two_rank_worker(rank: int, out_dir: Path) -> None:
    groups = StreamGroups.from_world()
    (stream,) = groups.local_streams
    result: dict = {"stream": stream, "peer": groups.peer}
    for use_checkpoint in (False, True):
        exchange = groups.make_exchange()
        params = make_params(SEED)  # same seed on both ranks: the same weights as the one-process model
        inputs, pose, targets = make_inputs(SEED + 1, BATCH, TOKENS)
        x = inputs[stream].requires_grad_()
        outputs = toy_forward(params, {stream: x}, pose, torch.arange(BATCH), exchange, use_checkpoint)
        toy_loss(outputs, {stream: targets[stream]}).backward()
        sync_gradients(groups, list(params[stream].values()), list(params["shared"].values()))
        result[use_checkpoint] = {
            "output": outputs[stream].detach(),
            "grads": grads(params, (stream,)),
            "input_grad": x.grad.clone(),
            "stats": vars(exchange.stats).copy(),
        }

    # A swap inside a recomputed (checkpointed) region is caught on both ranks, at recomputation.
    exchange = groups.make_exchange()
    params = make_params(SEED)
    outputs = toy_forward(
        params, {stream: inputs[stream]}, pose, torch.arange(BATCH), exchange, checkpoint_swap=True
    )
    try:
        toy_loss(outputs, {stream: targets[stream]}).backward()
        result["checkpoint_swap"] = "no error"
    except AssertionError as error:
        result["checkpoint_swap"] = str(error)

    # Peers with different shapes: both ranks get a ValueError naming the shapes.
    exchange = groups.make_exchange()
    try:
        exchange.swap({stream: torch.zeros(1, 4 + rank, 3)})
        result["mismatch"] = "no error"
    except ValueError as error:
        result["mismatch"] = str(error)
    torch.save(result, out_dir / f"rank{rank}.pt")


def test_two_ranks_match_one_process(tmp_path: Path) -> None:
    run_ranks(2, _two_rank_worker, tmp_path)
    ranks = load_results(tmp_path, 2)
    assert [r["stream"] for r in ranks] == ["rgb", "depth"]
    assert [r["peer"] for r in ranks] == [1, 0]
    for use_checkpoint in (False, True):
        ref_out, ref_grads, ref_input_grads = _reference(use_checkpoint)
        for r in ranks:
            s, got = r["stream"], r[use_checkpoint]
            torch.testing.assert_close(got["output"], ref_out[s].detach(), atol=1e-6, rtol=0)
            torch.testing.assert_close(got["input_grad"], ref_input_grads[s], atol=1e-6, rtol=0)
            for name, g in got["grads"].items():
                # Shared grads were summed over the pair by sync_gradients, so they equal the reference.
                torch.testing.assert_close(g, ref_grads[name], atol=1e-6, rtol=0, msg=name)
                assert g.abs().sum() > 0, name  # the comparison is not vacuous
            # Two exchanges each way, shapes checked once; no repeated traffic under checkpointing.
            stats = got["stats"]
            assert (stats["forward_calls"], stats["backward_calls"], stats["handshakes"]) == (2, 2, 1)
            assert stats["bytes_sent"] == 4 * BATCH * TOKENS * 8 * 4
    for r in ranks:
        assert "during backward" in r["checkpoint_swap"]
        assert "[1, 4, 3" in r["mismatch"] and "[1, 5, 3" in r["mismatch"]


def test_stream_layout() -> None:
    assert [stream_layout(r, 4) for r in range(4)] == [
        ("rgb", 0, 1),
        ("depth", 0, 0),
        ("rgb", 1, 3),
        ("depth", 1, 2),
    ]
    for world in (3, 5):
        with pytest.raises(ValueError, match=f"world size {world}"):
            stream_layout(0, world)


def test_world_of_one_is_local() -> None:
    groups = StreamGroups.from_world()  # no process group: one process holds both streams
    assert groups.local_streams == STREAMS and groups.peer is None
    exchange = groups.make_exchange()
    assert isinstance(exchange, LocalExchange)
    a, b = torch.ones(1, 2, 3), torch.zeros(1, 2, 3)
    swapped = exchange.swap({"rgb": a, "depth": b})
    assert swapped["rgb"] is b and swapped["depth"] is a


def test_point_to_point_rejects_bad_stream() -> None:
    with pytest.raises(ValueError, match="local_stream"):
        PointToPointExchange(1, "normals")
