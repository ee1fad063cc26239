"""Stream exchange: how one stream obtains the other stream's hidden states.

The dual-stream model calls `exchange.swap(states)` at every cross-stream interaction with the
hidden states of the streams this process owns, and receives, for each of them, the hidden
states of the *other* stream. Where the other stream lives (same process, another rank) is the
exchange's business, so the model code is the same for every placement.
"""

from __future__ import annotations

from typing import Protocol

import torch

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
