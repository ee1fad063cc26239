"""First-block step caching for sampling: skip the blocks after the first when the first barely changed.

Between two sampling steps, the work of the blocks after the first changes little where the first block's
own change is small (the observation behind diffusers' `FirstBlockCache` and TeaCache). At every step the
model runs its first region (block 0 and an interaction layer right after it, if any) in every stream and
measures the relative L1 change of that region's residual (output - input) against the last fully computed
step. Below `threshold`, in every stream, the remaining blocks and interaction layers are skipped and their
residual from that step is added instead; otherwise they run and their residual is stored.

Why not diffusers' `FirstBlockCache` hook: it wraps `WanTransformer3DModel`'s own block loop, which the
dual-stream forward replaces (interaction layers sit between the blocks), and the decision must be one for
both streams: a stream skipping alone would skip its side of a cross-stream exchange (with one stream per
rank, the peer would wait for it forever). The decision is exchanged through the model's `StreamExchange`.

Seam rolling (the sampler rolls the latents horizontally by a different offset each step): residuals are
stored un-rolled, in the token grid's own columns, and rolled to the current offset when added.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class StepCache:
    """State of one sampling run (one room, one pass; a separate cache for the unconditional pass)."""

    threshold: float
    """Skip when the first region's residual changed by less than this (relative L1); 0 never skips."""
    shift_columns: int = 0
    """The current call's roll of the token grid, in token columns (set by the caller before each call)."""
    first: dict[str, torch.Tensor] = field(default_factory=dict)
    """Un-rolled first-region residual `B,T,h',w',D` of the last computed step, per stream."""
    rest: dict[str, torch.Tensor] = field(default_factory=dict)
    """Un-rolled residual of the blocks after the first, of the last computed step, per stream."""
    calls: int = 0
    skipped: int = 0

    def __post_init__(self) -> None:
        if self.threshold < 0:
            raise ValueError(f"step cache threshold must be >= 0, got {self.threshold}")

    def _grid(self, tokens_BSD: torch.Tensor, grid: tuple[int, int, int], sign: int) -> torch.Tensor:
        """`B,S,D` tokens as `B,T,h',w',D`, rolled by `sign * shift_columns` columns."""
        b, _, d = tokens_BSD.shape
        x = tokens_BSD.reshape(b, *grid, d)
        return torch.roll(x, sign * self.shift_columns, dims=3) if self.shift_columns else x

    def should_skip(
        self, first_residual: dict[str, torch.Tensor], grid: tuple[int, int, int], exchange
    ) -> bool:
        """Record this call's first-region residuals (`B,S,D` per local stream); True to skip the rest.
        Every local stream and the peer's streams (through `exchange.swap`) must agree."""
        self.calls += 1
        current = {n: self._grid(r, grid, -1) for n, r in first_residual.items()}
        change = {}
        for n, r in current.items():
            prev = self.first.get(n)
            if prev is None or prev.shape != r.shape or n not in self.rest:
                change[n] = torch.full((1, 1, 1), float("inf"), device=r.device)
            else:
                diff = (r.float() - prev.float()).abs().mean() / prev.float().abs().mean().clamp_min(1e-12)
                change[n] = diff.reshape(1, 1, 1)
        with torch.no_grad():
            others = exchange.swap(change)  # the other stream's change, per local stream
        worst = max(float(t.max()) for t in (*change.values(), *others.values()))
        skip = worst < self.threshold
        if skip:
            self.skipped += 1
        else:
            self.first = current
        return skip

    def cached_rest(self, tokens_BSD: torch.Tensor, stream: str) -> torch.Tensor:
        """`tokens + ` the stored rest residual, rolled to this call's offset -> `B,S,D`."""
        b, s, d = tokens_BSD.shape
        rest = self.rest[stream]
        rolled = torch.roll(rest, self.shift_columns, dims=3) if self.shift_columns else rest
        return tokens_BSD + rolled.reshape(b, s, d).to(tokens_BSD.dtype)

    def store_rest(self, rest_residual: dict[str, torch.Tensor], grid: tuple[int, int, int]) -> None:
        self.rest = {n: self._grid(r, grid, -1).detach() for n, r in rest_residual.items()}
