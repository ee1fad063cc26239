"""Opening rooms for completion: a data root (`open_rooms`), one room folder (`open_room`), and one room's
`Sample` of explicitly chosen views (`sample_views`, what the passes of `sample.multipass` complete).

The dataset (`panowan.data.dataset.RoomDataset`) validates rooms when it opens them, so every problem of
the inputs is reported before any model is loaded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # light at import: `panowan infer` re-exports `open_rooms` and is loaded for --help
    from panowan.data.dataset import RoomDataset


def open_rooms(data_root: str, rooms: list[str] | None, num_frames: int, resolution: int | None, seed: int,
               fills: dict[str, str] | None = None):  # fmt: skip
    """(dataset, indices of the rooms to complete); every room validated (prepared, views, poses).
    `fills`: the model's `condition_fills()` (what each stream's condition holds in its holes)."""
    from panowan.data.dataset import RoomDataset

    if not Path(data_root).is_dir():
        raise ValueError(f"{data_root}: data root is not a directory")
    fills = fills or {}
    dataset = RoomDataset(data_root, num_frames=num_frames, height=resolution, seed=seed,
                          cond_fill=fills.get("rgb", "zero"), cond_depth_fill=fills.get("depth", "zero"))  # fmt: skip
    ids = [info.paths.room_id for info in dataset.rooms]
    if rooms is None:
        return dataset, list(range(len(ids)))
    missing = sorted(set(rooms) - set(ids))
    if missing:
        raise ValueError(f"{data_root}: rooms {missing} not found or unusable (usable: {ids[:10]})")
    return dataset, [ids.index(r) for r in rooms]


def open_room(room: str | os.PathLike, num_frames: int, resolution: int | None, seed: int,
              fills: dict[str, str] | None = None) -> RoomDataset:  # fmt: skip
    """A dataset of the one prepared room folder `room` (`DATA_ROOT/{area}/{room}`), validated; its room is
    index 0. Arguments as `open_rooms`."""
    folder = Path(room)
    if not folder.is_dir():
        raise ValueError(f"{folder}: room folder does not exist")
    fills = fills or {}
    from panowan.data.dataset import RoomDataset

    return RoomDataset(folder.resolve().parent.parent, rooms=[folder], num_frames=num_frames, height=resolution,
                       seed=seed, cond_fill=fills.get("rgb", "zero"), cond_depth_fill=fills.get("depth", "zero"))  # fmt: skip


def sample_views(dataset: RoomDataset, index: int, views: Sequence[int]):
    """Room `index` of `dataset` as a `Sample` of exactly `views` (original view numbers, model order, view 0
    first; `RoomDataset.sample`). With `views == dataset.selected_views(index)` this is `dataset[index]`."""
    return dataset.sample(index, dataset.epoch, views=views)


def missing_rooms(
    dataset, indices: list[int], output_dir: str | os.PathLike, settings: dict[str, Any]
) -> list[int]:
    """The rooms of `indices` not complete in `output_dir`: complete means every completion file of every
    view (`room_output_files`) exists and completion.json records these sampling `settings` (so a rerun with
    another seed, step count, other weights (`model_source.weight_settings`), ... redoes the room instead of keeping
    a stale one). Logs how many it skips."""
    import json

    from panowan.sample.pipeline import room_output_files

    def complete(index: int) -> bool:
        info = dataset.rooms[index]
        files = room_output_files(Path(output_dir) / info.paths.room_id, info.views)
        if not all(f.is_file() for f in files):
            return False
        try:
            recorded = json.loads(files[-1].read_text(encoding="utf-8"))  # completion.json
        except (OSError, json.JSONDecodeError):
            return False
        return all(recorded.get(k) == v for k, v in settings.items())

    todo = [i for i in indices if not complete(i)]
    if len(todo) < len(indices):
        logging.getLogger(__name__).info(
            "skipping %d of %d rooms already complete in %s (--overwrite redoes them)",
            len(indices) - len(todo), len(indices), output_dir,
        )  # fmt: skip
    return todo
