"""Reading the room files (PNG panoramas and masks, NPY depth) with errors that name the file.

Conventions: RGB images come back as `H x W x 3` uint8 in RGB order; depth as `H x W` float32 metres
(radial range); masks as `H x W` bool (True = the pixel's value is set in the file, polarity is the
caller's business). Errors are `RoomError` when a `room` is given, otherwise `ValueError`; both name the
file and the problem (missing, empty, truncated, undecodable, wrong shape, wrong dtype).

The `*_header` functions read only a few bytes, for cheap validation of a whole dataset. They also refuse a
file whose header claims more than `MAX_IMAGE_HW` pixels before anything is decoded or allocated (a hostile
or broken PNG header can claim 60000 x 120000 pixels in 24 bytes, and a decoder would try to allocate
21 GB for it).
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

MAX_IMAGE_HW = (16384, 32768)
"""The largest height and width (pixels) a panorama, mask or depth file may claim. 8x the 14B preset's
720 x 1440 and 2x a 16K panorama; a 16384 x 32768 RGB image is 1.6 GB decoded, so anything larger is
refused from its header as broken or hostile before a byte of pixel data is read."""


def _fail(path: Path, problem: str, room: str | os.PathLike | None):
    return RoomError(room, path, problem) if room is not None else ValueError(f"{path}: {problem}")


def _open_error(path: Path, error: OSError, room) -> ValueError:
    """The error for a file that cannot be opened (missing, a directory, a broken link, no access)."""
    if isinstance(error, FileNotFoundError):
        if path.is_symlink():
            return _fail(path, f"is a broken symbolic link (-> {os.readlink(path)})", room)
        return _fail(path, "file is missing", room)
    if isinstance(error, IsADirectoryError):
        return _fail(path, "is a directory, not a file", room)
    return _fail(path, f"cannot be read ({error.strerror or error})", room)


def _read_bytes(path: Path, room) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise _open_error(path, e, room) from None
    if not data:
        raise _fail(path, "file is empty", room)
    return data


def _check_claimed_size(path: Path, height: int, width: int, room) -> None:
    """Refuse a header's claimed size when empty or above `MAX_IMAGE_HW` (checked before any decoding)."""
    if height <= 0 or width <= 0:
        raise _fail(path, f"header claims an empty image ({height}x{width} pixels, HxW)", room)
    if height > MAX_IMAGE_HW[0] or width > MAX_IMAGE_HW[1]:
        raise _fail(
            path,
            f"header claims {height}x{width} pixels (HxW), above the limit of "
            f"{MAX_IMAGE_HW[0]}x{MAX_IMAGE_HW[1]} (panowan.data.io.MAX_IMAGE_HW); refused before decoding",
            room,
        )


def png_header(path: str | os.PathLike, room=None) -> tuple[int, int]:
    """(height, width) from a PNG's IHDR chunk (the first 24 bytes), refused above `MAX_IMAGE_HW`; also checks
    the file ends with IEND (not truncated). Reads 36 bytes whatever the file's size."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(24)
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - len(_PNG_IEND)))
            tail = f.read()
    except OSError as e:
        raise _open_error(path, e, room) from None
    if size == 0:
        raise _fail(path, "file is empty", room)
    if len(head) < 24 and _PNG_SIGNATURE.startswith(head[:8]):
        raise _fail(path, f"PNG is truncated ({size} bytes, shorter than its 24-byte header)", room)
    if head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise _fail(path, "not a PNG file (bad signature or header)", room)
    width, height = struct.unpack(">II", head[16:24])
    _check_claimed_size(path, int(height), int(width), room)
    if tail != _PNG_IEND:
        raise _fail(path, "PNG is truncated (no IEND chunk at the end)", room)
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

    png_header(path, room)  # signature, claimed size and truncation checks before decoding
    data = _read_bytes(path, room)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:  # e.g. an IDAT stream cut short with the IEND chunk intact
        raise _fail(path, "PNG cannot be decoded (corrupt or missing image data)", room)
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
            size = f.seek(0, os.SEEK_END)
            f.seek(0)
            try:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            except (ValueError, EOFError, SyntaxError) as e:
                if size == 0:
                    raise _fail(path, "file is empty", room) from None
                if "EOF" in str(e) and _is_npy_prefix(path):  # numpy's words for "the file ended early"
                    raise _fail(path, f"NPY is truncated ({size} bytes, inside its header)", room) from None
                raise _fail(path, f"not a valid NPY file ({e})", room) from None
            offset = f.tell()
    except OSError as e:
        raise _open_error(path, e, room) from None
    if dtype.hasobject:
        raise _fail(path, "NPY holds Python objects; a numeric array is required", room)
    needed = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < needed:
        raise _fail(path, f"NPY is truncated ({size} bytes, header promises {needed})", room)
    return tuple(int(s) for s in shape), dtype


def _is_npy_prefix(path: Path) -> bool:
    """True if the file starts like an NPY file (magic string): a short one is a cut NPY, not other data."""
    with open(path, "rb") as f:
        head = f.read(6)
    return head == np.lib.format.MAGIC_PREFIX[: len(head)]


def _depth_shape(path: Path, shape: tuple[int, ...], dtype: np.dtype, room) -> tuple[int, int]:
    if dtype.type not in _FLOAT_DTYPES:
        raise _fail(path, f"depth must be a float array (metres), got dtype {dtype}", room)
    if len(shape) == 3 and shape[2] == 1:
        shape = shape[:2]
    if len(shape) != 2:
        raise _fail(path, f"depth must be H x W, got shape {shape}", room)
    return shape  # type: ignore[return-value]


def depth_header(path: str | os.PathLike, room=None) -> tuple[int, int]:
    """(height, width) of a depth NPY, with the dtype/shape checks of `read_depth` but no data read; refused
    above `MAX_IMAGE_HW` (a sparse file can claim terabytes without being truncated)."""
    path = Path(path)
    shape, dtype = npy_header(path, room)
    height, width = _depth_shape(path, shape, dtype, room)
    _check_claimed_size(path, height, width, room)
    return height, width


def read_depth(path: str | os.PathLike, expect_hw: tuple[int, int] | None = None, room=None) -> np.ndarray:
    """A depth NPY (H x W or H x W x 1, float16/32/64, metres) -> `H x W` float32.

    Values are not checked here, on purpose: what a NaN, inf, negative or 0 means depends on the file, and the
    room checks (`panowan.data.room_checks`) decide it where the room is read:
    - ground truth (output/panorama_XXXX_depth.npy) and view 0's input depth: NaN, +-inf and negative values
      are refused (`RoomError` naming the file, the count and the kinds); 0 marks a hole. A non-finite value
      there is a broken export, and masking it would silently train on a hole the data did not declare.
    - conditioning depth (input/pano0000_to_panoXXXX_depth_range.npy): 0 and NaN / +-inf are holes (the
      layout's convention, NOTES.md); negative values are refused; with a mask file, a NaN / inf / negative
      value at a pixel the mask calls known is refused.
    """
    path = Path(path)
    depth_header(path, room)
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise _fail(path, f"NPY could not be read ({e})", room) from None
    shape = _depth_shape(path, array.shape, array.dtype, room)
    _check_hw(path, shape, expect_hw, room)
    return np.ascontiguousarray(array.reshape(shape), dtype=np.float32)
