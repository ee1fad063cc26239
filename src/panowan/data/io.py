"""Reading the room files (PNG panoramas and masks, NPY depth) with errors that name the file.

Conventions: RGB images come back as `H x W x 3` uint8 in RGB order; depth as `H x W` float32 metres
(radial range); masks as `H x W` bool (True = the pixel's value is set in the file, polarity is the
caller's business). Errors are `RoomError` when a `room` is given, otherwise `ValueError`; both name the
file and the problem (missing, empty, truncated, undecodable, wrong shape, wrong dtype).

The `*_header` functions read only a few bytes, for cheap validation of a whole dataset.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from panowan.data.layout import RoomError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_FLOAT_DTYPES = (np.float16, np.float32, np.float64)


def _fail(path: Path, problem: str, room: str | os.PathLike | None):
    return RoomError(room, path, problem) if room is not None else ValueError(f"{path}: {problem}")


def _read_bytes(path: Path, room) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _fail(path, "file is missing", room) from None
    except IsADirectoryError:
        raise _fail(path, "is a directory, not a file", room) from None
    if not data:
        raise _fail(path, "file is empty", room)
    return data


def png_header(path: str | os.PathLike, room=None) -> tuple[int, int]:
    """(height, width) from a PNG's IHDR chunk; also checks the file ends with IEND (not truncated)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(24)
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - len(_PNG_IEND)))
            tail = f.read()
    except FileNotFoundError:
        raise _fail(path, "file is missing", room) from None
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise _fail(path, "not a PNG file (bad signature or header)", room)
    if tail != _PNG_IEND:
        raise _fail(path, "PNG is truncated (no IEND chunk at the end)", room)
    width, height = struct.unpack(">II", head[16:24])
    return int(height), int(width)


def _check_hw(path: Path, got: tuple[int, ...], expect_hw: tuple[int, int] | None, room) -> None:
    if expect_hw is not None and tuple(got[:2]) != tuple(expect_hw):
        raise _fail(
            path,
            f"size {got[0]}x{got[1]} (HxW) differs from the expected {expect_hw[0]}x{expect_hw[1]}",
            room,
        )


def _decode_png(path: Path, flags: int, room) -> np.ndarray:
    import cv2

    png_header(path, room)  # signature + truncation check before decoding
    data = _read_bytes(path, room)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise _fail(path, "PNG could not be decoded (corrupt data)", room)
    return image


def read_rgb(path: str | os.PathLike, expect_hw: tuple[int, int] | None = None, room=None) -> np.ndarray:
    """An RGB PNG -> `H x W x 3` uint8 (grey or RGBA files are converted; 16-bit is scaled to 8-bit)."""
    import cv2

    path = Path(path)
    image = _decode_png(path, cv2.IMREAD_COLOR, room)
    _check_hw(path, image.shape, expect_hw, room)
    return np.ascontiguousarray(image[..., ::-1])  # BGR -> RGB


def read_mask(path: str | os.PathLike, expect_hw: tuple[int, int] | None = None, room=None) -> np.ndarray:
    """A binary mask PNG -> `H x W` bool (True where the file's value is non-zero).

    The file must hold only {0, 1} or only {0, 255}; anything else is refused as ambiguous.
    """
    import cv2

    path = Path(path)
    image = _decode_png(path, cv2.IMREAD_GRAYSCALE, room)
    _check_hw(path, image.shape, expect_hw, room)
    values = np.flatnonzero(np.bincount(image.ravel(), minlength=256))  # the values present (fast np.unique)
    if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
        raise _fail(
            path, f"mask is not binary: values {values[:8].tolist()} (expected only 0/1 or 0/255)", room
        )
    return image > 0


def npy_header(path: str | os.PathLike, room=None) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from an NPY header; checks the file is long enough for its data (not truncated)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            except (ValueError, EOFError, SyntaxError) as e:
                raise _fail(path, f"not a valid NPY file ({e})", room) from None
            offset = f.tell()
            f.seek(0, os.SEEK_END)
            size = f.tell()
    except FileNotFoundError:
        raise _fail(path, "file is missing", room) from None
    if dtype.hasobject:
        raise _fail(path, "NPY holds Python objects; a numeric array is required", room)
    needed = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < needed:
        raise _fail(path, f"NPY is truncated ({size} bytes, header promises {needed})", room)
    return tuple(int(s) for s in shape), dtype


def _depth_shape(path: Path, shape: tuple[int, ...], dtype: np.dtype, room) -> tuple[int, int]:
    if dtype.type not in _FLOAT_DTYPES:
        raise _fail(path, f"depth must be a float array (metres), got dtype {dtype}", room)
    if len(shape) == 3 and shape[2] == 1:
        shape = shape[:2]
    if len(shape) != 2:
        raise _fail(path, f"depth must be H x W, got shape {shape}", room)
    return shape  # type: ignore[return-value]


def depth_header(path: str | os.PathLike, room=None) -> tuple[int, int]:
    """(height, width) of a depth NPY, with the dtype/shape checks of `read_depth` but no data read."""
    path = Path(path)
    shape, dtype = npy_header(path, room)
    return _depth_shape(path, shape, dtype, room)


def read_depth(path: str | os.PathLike, expect_hw: tuple[int, int] | None = None, room=None) -> np.ndarray:
    """A depth NPY (H x W or H x W x 1, float16/32/64, metres) -> `H x W` float32. Values are not checked."""
    path = Path(path)
    depth_header(path, room)
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise _fail(path, f"NPY could not be read ({e})", room) from None
    shape = _depth_shape(path, array.shape, array.dtype, room)
    _check_hw(path, shape, expect_hw, room)
    return np.ascontiguousarray(array.reshape(shape), dtype=np.float32)
