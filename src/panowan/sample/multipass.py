"""Completing every view of a room in passes of the model's frame count.

A model samples videos of F = 4k + 1 frames (views); a room may have more views. The dataset
(`RoomDataset.selected_views`) would pick F of them at random (seeded by the room's index in its data root and
the epoch: a training choice) and drop the others; here the frame lists are built explicitly
(`plan_passes`), from the room's views and poses only, so that a room completes the same wherever it lies:

- P = the largest 4k + 1 not above F nor the room's view count V (`RoomDataset`'s own `frame_count`);
- pass 0 holds view 0, the last view and P - 2 views evenly spread between them (all views if V = P: then the
  room is one pass, exactly the dataset's sample, completed exactly as a single `complete_room` call completes
  it);
- every later pass holds view 0 (the known panorama), at most P - 2 views not yet completed (the remaining
  views in ascending order, spread evenly over the fewest passes), and fills its other frames with views
  completed by earlier passes, nearest first (camera distance to the pass's new views; ties: lower view
  number). So each later pass holds at least one completed view besides view 0.

A completed view enters a later pass as a *known* frame, exactly as view 0 does: its completed RGB and depth
are the frame's condition (`cond_rgb` = the completed RGB in [-1, 1], `cond_depth` = the completed depth
normalised by the room's `DepthNorm`, as every condition is) and its mask is all ones (`known_frames`). Each
view's result is the one of the pass that completed it; a view known in a pass is never overwritten. The frames
of a pass are in the dataset's model order (ascending view number, or its nearest-neighbour path with
`view_order="path"`). Pass 0 uses the run's seed; pass k > 0 a seed derived from (seed, k) (`pass_seed`), so
the whole completion is deterministic in the seed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from panowan.sample.pipeline import Completion, complete_room
from panowan.sample.rooms import sample_views
from panowan.utils.timing import PhaseTimer, disabled_timer


@dataclass(frozen=True)
class Pass:
    """One pass: `views` its frames in model order (view 0 first); `completed` the views it completes (pass 0:
    all its frames, view 0 included); `known` the views completed earlier that it holds as known frames;
    `seed` its noise seed."""

    index: int
    views: tuple[int, ...]
    completed: tuple[int, ...]
    known: tuple[int, ...]
    seed: int

    def to_dict(self) -> dict:
        return {"views": list(self.views), "completed": list(self.completed), "known": list(self.known),
                "seed": self.seed}  # fmt: skip


def pass_seed(seed: int, index: int) -> int:
    """The noise seed of pass `index`: the run's seed for pass 0, else one derived from (seed, index)."""
    if index == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed) % 2**63, index]).generate_state(1, np.uint32)[0])


def first_pass(views: Sequence[int], size: int) -> list[int]:
    """Pass 0 of a room with sorted `views` and passes of `size` frames: the first and last view and `size` - 2
    views evenly spread between them (by position in `views`); all of them if there are no more."""
    views = [int(v) for v in views]
    if size >= len(views):
        return views
    picks = np.floor(np.linspace(0, len(views) - 1, size) + 0.5).astype(int)
    return [views[k] for k in picks]


def plan_passes(
    views: Sequence[int],
    size: int,
    *,
    positions: Mapping[int, np.ndarray] | None = None,
    view_order: str = "index",
    seed: int = 0,
) -> list[Pass]:
    """The passes (module docstring) of `size` frames that complete every one of the room's `views` (sorted,
    view 0 first). `positions`: camera position per view (nearest completed views, path order); without them
    view numbers stand in for positions."""
    views = [int(v) for v in views]
    if len(set(views)) != len(views) or views != sorted(views):
        raise ValueError(f"views must be distinct and sorted, got {views}")
    if not 3 <= size <= len(views):
        raise ValueError(f"passes of {size} frames for {len(views)} views (3 <= size <= views)")
    where = positions or {v: np.array([float(v), 0.0, 0.0]) for v in views}
    ref, first = views[0], first_pass(views, size)
    first = _model_order(first, where, view_order)
    plan = [Pass(0, tuple(first), tuple(first), (), pass_seed(seed, 0))]
    remaining = [v for v in views if v not in set(first)]
    if not remaining:
        return plan
    count = math.ceil(len(remaining) / (size - 2))
    done = [v for v in first if v != ref]
    start = 0
    for k in range(1, count + 1):
        take = len(remaining) // count + (k <= len(remaining) % count)
        new = remaining[start : start + take]
        start += take
        known = _nearest(done, new, size - 1 - len(new), where)
        frames = _model_order([ref, *sorted(new + known)], where, view_order)
        plan.append(Pass(k, tuple(frames), tuple(new), tuple(sorted(known)), pass_seed(seed, k)))
        done += new
    return plan


