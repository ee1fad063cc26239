"""Process groups for the stream placements.

Placements (issue 3, part 5):
- world size 1: one process holds both streams (`LocalExchange`);
- world size 2N: N data-parallel pairs. Rank r belongs to pair r // 2 and holds stream "rgb" if r is even,
  "depth" if odd; its `peer` is the other rank of its pair. `stream_group` holds the N ranks of the same
  stream (data-parallel averaging of per-stream parameters), `pair_group` the two ranks of the pair.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from panowan.parallel.exchange import STREAMS, LocalExchange, PointToPointExchange, StreamExchange

# The timeout `init_distributed` gave the world, for the subgroups of `StreamGroups.from_world`: torch gives
# a new group its backend's default (30 min on gloo, 10 on NCCL), not the world's, so without this a stuck
# peer would hang the pair's exchange far past --nccl_timeout_s.
_timeout: datetime.timedelta | None = None


def init_distributed(backend: str | None = None, timeout_s: float = 600.0) -> torch.device:
    """Initialise torch.distributed from torchrun's environment and return this process's device.

    Reads WORLD_SIZE, RANK, LOCAL_RANK (and MASTER_ADDR / MASTER_PORT through the env:// method). Without
    WORLD_SIZE (plain `python`), nothing is initialised and the process is a world of one. The backend
    defaults to nccl when CUDA is available, else gloo; with CUDA the device is cuda:LOCAL_RANK and is
    made current (NCCL point-to-point needs it). `timeout_s` bounds every collective (of the subgroups of
    `StreamGroups.from_world` too), and NCCL's async
    error handling turns a dead or stuck peer into an error that ends the job instead of a hang.
    """
    use_cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if "WORLD_SIZE" not in os.environ or dist.is_initialized():
        return device
    if backend is None:
        backend = "nccl" if use_cuda else "gloo"
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    # Must be set before the NCCL process group exists; respect a user's explicit choice.
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    global _timeout
    _timeout = datetime.timedelta(seconds=timeout_s)
    world_size = int(os.environ["WORLD_SIZE"])
    store = _restart_store(world_size, _timeout)
    dist.init_process_group(
        backend=backend,
        **({"init_method": "env://"} if store is None else {"store": store}),
        world_size=world_size,
        rank=int(os.environ["RANK"]),
        timeout=_timeout,
        device_id=device if backend == "nccl" else None,
    )
    return device


def _restart_store(world_size: int, timeout: datetime.timedelta) -> dist.Store | None:
    """The store of a round restarted by torchrun (--max-restarts), under a prefix of its own; None otherwise.

    Workers of every round share the agent's TCPStore without a per-round prefix (torch 2.13), so a restarted
    rank read the dead round's addresses ("Gloo connectFullMesh failed ... Connection refused", measured)."""
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if restart == 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    agent = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                          is_master=False, timeout=timeout)  # fmt: skip
    return dist.PrefixStore(f"panowan/restart_{restart}", agent)


def stream_layout(rank: int, world_size: int) -> tuple[str, int, int]:
    """(stream, pair index, peer rank) of `rank` in a world of `world_size` = 2N ranks."""
    if world_size < 2 or world_size % 2:
        raise ValueError(
            f"world size {world_size} is not even: the two-stream placement needs 2N ranks (N pairs, one "
            "stream per rank), or a single process holding both streams"
        )
    assert 0 <= rank < world_size, (rank, world_size)
    return STREAMS[rank % 2], rank // 2, rank ^ 1


@dataclass
class StreamGroups:
    """This rank's place in the stream placement (see module docstring).

    For a world of one, `peer`, `stream_group` and `pair_group` are None and `local_streams` holds both
    streams.
    """

    rank: int
    world_size: int
    local_streams: tuple[str, ...]
    num_pairs: int
    pair_index: int
    peer: int | None
    stream_group: dist.ProcessGroup | None
    pair_group: dist.ProcessGroup | None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_world(cls) -> StreamGroups:
        """Build the groups of the current world (every rank must call this, in the same program order)."""
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return cls(0, 1, STREAMS, 1, 0, None, None, None)
        world, rank = dist.get_world_size(), dist.get_rank()
        stream, pair, peer = stream_layout(rank, world)
        num_pairs = world // 2
        # torch requires every rank to create every group, in the same order.
        kw = {} if _timeout is None else {"timeout": _timeout}  # the world's timeout (see `_timeout`)
        stream_groups = [dist.new_group(list(range(s, world, 2)), **kw) for s in range(len(STREAMS))]
        pair_groups = [dist.new_group([2 * p, 2 * p + 1], **kw) for p in range(num_pairs)]
        return cls(
            rank=rank,
            world_size=world,
            local_streams=(stream,),
            num_pairs=num_pairs,
            pair_index=pair,
            peer=peer,
            stream_group=stream_groups[rank % 2],
            pair_group=pair_groups[pair],
        )

    def make_exchange(self) -> StreamExchange:
        """`LocalExchange` for a world of one, else a `PointToPointExchange` with this rank's peer."""
        if not self.distributed:
            return LocalExchange()
        assert self.peer is not None
        return PointToPointExchange(self.peer, self.local_streams[0], group=self.pair_group)


def broadcast_from_rank0(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (pickled); `obj` itself without torch.distributed."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def max_over_ranks(value: int, device: torch.device, group=None) -> int:
    """The largest `value` any rank of `group` (default: the world) holds; `value` itself without
    torch.distributed. The tensor lives on `device`: NCCL reduces CUDA tensors only, gloo CPU ones."""
    if not dist.is_initialized():
        return value
    flag = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
    return int(flag.item())
