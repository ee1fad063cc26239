"""GPU check of the exchange with NCCL (not collected by pytest; needs 2 GPUs):

    torchrun --nproc-per-node 2 tests/parallel/nccl_smoke.py

1. the toy two-stream function (see _toy_streams.py) on two ranks equals the one-process computation
   on the same GPU type (forward and backward through PointToPointExchange, also with checkpointing);
2. times a swap of the 14B configuration's stream state ([1, 20250, 5120] bf16), forward and backward.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from _toy_streams import grads, make_inputs, make_params, toy_forward, toy_loss

from panowan.parallel.exchange import STREAMS, LocalExchange
from panowan.parallel.grad_sync import all_ranks_finite, sync_gradients
from panowan.parallel.groups import StreamGroups, init_distributed


def _to(params: dict, device: torch.device) -> dict:
    return {g: {n: p.detach().to(device).requires_grad_() for n, p in ps.items()} for g, ps in params.items()}


def check_toy(groups: StreamGroups, device: torch.device) -> None:
    (stream,) = groups.local_streams
    inputs, pose, targets = make_inputs(1, 2, 64)
    inputs, pose = {s: x.to(device) for s, x in inputs.items()}, pose.to(device)
    targets = {s: t.to(device) for s, t in targets.items()}
    ids = torch.arange(2, device=device)
    for use_checkpoint in (False, True):
        ref = _to(make_params(0), device)
        ref_out = toy_forward(ref, inputs, pose, ids, LocalExchange(), use_checkpoint)
        toy_loss(ref_out, targets).backward()
        params = _to(make_params(0), device)
        exchange = groups.make_exchange()
        out = toy_forward(params, {stream: inputs[stream]}, pose, ids, exchange, use_checkpoint)
        toy_loss(out, {stream: targets[stream]}).backward()
        sync_gradients(groups, list(params[stream].values()), list(params["shared"].values()))
        err = (out[stream] - ref_out[stream]).abs().max().item()
        got, want = grads(params, (stream,)), grads(ref, STREAMS)
        gerr = max((g - want[n]).abs().max().item() for n, g in got.items())
        print(
            f"rank {groups.rank} {stream} checkpoint={use_checkpoint}: output err {err:.2e}, grad err {gerr:.2e}"
        )
        assert err <= 1e-5 and gerr <= 1e-5, (err, gerr)
        assert (exchange.stats.forward_calls, exchange.stats.backward_calls) == (2, 2)
    assert all_ranks_finite(torch.ones(1, device=device))


def time_swap(groups: StreamGroups, device: torch.device, repeats: int = 10) -> None:
    (stream,) = groups.local_streams
    exchange = groups.make_exchange()
    x = torch.randn(1, 20250, 5120, device=device, dtype=torch.bfloat16, requires_grad=True)
    for i in range(repeats + 2):
        if i == 2:  # two warm-ups
            torch.cuda.synchronize()
            dist.barrier()
            start = time.perf_counter()
        y = exchange.swap({stream: x})[stream]
        y.backward(torch.ones_like(y))
    torch.cuda.synchronize()
    per = (time.perf_counter() - start) / repeats
    mb = x.numel() * x.element_size() / 1e6
    print(
        f"rank {groups.rank}: swap fwd+bwd of {mb:.0f} MB each way: {per * 1e3:.2f} ms "
        f"({2 * mb / per / 1e3:.1f} GB/s per direction); stats {vars(exchange.stats)}"
    )


if __name__ == "__main__":
    device = init_distributed(timeout_s=120)
    groups = StreamGroups.from_world()
    check_toy(groups, device)
    time_swap(groups, device)
    dist.destroy_process_group()
