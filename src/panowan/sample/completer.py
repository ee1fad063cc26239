"""The Python API: load a model once, complete rooms, keep or save the results.

```python
from panowan import Completer

completer = Completer.from_pretrained()  # the embedded default model; or an exported model / checkpoint folder
result = completer.complete("data/area_000/room_0000", steps=2, seed=0)  # a prepared room folder
result.rgb[1], result.depth[1], result.mask[1]  # view result.views[1]: H,W,3 in [0, 1]; metres; known pixels
result.save("completions")  # completions/area_000/room_0000/: the files `panowan infer` writes
```
Every view of the room is completed (in several passes when it has more views than the model's frames:
`panowan.sample.multipass`). `panowan infer` is this API behind flags: the same model, room, settings and
seed write the same files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from panowan.sample.model_source import (
    ModelSource,
    build_model,
    is_exported,
    model_settings,
    resolve_source,
    sampling_settings,
    weight_settings,
)
from panowan.sample.multipass import Pass, complete_all_views
from panowan.sample.pipeline import complete_room, write_room
from panowan.sample.rooms import open_room
from panowan.utils.timing import PhaseTimer

log = logging.getLogger(__name__)


@dataclass
class RoomCompletion:
    """Every completed view of one room, in `views` order (view numbers; view 0 first).

    `rgb` V,H,W,3 float32 in [0, 1]; `depth` V,H,W float32 radial metres (0 = none); `mask` V,H,W bool (True:
    known from the input, composited back unless `composite=False`); `poses` the views' camera poses (for
    room.ply; None when completed from a bare `Sample` without poses); `settings` what completion.json records
    besides the views and the room; `passes` how the views were completed and `completed_in` the pass of each
    view (`panowan.sample.multipass`)."""

    room_id: str
    views: list[int]
    rgb: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    poses: list | None
    settings: dict[str, Any] = field(default_factory=dict)
    passes: list[Pass] = field(default_factory=list)
    completed_in: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.views)

    def view(self, number: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rgb H,W,3, depth H,W, mask H,W) of view `number`."""
        i = self.views.index(number)
        return self.rgb[i], self.depth[i], self.mask[i]

    def save(self, out_dir: str | os.PathLike, *, point_stride: int = 1) -> Path:
        """Write the files `panowan infer` writes into `out_dir/{area}/{room}/` (`sample.pipeline.write_room`:
        per view RGB PNG, depth .npy / 16-bit PNG / colour PNG, room.ply, completion.json); returns that folder."""
        if self.poses is None:
            raise ValueError(f"{self.room_id}: no camera poses (completed from a bare Sample): room.ply needs "
                             "them; pass poses= to Completer.complete")  # fmt: skip
        rgb = torch.from_numpy(self.rgb).permute(0, 3, 1, 2)
        depth = torch.from_numpy(self.depth)[:, None]
        return write_room(Path(out_dir) / self.room_id, self.views, rgb, depth, self.poses,
                          {"room": self.room_id, **self.settings}, point_stride=point_stride)  # fmt: skip


