"""A toy two-stream function with cross terms, written once against `StreamExchange`.

Its structure follows the dual-stream model: a shared pose feature (replicated, used by both streams),
per-stream layers, two exchanges with cross terms, optional checkpointed segments between exchanges, and
a per-stream parameter used only by sample 0 (so its grad is None on ranks that do not hold sample 0).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from panowan.parallel.exchange import STREAMS, StreamExchange

D, P = 8, 6  # model width, pose channels


def make_params(seed: int) -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)

    def leaf(*shape: int, scale: float = 0.5) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale).requires_grad_()

    params = {
        s: {
            "w_in": leaf(D, D),
            "a_pose": leaf(D, D),
            "w_x": leaf(2, D, D),
            "w_out": leaf(D, D),
            "extra": leaf(D),
        }
        for s in STREAMS
    }
    params["shared"] = {"w_pose": leaf(P, D)}
    return params


def make_inputs(seed: int, batch: int, tokens: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict]:
    g = torch.Generator().manual_seed(seed)
    inputs = {s: torch.randn(batch, tokens, D, generator=g) for s in STREAMS}
    pose = torch.randn(batch, tokens, P, generator=g)
    targets = {s: torch.randn(batch, tokens, D, generator=g) for s in STREAMS}
    return inputs, pose, targets


def _mix(h: torch.Tensor, other: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return h + torch.tanh(other @ w) * h


def toy_forward(
    params: dict,
    inputs: dict[str, torch.Tensor],
    pose: torch.Tensor,
    sample_ids: torch.Tensor,
    exchange: StreamExchange,
    use_checkpoint: bool = False,
    checkpoint_swap: bool = False,
) -> dict[str, torch.Tensor]:
    """Outputs `{stream: [B, S, D]}` for `exchange.local_streams`. `checkpoint_swap` wraps an exchange in
    a checkpointed region (forbidden; used to test that it is caught)."""
    local = exchange.local_streams
    feat = torch.tanh(pose @ params["shared"]["w_pose"])
    h = {s: torch.tanh(inputs[s] @ params[s]["w_in"]) + feat @ params[s]["a_pose"] for s in local}
    for k in range(2):
        if checkpoint_swap:  # the exchange and the mixing in one recomputed region

            def region(*hs: torch.Tensor, k: int = k) -> tuple[torch.Tensor, ...]:
                states = dict(zip(local, hs))
                other = exchange.swap(states)
                return tuple(_mix(states[s], other[s], params[s]["w_x"][k]) for s in local)

            h = dict(zip(local, checkpoint(region, *h.values(), use_reentrant=False)))
            continue
        other = exchange.swap(h)
        for s in local:
            w = params[s]["w_x"][k]
            h[s] = (
                checkpoint(_mix, h[s], other[s], w, use_reentrant=False)
                if use_checkpoint
                else _mix(h[s], other[s], w)
            )
    out = {s: h[s] @ params[s]["w_out"] for s in local}
    if (sample_ids == 0).any():  # a branch taken only where sample 0 is: elsewhere "extra" gets no grad
        first = (sample_ids == 0).to(pose.dtype)[:, None, None]
        out = {s: out[s] + first * params[s]["extra"] for s in local}
    return out


def toy_loss(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over the streams of a per-stream weighted MSE (mean over batch, tokens, channels)."""
    weight = {"rgb": 1.0, "depth": 0.7}
    return sum(weight[s] * ((out - targets[s]) ** 2).mean() for s, out in outputs.items())


def grads(params: dict, streams: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """`{"stream.name" or "shared.name": grad}` (zeros where None)."""
    return {
        f"{g}.{n}": (p.grad if p.grad is not None else torch.zeros_like(p)).clone()
        for g in (*streams, "shared")
        for n, p in params[g].items()
    }
