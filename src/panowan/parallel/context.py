"""Context parallelism: each stream's tokens split over P ranks (Ulysses attention), for inference.

Layout of a world of 2P ranks: ranks [0, P) hold the rgb stream, [P, 2P) the depth stream; within a stream,
rank r holds token shard r % P. Every rank keeps the full weights of its stream.

The Wan blocks use diffusers' own context-parallel machinery (the model's `_cp_plan`: split the tokens and
RoPE tables at the first block, gather at `proj_out`; Ulysses all-to-all inside attention). The interaction
layers see token shards as queries and need full key/value sequences: pose features are computed in full on
every rank, and the other stream's tokens arrive through `ContextParallelExchange` (swap the shard with the
rank holding the same shard of the other stream, then all-gather the shards of the stream).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn

from panowan.parallel.exchange import STREAMS, PointToPointExchange


@dataclass
class ContextGroups:
    """This rank's place in a context-parallel world of 2P ranks (see the module docstring)."""

    rank: int
    degree: int
    stream: str
    shard: int
    peer: int
    mesh: object  # DeviceMesh ("stream", "ring", "ulysses")
    stream_group: dist.ProcessGroup

    @property
    def local_streams(self) -> tuple[str, ...]:
        return (self.stream,)

    @classmethod
    def from_world(cls, device_type: str) -> ContextGroups:
        from torch.distributed.device_mesh import init_device_mesh

        world, rank = dist.get_world_size(), dist.get_rank()
        if world < 4 or world % 2:
            raise ValueError(
                f"context parallelism needs 2P ranks with P >= 2 (P ranks per stream); got {world}"
            )
        degree = world // 2
        mesh = init_device_mesh(device_type, (2, 1, degree), mesh_dim_names=("stream", "ring", "ulysses"))
        return cls(
            rank=rank,
            degree=degree,
            stream=STREAMS[rank // degree],
            shard=rank % degree,
            peer=(rank + degree) % world,
            mesh=mesh,
            stream_group=mesh["ulysses"].get_group(),
        )


class ContextParallelExchange:
    """The other stream's full token sequence for this rank's token shard (differentiable)."""

    def __init__(self, groups: ContextGroups) -> None:
        self.groups = groups
        self.local_streams = groups.local_streams
        self._swap = PointToPointExchange(groups.peer, groups.stream)

    def swap(self, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        other_shard = self._swap.swap(states)[self.groups.stream]  # B, S/P, D
        shards = dist_fn.all_gather(other_shard.contiguous(), group=self.groups.stream_group)
        return {self.groups.stream: torch.cat(shards, dim=1)}  # B, S, D


def enable_context_parallel(transformer, groups: ContextGroups, device: torch.device) -> None:
    """Ulysses context parallelism of degree P on one stream's diffusers Wan transformer.

    Same steps as `ModelMixin.enable_parallelism`, but on this stream's sub-mesh of a world that holds two
    streams (the diffusers helper builds its mesh from the whole world).
    """
    from diffusers import ContextParallelConfig
    from diffusers.hooks.context_parallel import apply_context_parallel
    from diffusers.models._modeling_parallel import ParallelConfig

    cp = ContextParallelConfig(ulysses_degree=groups.degree, mesh=groups.mesh)
    config = ParallelConfig(context_parallel_config=cp)
    config.setup(groups.rank, dist.get_world_size(), device, mesh=groups.mesh)
    transformer._parallel_config = config
    for module in transformer.modules():
        processor = getattr(module, "processor", None)
        if processor is not None and hasattr(processor, "_parallel_config"):
            processor._parallel_config = config
    apply_context_parallel(transformer, cp, transformer._cp_plan)
