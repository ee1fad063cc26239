"""`RoomLoader`: the training loop's deterministic, resumable sampler over rooms.

Every epoch a seeded permutation of the training rooms; each micro-step takes the next
G = train_batch_size * N usable rooms of it (N data-parallel pairs), pair p gets slots [p*B, (p+1)*B)
(both ranks of a pair load the same rooms). A room that fails to load (`RoomError`) is reported on every
rank, remembered as bad and the micro-batch is re-drawn, so all ranks keep one position (epoch, index),
which checkpoints store for an exact resume. Optional reader threads read the next micro-batch ahead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from panowan.data.layout import RoomError

log = logging.getLogger(__name__)


class RoomLoader:
    """Deterministic, resumable sampler over rooms, sharded by pair; skips and remembers bad rooms."""

    def __init__(
        self,
        dataset,
        room_indices: list[int],
        *,
        batch_size: int,
        num_pairs: int,
        pair_index: int,
        seed: int,
        max_skip_fraction: float,
        on_bad: Callable[[int, RoomError], None] | None = None,
        workers: int = 0,
    ) -> None:
        self.dataset = dataset
        # Threads, not processes: decoding (OpenCV, numpy) releases the GIL, nothing is pickled, and a
        # batch is assembled in room order whatever finishes first.
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="rooms") if workers > 0 else None
        self._pending: dict[tuple[int, int], Future] = {}  # (epoch, room) -> sample being read ahead
        self.rooms = list(room_indices)
        self.batch_size, self.num_pairs, self.pair_index = batch_size, num_pairs, pair_index
        self.seed, self.max_skip_fraction = seed, max_skip_fraction
        self.epoch, self.position = 0, 0
        self.bad: set[int] = set()
        self.global_batch = batch_size * num_pairs
        self.scan_bad = int(getattr(dataset, "summary", {}).get("bad_rooms", 0))
        self.rooms_found = int(getattr(dataset, "summary", {}).get("rooms_found", len(self.rooms)))
        self.errors: list[str] = [str(e) for _, e in getattr(dataset, "summary", {}).get("bad", [])]
        self._check_fraction()
        dataset.set_epoch(self.epoch)

    # -- state
    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "bad_rooms": sorted(self.dataset.rooms[i].paths.room_id for i in self.bad),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self._pending.clear()
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        ids = {self.dataset.rooms[i].paths.room_id: i for i in self.rooms}
        self.bad = {ids[r] for r in state.get("bad_rooms", []) if r in ids}
        self.dataset.set_epoch(self.epoch)

    @property
    def skipped_rooms(self) -> int:
        """Rooms skipped so far: refused when scanning plus failed when loading."""
        return self.scan_bad + len(self.bad)

    def order(self, epoch: int) -> list[int]:
        rng = np.random.default_rng([self.seed, 7919, epoch])
        return [self.rooms[i] for i in rng.permutation(len(self.rooms))]

    # -- drawing
    def _plan(self, epoch: int, position: int) -> tuple[list[int], int, int, int]:
        """The next G usable rooms from (epoch, position): (rooms, their epoch, the position they start
        at, the position after them). Reads the state, changes nothing (the prefetch plans ahead with it)."""
        for _ in range(2):
            order = self.order(epoch)
            taken, pos = [], position
            while pos < len(order) and len(taken) < self.global_batch:
                if order[pos] not in self.bad:
                    taken.append(order[pos])
                pos += 1
            if len(taken) == self.global_batch:
                return taken, epoch, position, pos
            epoch, position = epoch + 1, 0
        usable = len(self.rooms) - len(self.bad)
        raise ValueError(
            f"{self.dataset.data_root}: only {usable} usable training rooms, fewer than one global batch of "
            f"{self.global_batch} (train_batch_size x pairs)"
        )

    def _mine(self, taken: list[int]) -> list[int]:
        return taken[self.pair_index * self.batch_size : (self.pair_index + 1) * self.batch_size]

    def next_batch(self):
        """(Batch of this pair's rooms, their global slots [p*B, (p+1)*B))."""
        from panowan.data.dataset import collate

        while True:
            taken, epoch, start, after = self._plan(self.epoch, self.position)
            if epoch != self.epoch:
                self.epoch, self.position = epoch, start
                self.dataset.set_epoch(epoch)
            mine = self._mine(taken)
            samples, failed = [], []
            for index, sample in zip(mine, self._load_all(epoch, mine)):
                if isinstance(sample, RoomError):
                    failed.append(index)
                    self.errors.append(str(sample))
                    log.warning(
                        "skipping corrupt room %s: %s", self.dataset.rooms[index].paths.room_id, sample
                    )
                else:
                    samples.append(sample)
            failed = self._agree(failed)
            if not failed:
                self.position = after
                self._prefetch()
                slots = list(
                    range(self.pair_index * self.batch_size, (self.pair_index + 1) * self.batch_size)
                )
                return collate(samples), slots
            self.bad.update(failed)
            self._check_fraction()

    def _load(self, index: int, epoch: int):
        """The sample of room `index` in `epoch`, or the RoomError that reading it raised."""
        try:
            return self.dataset.sample(index, epoch)
        except RoomError as e:
            return e

    def _load_all(self, epoch: int, indices: list[int]) -> list:
        """Samples (or RoomErrors) in order: prefetched ones, the rest read now on the threads."""
        if self.pool is None:
            return [self._load(i, epoch) for i in indices]
        futures = [
            self._pending.pop((epoch, i), None) or self.pool.submit(self._load, i, epoch) for i in indices
        ]
        return [f.result() for f in futures]

    def _prefetch(self) -> None:
        """Start reading the next micro-batch while this one trains (threads only). A guess that a later
        failure or resume invalidates is simply never collected: samples are keyed by (epoch, room)."""
        if self.pool is None:
            return
        try:
            taken, epoch, _, _ = self._plan(self.epoch, self.position)
        except ValueError:
            return
        wanted = {(epoch, i) for i in self._mine(taken)}
        self._pending = {k: f for k, f in self._pending.items() if k in wanted}
        for key in sorted(wanted - set(self._pending)):
            self._pending[key] = self.pool.submit(self._load, key[1], key[0])

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    def _agree(self, failed: list[int]) -> list[int]:
        """Every rank learns every rank's failures (so all re-draw the same micro-batch)."""
        if not (dist.is_initialized() and dist.get_world_size() > 1):
            return failed
        flags = torch.zeros(len(self.dataset), dtype=torch.int32)
        flags[failed] = 1
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return flags.nonzero().flatten().tolist()

    def _check_fraction(self) -> None:
        usable = len(self.rooms) - len(self.bad)
        if usable == 0:
            shown = "; ".join(self.errors[:3])
            raise ValueError(
                f"{self.dataset.data_root}: every training room is corrupt ({self.skipped_rooms} skipped): {shown}"
            )
        fraction = self.skipped_rooms / max(self.rooms_found, 1)
        if fraction > self.max_skip_fraction:
            raise ValueError(
                f"{self.dataset.data_root}: {self.skipped_rooms} of {self.rooms_found} rooms are corrupt "
                f"({fraction:.0%} > --max_skip_fraction {self.max_skip_fraction:.0%}); first: {self.errors[:1]}"
            )
