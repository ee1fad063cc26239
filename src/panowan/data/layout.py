"""The on-disk room layout of NOTES.md: file names, scanning, view discovery and cheap validation.

```
data_root/{area}/{room}/
  input/   panorama_0000.png, panorama_0000_depth.npy          view 0 (the reference), full
           pano0000_to_panoXXXX_{rgb.png,depth_range.npy,mask.png}   view 0 reprojected into view X
           pose_XXXX.json (one per view), description.txt
  output/  panorama_XXXX.png, panorama_XXXX_depth.npy          ground truth of every view
```
View numbers are four-digit, zero-padded. Depth files hold float radial range in metres (H x W).
Every problem is reported as a `RoomError` that names the room, the file and the problem.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

INPUT_DIR = "input"
OUTPUT_DIR = "output"
DESCRIPTION = "description.txt"
_PANORAMA_RE = re.compile(r"^panorama_(\d{4})\.png$")
_POSE_RE = re.compile(r"^pose_(\d{4})\.json$")


class RoomError(ValueError):
    """A room on disk that cannot be used. The message names the room, the file and the problem."""

    def __init__(self, room: str | os.PathLike, file: str | os.PathLike | None, problem: str) -> None:
        self.room = Path(room)
        self.file = None if file is None else Path(file)
        self.problem = problem
        where = f"{self.room}" if self.file is None else f"{self.room}: {self._relative(self.file)}"
        super().__init__(f"room {where}: {problem}")

    def _relative(self, file: Path) -> str:
        try:
            return str(file.relative_to(self.room))
        except ValueError:
            return str(file)


def panorama_name(view: int) -> str:
    return f"panorama_{view:04d}.png"


def depth_name(view: int) -> str:
    return f"panorama_{view:04d}_depth.npy"


def pose_name(view: int) -> str:
    return f"pose_{view:04d}.json"


def prepared_stem(view: int) -> str:
    return f"pano0000_to_pano{view:04d}"


@dataclass(frozen=True)
class RoomPaths:
    """All the file paths of one room (`root` = data_root/area/room)."""

    root: Path

    @property
    def room_id(self) -> str:
        """'area/room'."""
        return f"{self.root.parent.name}/{self.root.name}"

    @property
    def input_dir(self) -> Path:
        return self.root / INPUT_DIR

    @property
    def output_dir(self) -> Path:
        return self.root / OUTPUT_DIR

    def gt_rgb(self, view: int) -> Path:
        return self.output_dir / panorama_name(view)

    def gt_depth(self, view: int) -> Path:
        return self.output_dir / depth_name(view)

    def pose(self, view: int) -> Path:
        return self.input_dir / pose_name(view)

    @property
    def ref_rgb(self) -> Path:
        """input/panorama_0000.png: the full reference panorama."""
        return self.input_dir / panorama_name(0)

    @property
    def ref_depth(self) -> Path:
        return self.input_dir / depth_name(0)

    @property
    def description(self) -> Path:
        return self.input_dir / DESCRIPTION

    def cond_rgb(self, view: int) -> Path:
        return self.input_dir / f"{prepared_stem(view)}_rgb.png"

    def cond_depth(self, view: int) -> Path:
        return self.input_dir / f"{prepared_stem(view)}_depth_range.npy"

    def cond_mask(self, view: int) -> Path:
        return self.input_dir / f"{prepared_stem(view)}_mask.png"


def scan_rooms(data_root: str | os.PathLike) -> list[Path]:
    """The room folders `data_root/{area}/{room}`, sorted; hidden folders are ignored."""
    root = Path(data_root)
    if not root.is_dir():
        raise ValueError(f"{root}: data root is not a directory")
    rooms = []
    for area in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        rooms.extend(sorted(r for r in area.iterdir() if r.is_dir() and not r.name.startswith(".")))
    return rooms


def discover_views(room: str | os.PathLike) -> list[int]:
    """Sorted view numbers of a room: those with output/panorama_XXXX.png; each needs input/pose_XXXX.json.

    Raises RoomError if a folder is missing, view 0 is missing, or panoramas and poses disagree.
    """
    paths = RoomPaths(Path(room))
    for folder in (paths.input_dir, paths.output_dir):
        if not folder.is_dir():
            raise RoomError(paths.root, folder, "folder is missing")
    panos = {int(m.group(1)) for f in os.listdir(paths.output_dir) if (m := _PANORAMA_RE.match(f))}
    poses = {int(m.group(1)) for f in os.listdir(paths.input_dir) if (m := _POSE_RE.match(f))}
    if 0 not in panos:
        raise RoomError(paths.root, paths.gt_rgb(0), "view 0 panorama is missing")
    if missing := sorted(panos - poses):
        raise RoomError(
            paths.root, paths.pose(missing[0]), f"pose file is missing ({len(missing)} views lack one)"
        )
    if extra := sorted(poses - panos):
        raise RoomError(paths.root, paths.gt_rgb(extra[0]), "panorama is missing for a view that has a pose")
    return sorted(panos)


def require_file(paths: RoomPaths, file: Path) -> None:
    """RoomError unless `file` exists and is a non-empty regular file."""
    if not file.is_file():
        raise RoomError(paths.root, file, "file is missing")
    if file.stat().st_size == 0:
        raise RoomError(paths.root, file, "file is empty")
