"""Atomic file writes: a reader never sees a half-written file.

Every writer goes to a temporary file in the destination folder and `os.replace`s it into place,
which is atomic on POSIX file systems when source and destination share the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on error removed.

    `suffix` defaults to the destination's suffix, so libraries that pick a format by extension
    (OpenCV, numpy) write the right one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
    """Call `writer(tmp_path)` and move the result onto `path` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    def write(p: Path) -> None:
        with open(p, "wb") as f:
            np.save(f, array)

    return atomic_write(path, write)


def atomic_write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an image with OpenCV. `image` is H x W (grey) or H x W x 3 in **RGB** order,
    uint8 or uint16; the file format follows the extension of `path`."""
    import cv2

    if image.ndim == 3:
        image = np.ascontiguousarray(image[..., ::-1])  # RGB -> BGR for OpenCV

    def write(p: Path) -> None:
        if not cv2.imwrite(str(p), image):
            raise OSError(f"{path}: OpenCV could not encode the image ({image.shape}, {image.dtype})")

    return atomic_write(path, write)