class Completer:
    """A loaded model that completes rooms. Build one with `from_pretrained`, or from an already built
    `(model, codec, encoder)` of a resolved `ModelSource` (what `panowan infer` does).

    `num_frames` (frames a pass, 4k + 1), `resolution` (panorama height, a multiple of 16) and `flow_shift`
    default to the model's training values; `steps` and `sampler` of `complete` to its recommended sampling."""

    def __init__(self, model, codec, encoder, source: ModelSource, *, num_frames: int | None = None,
                 resolution: int | None = None, flow_shift: float | None = None, fp8: str = "off") -> None:  # fmt: skip
        self.model, self.codec, self.encoder, self.source = model, codec, encoder, source
        self.fp8 = fp8  # how `model`'s block weights are stored (`build_model(fp8=)`), for completion.json
        self.num_frames, self.resolution, self.flow_shift = model_settings(
            source, num_frames, resolution, flow_shift
        )

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike | ModelSource | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        base_model_dir: str | os.PathLike | None = None,
        checkpoint_step: int | None = None,
        preset: str | None = None,
        lora_rank: int | None = None,
        num_frames: int | None = None,
        resolution: int | None = None,
        flow_shift: float | None = None,
        fp8: str = "off",
    ) -> Completer:
        """Load a model: None, the embedded default; a folder holding an exported model (default_model.json +
        .safetensors, `panowan infer --model_dir`); any other folder, a training checkpoint (a run's output or
        one checkpoint-STEP folder, `--checkpoint_dir`; `base_model_dir` for presets with pretrained weights);
        or a resolved `ModelSource`. `preset` / `lora_rank` refuse a model that differs. `fp8` ("weight" or
        "dynamic", `panowan infer --fp8`; needs torchao) stores the Wan blocks' linear weights in float8
        (`panowan.models.fp8`)."""
        if isinstance(source, ModelSource):
            resolved = source
        else:
            where: dict[str, Any] = {}
            if source is not None:
                where = {"model_dir": source} if is_exported(source) else {"checkpoint_dir": source}
            resolved = resolve_source(**where, checkpoint_step=checkpoint_step, base_model_dir=base_model_dir,
                                      preset=preset, lora_rank=lora_rank)  # fmt: skip
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        model, codec, encoder = build_model(resolved, None if base_model_dir is None else str(base_model_dir),
                                            torch.device(device), dtype, fp8=fp8)  # fmt: skip
        return cls(model, codec, encoder, resolved, num_frames=num_frames, resolution=resolution,
                   flow_shift=flow_shift, fp8=fp8)  # fmt: skip

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def complete(
        self,
        room,
        *,
        steps: int | None = None,
        seed: int = 0,
        sampler: str | None = None,
        guidance: float = 1.0,
        negative_prompt: str = "",
        composite: bool = True,
        seam_roll: bool = True,
        poses: Sequence | None = None,
        progress: bool = False,
        timer: PhaseTimer | None = None,
        step_cache: float = 0.0,
        batch_guidance: bool = True,
    ) -> RoomCompletion:
        """Complete every view of `room`: a prepared room folder (`DATA_ROOT/{area}/{room}`), a
        `(RoomDataset, index)` pair (an item of a dataset opened for this model: `sample.rooms.open_rooms`),
        or a bare `Sample` (its views only, one pass; `poses` for `save`).

        `seed` seeds the noise (every pass's: `multipass.pass_seed`); `steps` / `sampler`: the model's recommended
        sampling unless given; guidance > 1 adds an unconditional pass with `negative_prompt`; `composite=False`
        keeps the raw model output at known pixels; `seam_roll=False` does not roll latents across the ERP seam;
        `step_cache` > 0 skips the blocks after the first at steps whose first block barely changed
        (`models.step_cache`); `batch_guidance=False` runs guidance's two passes one after the other instead of
        as one forward of batch 2. `timer` receives the seconds of each phase."""
        from panowan.data.sample import Sample

        steps, sampler = sampling_settings(self.source, steps, sampler)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if guidance < 1:
            raise ValueError(f"guidance must be >= 1, got {guidance}")
        options = dict(steps=steps, guidance=guidance, sampler=sampler, flow_shift=self.flow_shift,
                       composite=composite, seam_roll=seam_roll, negative_prompt=negative_prompt,
                       progress=progress, step_cache=step_cache, batch_guidance=batch_guidance)  # fmt: skip
        if isinstance(room, Sample):
            done = complete_room(
                self.model, self.codec, self.encoder, room, seed=seed, timer=timer, **options
            )
            first = Pass(0, tuple(done.view_indices), tuple(done.view_indices), (), seed)
            return self._result(
                done, None if poses is None else list(poses), [first], [0] * len(done.view_indices)
            )
        if isinstance(room, (str, os.PathLike)):
            dataset, index = open_room(room, self.num_frames, self.resolution, seed,
                                       self.model.config.condition_fills()), 0  # fmt: skip
        else:
            dataset, index = room
        result = complete_all_views(self.model, self.codec, self.encoder, dataset, index, seed=seed,
                                    timer=timer, **options)  # fmt: skip
        info = dataset.rooms[index]
        views = result.completion.view_indices
        room_poses = [info.poses[info.views.index(v)] for v in views]
        return self._result(result.completion, room_poses, result.passes, result.completed_in)

    def complete_rooms(
        self, dataset, indices: Sequence[int], output_dir: str | os.PathLike, *, write: bool = True,
        point_stride: int = 1, timed: bool = False, stop=lambda: False, **options: Any,
    ) -> tuple[list[Path], dict[str, dict[str, float]], int]:  # fmt: skip
        """Complete rooms `indices` of `dataset` one after the other (`complete(**options)`), saving each under
        `output_dir` when `write`. `stop()` is asked after every room (True: begin no other). With `timed`,
        every room's phases are timed (the device synchronised around each). Returns (room folders written,
        each room's phase seconds, rooms not begun)."""
        written: list[Path] = []
        seconds: dict[str, dict[str, float]] = {}
        for done, index in enumerate(indices):
            timer = PhaseTimer(self.device, enabled=timed)
            with timer.phase("total"):
                result = self.complete((dataset, index), timer=timer, **options)
                if len(result.passes) > 1:
                    log.info("%s: %d views in %d passes", result.room_id, len(result), len(result.passes))
                if write:
                    with timer.phase("write"):
                        # A rewrite cut short must not look complete: completion.json (written last) goes first.
                        (Path(output_dir) / result.room_id / "completion.json").unlink(missing_ok=True)
                        written.append(result.save(output_dir, point_stride=point_stride))
                    log.info("wrote %s", written[-1])
            seconds[result.room_id] = timer.seconds
            if stop():
                return written, seconds, len(indices) - done - 1
        return written, seconds, 0

    def _result(self, done, poses, passes: list[Pass], completed_in: list[int]) -> RoomCompletion:
        settings = dict(done.settings)
        settings["model"] = self.source.description if self.source.kind == "checkpoint" else self.source.kind
        settings.update(weight_settings(self.source, self.fp8))
        if len(passes) > 1:  # a single pass writes completion.json exactly as before multi-pass completion
            settings["passes"] = [p.to_dict() for p in passes]
            settings["completed_in_pass"] = list(completed_in)
        return RoomCompletion(
            room_id=done.room_id, views=list(done.view_indices),
            rgb=done.rgb_F3HW.permute(0, 2, 3, 1).float().numpy().copy(),
            depth=done.depth_m_F1HW[:, 0].float().numpy().copy(), mask=(done.mask_F1HW[:, 0] > 0.5).numpy(),
            poses=poses, settings=settings, passes=passes, completed_in=list(completed_in),
        )  # fmt: skip