def _nearest(candidates: Sequence[int], targets: Sequence[int], count: int, where) -> list[int]:
    """The `count` candidates nearest to any target (ties: lower view number)."""

    def distance(v: int) -> float:
        return min(float(np.linalg.norm(np.asarray(where[v]) - np.asarray(where[t]))) for t in targets)

    return sorted(candidates, key=lambda v: (distance(v), v))[:count]


def _model_order(frames: list[int], where, view_order: str) -> list[int]:
    """`frames` (view 0 first, the rest ascending) in the dataset's model order (`RoomDataset.selected_views`)."""
    if view_order != "path":
        return list(frames)
    from panowan.data.dataset import path_order

    order = path_order(np.stack([np.asarray(where[v], dtype=np.float64) for v in frames]))
    return [frames[k] for k in order]


def known_frames(sample, completed: Mapping[int, tuple[torch.Tensor, torch.Tensor]]):
    """`sample` with the views in `completed` ({view: (rgb_3HW in [0, 1], depth_1HW metres)}) as known
    frames: their completion is the condition (RGB in [-1, 1]; depth normalised by the room's `DepthNorm`,
    clamped to [-1, 1], 0 where it has none) and their mask is all ones. The ground-truth fields are kept."""
    cond_rgb, cond_depth, mask = sample.cond_rgb.clone(), sample.cond_depth.clone(), sample.mask.clone()
    cond_depth_m = sample.cond_depth_m.clone()
    for i, view in enumerate(sample.view_indices):
        if view not in completed:
            continue
        rgb, depth = completed[view]
        depth = depth.to(cond_depth.dtype)
        valid = torch.isfinite(depth) & (depth > 0)
        normalised = sample.depth_norm.normalize(torch.where(valid, depth, torch.ones_like(depth)))
        cond_rgb[i] = (rgb.to(cond_rgb.dtype) * 2 - 1).clamp(-1, 1)
        cond_depth[i] = torch.where(valid, normalised.clamp(-1, 1), torch.zeros_like(depth))
        cond_depth_m[i] = torch.where(valid, depth, torch.zeros_like(depth))
        mask[i] = 1
    return dataclasses.replace(
        sample, cond_rgb=cond_rgb, cond_depth=cond_depth, cond_depth_m=cond_depth_m, mask=mask
    )


@dataclass
class MultiPassCompletion:
    """Every view of one room: `completion` (a `Completion` over all views, each view's tensors from the pass
    that completed it; `view_indices` ascending, or pass 0's model order for a single pass), the `passes` and
    `completed_in` (the pass that completed each view, in `completion.view_indices` order)."""

    completion: Completion
    passes: list[Pass]
    completed_in: list[int]


def complete_all_views(
    model,
    codec,
    encoder,
    dataset,
    index: int,
    *,
    seed: int = 0,
    timer: PhaseTimer | None = None,
    **kwargs,
) -> MultiPassCompletion:
    """Complete every view of room `index` of `dataset` (a `RoomDataset`) in passes (module docstring).
    `kwargs`: `complete_room`'s sampling options (steps, sampler, guidance, flow_shift, ...). `timer` receives
    "read" (assembling each pass's sample) and `complete_room`'s phases, summed over the passes."""
    from panowan.data.dataset import frame_count

    timer = timer or disabled_timer()
    info = dataset.rooms[index]
    positions = {v: info.poses[k].position.numpy() for k, v in enumerate(info.views)}
    plan = plan_passes(info.views, frame_count(len(info.views), dataset.num_frames), positions=positions,
                       view_order=dataset.view_order, seed=seed)  # fmt: skip
    with timer.phase("read"):
        first = sample_views(dataset, index, plan[0].views)
    done = complete_room(model, codec, encoder, first, seed=plan[0].seed, timer=timer, **kwargs)
    if len(plan) == 1:
        return MultiPassCompletion(done, plan, [0] * len(done.view_indices))
    views: dict[int, tuple[int, int, Completion]] = {v: (0, i, done) for i, v in enumerate(done.view_indices)}
    for step in plan[1:]:
        with timer.phase("read"):
            known = {v: (views[v][2].rgb_F3HW[views[v][1]], views[v][2].depth_m_F1HW[views[v][1]])
                     for v in step.known}  # fmt: skip
            sample = known_frames(sample_views(dataset, index, step.views), known)
        out = complete_room(model, codec, encoder, sample, seed=step.seed, timer=timer, **kwargs)
        for i, v in enumerate(out.view_indices):
            if v in step.completed:
                views[v] = (step.index, i, out)
    order = sorted(views)
    parts = {name: torch.stack([getattr(views[v][2], name)[views[v][1]] for v in order])
             for name in ("rgb_F3HW", "depth_m_F1HW", "raw_rgb_F3HW", "raw_depth_m_F1HW", "mask_F1HW")}  # fmt: skip
    merged = Completion(room_id=done.room_id, view_indices=order, settings=dict(done.settings), **parts)
    return MultiPassCompletion(merged, plan, [views[v][0] for v in order])
