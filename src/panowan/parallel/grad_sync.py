"""Gradient and parameter synchronisation for the stream placements (see groups.py).

Scaling, chosen so that 2N ranks reproduce the one-process model on the concatenated batch (each rank's
loss being a mean over its own batch, and the one-process loss the sum of the two streams' losses):
- per-stream parameters (LoRA and interaction layers of the local stream) exist once per pair: their
  gradients are averaged over `stream_group` (the N ranks of that stream);
- shared parameters (PluckerNet, replicated on both ranks of a pair and used by both streams): each copy
  holds only its stream's contribution, so they are summed over the pair and averaged over the pairs,
  i.e. all-reduced (sum) over the world and divided by N.

Gradients are flattened into buckets to keep the number of collectives small. A parameter whose grad is
None counts as zeros, and after `sync_gradients` every listed parameter has a grad on every rank, so all
ranks agree (the optimiser then sees the same tensors everywhere).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from panowan.parallel.groups import StreamGroups

BUCKET_BYTES = 64 * 1024 * 1024


def _buckets(
    tensors: Sequence[torch.Tensor], bucket_bytes: int
) -> Iterator[tuple[list[int], list[torch.Tensor]]]:
    """Consecutive runs of tensors of one dtype and device, each at most `bucket_bytes` (or one tensor)."""
    run: list[int] = []
    size = 0
    for i, t in enumerate(tensors):
        nbytes = t.numel() * t.element_size()
        same_kind = not run or (t.dtype, t.device) == (tensors[run[0]].dtype, tensors[run[0]].device)
        if run and (not same_kind or size + nbytes > bucket_bytes):
            yield run, [tensors[j] for j in run]
            run, size = [], 0
        run.append(i)
        size += nbytes
    if run:
        yield run, [tensors[j] for j in run]


def _all_reduce_grads(
    params: Sequence[torch.nn.Parameter],
    group: dist.ProcessGroup | None,
    divisor: int,
    bucket_bytes: int,
) -> None:
    """grad <- all_reduce_sum(grad or 0 over `group`) / divisor, written into every param's grad."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    for index, bucket in _buckets(grads, bucket_bytes):
        flat = _flatten_dense_tensors(bucket)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        if divisor != 1:
            flat.div_(divisor)
        for i, reduced in zip(index, _unflatten_dense_tensors(flat, bucket)):
            if params[i].grad is None:
                params[i].grad = reduced.clone()
            else:
                params[i].grad.copy_(reduced)


def sync_gradients(
    groups: StreamGroups,
    stream_params: Sequence[torch.nn.Parameter],
    shared_params: Sequence[torch.nn.Parameter],
    bucket_bytes: int = BUCKET_BYTES,
) -> None:
    """Average per-stream gradients over `groups.stream_group`; sum shared ones over the world / N.

    `stream_params` must list the local stream's trainable parameters in the same order on every rank of
    the stream group, `shared_params` the shared ones in the same order on every rank. No-op for a world
    of one (both streams' contributions are already summed by autograd).
    """
    if not groups.distributed:
        return
    n = groups.num_pairs
    if n > 1:
        _all_reduce_grads(stream_params, groups.stream_group, n, bucket_bytes)
    _all_reduce_grads(shared_params, None, n, bucket_bytes)


def all_ranks_finite(value: torch.Tensor) -> bool:
    """True when `value` is finite (all elements) on every rank: the trainer's skip-on-NaN decision,
    identical everywhere so that no rank steps while another skips."""
    flag = torch.isfinite(value.detach()).all().to(torch.int32).reshape(1)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _broadcast(
    params: Sequence[torch.nn.Parameter], src: int, group: dist.ProcessGroup | None, bucket_bytes: int
) -> None:
    tensors = [p.data for p in params]
    for _, bucket in _buckets(tensors, bucket_bytes):
        flat = _flatten_dense_tensors(bucket)
        dist.broadcast(flat, src=src, group=group)
        for t, new in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
            t.copy_(new)


@torch.no_grad()
def broadcast_parameters(
    groups: StreamGroups,
    stream_params: Sequence[torch.nn.Parameter],
    shared_params: Sequence[torch.nn.Parameter],
    bucket_bytes: int = BUCKET_BYTES,
) -> None:
    """Make replicas equal: per-stream parameters from the first rank of the stream group (pair 0),
    shared parameters from global rank 0. No-op for a world of one. `src` is a global rank."""
    if not groups.distributed:
        return
    stream_src = groups.rank % 2  # pair 0's rank of this stream
    if groups.num_pairs > 1:
        _broadcast(stream_params, stream_src, groups.stream_group, bucket_bytes)
    _broadcast(shared_params, 0, None, bucket_bytes)
