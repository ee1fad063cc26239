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

Scanning a data root (`scan_data_root`): a room folder with nothing in it (hidden files aside) is skipped,
counted and reported in one log line for all of them, without opening any file; a room reached twice
(a symbolic link to a room listed elsewhere, or an area linked to another) is listed once, at its first path
in sorted order, with a warning; a room entry that is a broken symbolic link (missing target or a loop) is
kept, so that its `discover_views` raises a `RoomError` that names it.

View numbers (`discover_views`): exactly one file per view and kind. A name that reads as a view file but
is not the layout's exact name (other zero padding such as panorama_003.png or pose_00003.json, upper case,
more than four digits) is refused, as a duplicate when the exact name of its view is also there, so that two
files never claim one view and no file is ignored silently.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

INPUT_DIR = "input"
OUTPUT_DIR = "output"
DESCRIPTION = "description.txt"
_PANORAMA_RE = re.compile(r"^panorama_(\d{4})\.png$")
_POSE_RE = re.compile(r"^pose_(\d{4})\.json$")
MAX_VIEW = 9999
"""View numbers have four digits (0000-9999)."""


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


# Names that read as a view file of some kind whatever their padding or case -> the exact name of view v.
_VIEW_FILE_KINDS = (
    (re.compile(r"^panorama_(\d+)\.png$", re.IGNORECASE), panorama_name),
    (re.compile(r"^panorama_(\d+)_depth\.npy$", re.IGNORECASE), depth_name),
    (re.compile(r"^pose_(\d+)\.json$", re.IGNORECASE), pose_name),
)


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


@dataclass
class DataRootScan:
    """What `scan_data_root` found: `rooms` to use (sorted), and what it left out, each counted."""

    rooms: list[Path] = field(default_factory=list)
    empty: list[Path] = field(default_factory=list)
    """Room folders with no entries (hidden ones aside): skipped."""
    aliases: list[tuple[Path, Path]] = field(default_factory=list)
    """(path left out, the listed path of the same folder): one room reached twice through a symbolic link."""


def _is_empty(folder: str | os.PathLike) -> bool:
    """True if `folder` holds no entry but hidden ones. Reads the listing up to its first entry, opens no
    file; a folder that cannot be listed is not empty (it is kept, so that `discover_views` names it)."""
    try:
        with os.scandir(folder) as entries:
            return not any(not e.name.startswith(".") for e in entries)
    except OSError:
        return False


def _folder_stat(entry: os.DirEntry) -> os.stat_result | None:
    """The stat of the folder `entry` is or links to; None for a file, a broken link or a link loop."""
    try:
        return entry.stat() if entry.is_dir() else None
    except OSError:  # DirEntry.is_dir raises on a link loop (ELOOP), only a missing target gives False
        return None


def _visible_entries(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as entries:
        return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def scan_data_root(data_root: str | os.PathLike) -> DataRootScan:
    """The room folders `data_root/{area}/{room}`, sorted; hidden folders are ignored. Empty room folders and
    second paths to one room are left out, counted and logged (one line for all the empty ones); a broken
    symbolic link stays in `rooms` (its `discover_views` names the problem). Costs one directory listing per
    area and per room and one `stat` per room: no file is opened."""
    root = Path(data_root)
    if not root.is_dir():
        raise ValueError(f"{root}: data root is not a directory")
    scan = DataRootScan()
    seen: dict[tuple[int, int], Path] = {}  # (device, inode) of each listed room folder -> its path
    for area in _visible_entries(root):
        if _folder_stat(area) is None:  # files beside the areas, and broken links: they hold no room to name
            continue
        for entry in _visible_entries(Path(area.path)):
            room = Path(entry.path)
            if (st := _folder_stat(entry)) is None:
                if entry.is_symlink():  # a link to nothing or a loop: kept, to be named as a bad room
                    scan.rooms.append(room)
                continue  # files beside the rooms
            if (first := seen.get((st.st_dev, st.st_ino))) is not None:
                scan.aliases.append((room, first))
                log.warning(
                    "%s is the same folder as %s (a symbolic link): the room is listed once", room, first
                )
            elif _is_empty(room):
                scan.empty.append(room)
            else:
                seen[(st.st_dev, st.st_ino)] = room
                scan.rooms.append(room)
    if scan.empty:
        shown = ", ".join(str(p.relative_to(root)) for p in scan.empty[:3])
        log.warning(
            "%s: skipped %d empty room folders (%s%s)",
            root,
            len(scan.empty),
            shown,
            ", ..." * (len(scan.empty) > 3),
        )
    return scan


def scan_rooms(data_root: str | os.PathLike) -> list[Path]:
    """The room folders `data_root/{area}/{room}`, sorted: `scan_data_root(data_root).rooms`."""
    return scan_data_root(data_root).rooms


def _check_view_names(paths: RoomPaths, folder: Path, names: list[str]) -> None:
    """RoomError for a name that reads as a view file (`_VIEW_FILE_KINDS`) but is not its exact name."""
    present = set(names)
    for name in names:
        for pattern, exact in _VIEW_FILE_KINDS:
            if not (m := pattern.match(name)):
                continue
            view = int(m.group(1))
            if view <= MAX_VIEW and name == exact(view):
                continue
            if view > MAX_VIEW:
                problem = (
                    f"view number {view} has more than four digits (the layout numbers views 0000-{MAX_VIEW})"
                )
            elif exact(view) in present:
                problem = (
                    f"duplicates view {view} ({exact(view)} is there too): one file per view; remove one"
                )
            else:
                problem = (
                    f"not a layout name: view {view} must be named {exact(view)} (four digits, lower case)"
                )
            raise RoomError(paths.root, folder / name, problem)


def _listing(paths: RoomPaths, folder: Path) -> list[str]:
    """The sorted names in a room's `folder`; RoomError if it is missing or cannot be listed."""
    try:
        return sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        raise RoomError(paths.root, folder, "folder is missing") from None
    except OSError as e:
        raise RoomError(paths.root, folder, f"folder cannot be listed ({e.strerror or e})") from None


def discover_views(room: str | os.PathLike) -> list[int]:
    """Sorted view numbers of a room: those with output/panorama_XXXX.png; each needs input/pose_XXXX.json.

    Raises RoomError if a folder is missing, view 0 is missing, or panoramas and poses disagree.
    """
    paths = RoomPaths(Path(room))
    if paths.root.is_symlink() and not paths.root.exists():
        target = os.readlink(paths.root)
        raise RoomError(
            paths.root, None, f"room folder is a broken symbolic link (-> {target}: missing or a loop)"
        )
    listing = {folder: _listing(paths, folder) for folder in (paths.input_dir, paths.output_dir)}
    for folder, names in listing.items():
        _check_view_names(paths, folder, names)
    panos = {int(m.group(1)) for f in listing[paths.output_dir] if (m := _PANORAMA_RE.match(f))}
    poses = {int(m.group(1)) for f in listing[paths.input_dir] if (m := _POSE_RE.match(f))}
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
        if file.is_symlink() and not file.exists():
            raise RoomError(paths.root, file, f"is a broken symbolic link (-> {os.readlink(file)})")
        raise RoomError(paths.root, file, "is not a regular file" if file.exists() else "file is missing")
    if file.stat().st_size == 0:
        raise RoomError(paths.root, file, "file is empty")
