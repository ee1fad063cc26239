"""Stream exchange: how one stream obtains the other stream's hidden states.

The dual-stream model calls `exchange.swap(states)` at every cross-stream interaction with the
hidden states of the streams this process owns, and receives, for each of them, the hidden
states of the *other* stream. Where the other stream lives (same process, another rank) is the
exchange's business, so the model code is the same for every placement.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.distributed as dist

STREAMS = ("rgb", "depth")


def other_stream(name: str) -> str:
    assert name in STREAMS, name
    return STREAMS[1 - STREAMS.index(name)]


class StreamExchange(Protocol):
    local_streams: tuple[str, ...]

    def swap(self, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`states[name]` is stream `name`'s hidden state `[B, S, D]`; returns `{name: other stream's state}`
        for every local stream. Differentiable: gradients flow back to the other stream."""
        ...


class LocalExchange:
    """Both streams in one process: the swap is a lookup."""

    local_streams: tuple[str, ...] = STREAMS

    def swap(self, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        assert set(states) == set(STREAMS), f"LocalExchange needs both streams, got {sorted(states)}"
        return {name: states[other_stream(name)] for name in STREAMS}


@dataclass
class ExchangeStats:
    """Counters of a `PointToPointExchange` (for benchmarks).

    Seconds are host wall-clock time from posting the operations to `wait()` returning. With NCCL,
    `wait()` only orders the current CUDA stream after the transfer, so these seconds measure the host
    side; synchronise the device around a step to measure device time.
    """

    forward_calls: int = 0
    backward_calls: int = 0
    forward_seconds: float = 0.0
    backward_seconds: float = 0.0
    bytes_sent: int = 0
    handshakes: int = 0

    def reset(self) -> None:
        self.forward_calls = self.backward_calls = self.bytes_sent = self.handshakes = 0
        self.forward_seconds = self.backward_seconds = 0.0


def _send_recv(tensor: torch.Tensor, peer: int, group: dist.ProcessGroup | None) -> torch.Tensor:
    """Send `tensor` to `peer` and receive a tensor of the same shape and dtype from it.

    One isend + one irecv in a single `batch_isend_irecv`, so both ranks may call this at the same time
    without either blocking on the other (the order in which they post does not matter).
    """
    tensor = tensor.contiguous()
    received = torch.empty_like(tensor)
    ops = [
        dist.P2POp(dist.isend, tensor, peer, group),
        dist.P2POp(dist.irecv, received, peer, group),
    ]
    for work in dist.batch_isend_irecv(ops):
        work.wait()
    return received


class _SwapFunction(torch.autograd.Function):
    """Forward: send ours, receive the peer's. Backward: the mirror image.

    The peer runs the same function on its own stream, so the backward of the received tensor on this
    rank is the gradient the peer needs for the tensor it sent, and vice versa.
    """

    @staticmethod
    def forward(ctx, local: torch.Tensor, exchange: PointToPointExchange) -> torch.Tensor:
        ctx.exchange = exchange
        return exchange._timed(local, backward=False)

    @staticmethod
    def backward(ctx, grad_received: torch.Tensor) -> tuple[torch.Tensor, None]:
        # Grads are materialised (zeros when the received tensor's grad is None), so the peer always
        # receives something; a received tensor that the local loss never uses at all means this node
        # never runs and the peer waits until the process-group timeout.
        return ctx.exchange._timed(grad_received, backward=True), None


class PointToPointExchange:
    """Two ranks, one stream each: the swap is a differentiable point-to-point exchange with `peer`.

    `swap({local_stream: x_BSD})` sends `x` to `peer` and returns `{local_stream: peer's x}`; in backward
    the gradient of the received tensor goes back to the peer and the peer's gradient of our tensor comes
    back. Both ranks must call `swap` the same number of times, in the same order, with tensors of the
    same shape and dtype, and (for training) both with or both without autograd; the received tensor
    must take part in the local loss (it does in the dual-stream model: every later token depends on it).

    `swap` must not run inside a region that is recomputed during backward (gradient checkpointing):
    recomputation would repeat the communication on one rank only. This is asserted.

    `peer` is a global rank; `group` (optional) is a process group containing both ranks.
    """

    def __init__(self, peer: int, local_stream: str, group: dist.ProcessGroup | None = None) -> None:
        if local_stream not in STREAMS:
            raise ValueError(f"local_stream must be one of {STREAMS}, got {local_stream!r}")
        assert dist.is_initialized(), "PointToPointExchange needs an initialised process group"
        assert peer != dist.get_rank(), f"peer {peer} is this rank"
        self.peer = peer
        self.local_stream = local_stream
        self.local_streams: tuple[str, ...] = (local_stream,)
        self.group = group
        self.stats = ExchangeStats()
        self._verified: tuple | None = None

    def swap(self, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if set(states) != {self.local_stream}:
            raise ValueError(f"this rank owns stream {self.local_stream!r}, got states for {sorted(states)}")
        x = states[self.local_stream]
        if x.dim() != 3:
            raise ValueError(f"stream state must be [B, S, D], got shape {tuple(x.shape)}")
        # -1 outside backward; anything else means we are being recomputed by checkpointing.
        assert torch._C._current_graph_task_id() == -1, "swap called during backward (checkpointed region?)"
        self._check_peer(x)
        return {self.local_stream: _SwapFunction.apply(x, self)}

    def _check_peer(self, x: torch.Tensor) -> None:
        """Compare shape, dtype and autograd mode with the peer once per change of any of them.

        The model is symmetric, so both ranks see a change at the same call and both do the handshake.
        """
        key = (tuple(x.shape), x.dtype, torch.is_grad_enabled() and x.requires_grad)
        if key == self._verified:
            return
        mine = torch.tensor(
            [*key[0], _DTYPE_CODES.index(key[1]) if key[1] in _DTYPE_CODES else -1, int(key[2])],
            dtype=torch.int64,
            device=x.device,
        )
        theirs = _send_recv(mine, self.peer, self.group)
        self.stats.handshakes += 1
        if not torch.equal(mine, theirs):
            raise ValueError(
                f"stream {self.local_stream!r} on rank {dist.get_rank()} has [B, S, D, dtype, grad] = "
                f"{mine.tolist()} but its peer rank {self.peer} has {theirs.tolist()}"
            )
        self._verified = key

    def _timed(self, tensor: torch.Tensor, backward: bool) -> torch.Tensor:
        start = time.perf_counter()
        received = _send_recv(tensor, self.peer, self.group)
        elapsed = time.perf_counter() - start
        if backward:
            self.stats.backward_calls += 1
            self.stats.backward_seconds += elapsed
        else:
            self.stats.forward_calls += 1
            self.stats.forward_seconds += elapsed
        self.stats.bytes_sent += tensor.numel() * tensor.element_size()
        return received


_DTYPE_CODES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
