"""File manifests: every file's relative name, size and sha256, to tell a folder that is intact from one
that was truncated, overwritten or bit-flipped after it was written.

A manifest is a JSON-ready dict `{relative/posix/name: {"size": bytes, "sha256": hex}}`. Training
checkpoints keep theirs in the completion marker (`panowan.train.checkpoint`), exported models in
`default_model.json` (`panowan.models.exported`). Hashing reads 4 MiB chunks, several files at once in
threads (hashlib releases the GIL on large updates), so it runs at about the disk's read speed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CHUNK = 4 << 20
"""Bytes per hashlib update: large enough that the Python loop costs nothing, small enough to stream."""
THREADS = 4
"""Files hashed at once (a folder of several weight files reads in parallel)."""

Manifest = dict[str, dict[str, int | str]]


class ManifestError(ValueError):
    """A folder does not match its manifest. `path` is the offending file, `problem` one of "missing",
    "size", "hash" (or "manifest" for an unreadable manifest)."""

    def __init__(self, message: str, path: Path, problem: str) -> None:
        super().__init__(message)
        self.path, self.problem = path, problem


def file_sha256(path: str | os.PathLike, chunk: int = CHUNK) -> str:
    """Hex sha256 of a file, read in `chunk`-byte pieces."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buffer = bytearray(chunk)
        view = memoryview(buffer)
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def _hash_all(paths: list[Path]) -> list[str]:
    if len(paths) <= 1:
        return [file_sha256(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(THREADS, len(paths))) as pool:
        return list(pool.map(file_sha256, paths))


def build_manifest(root: str | os.PathLike, exclude: Iterable[str] = ()) -> Manifest:
    """The manifest of every regular file under `root` (recursively), names relative to `root` in POSIX form,
    except the names in `exclude` (e.g. the file that will hold the manifest)."""
    root = Path(root)
    skip = set(exclude)
    names = sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.is_symlink()
    )
    names = [n for n in names if n not in skip]
    return manifest_of(root, names)


def manifest_of(root: str | os.PathLike, names: Iterable[str]) -> Manifest:
    """The manifest of the given files (names relative to `root`)."""
    root = Path(root)
    names = list(names)
    paths = [root / n for n in names]
    sizes = [p.stat().st_size for p in paths]
    hashes = _hash_all(paths)
    return {n: {"size": s, "sha256": h} for n, s, h in zip(names, sizes, hashes)}


def check_manifest(
    root: str | os.PathLike,
    manifest: Manifest,
    *,
    hashes: bool = True,
    only: Iterable[str] | None = None,
    what: str | None = None,
) -> None:
    """Raise `ManifestError` naming `what` (default: `root`) and the first offending file unless every file of
    `manifest` (or of its names in `only`) exists under `root` with its size and, with `hashes`, its sha256.

    Presence and sizes are checked first (a stat each), so a missing or truncated file is reported without
    reading anything. Files under `root` that the manifest does not list are not checked."""
    root = Path(root)
    what = what or str(root)
    names = sorted(manifest if only is None else (n for n in only if n in manifest))
    for name in names:
        path, entry = root / name, manifest[name]
        if not isinstance(entry, dict) or not {"size", "sha256"} <= set(entry):
            raise ManifestError(
                f"{what}: its manifest entry of {name} is malformed ({entry!r})", path, "manifest"
            )
        if not path.is_file():
            raise ManifestError(f"{what}: {name} is missing (listed in its manifest)", path, "missing")
        size = path.stat().st_size
        if size != entry["size"]:
            raise ManifestError(f"{what}: {name} has {size} bytes, its manifest says {entry['size']} "
                                "(truncated or overwritten)", path, "size")  # fmt: skip
    if not hashes:
        return
    for name, digest in zip(names, _hash_all([root / n for n in names])):
        if digest != manifest[name]["sha256"]:
            raise ManifestError(f"{what}: {name} does not match its sha256 in the manifest (corrupted: its bytes "
                                "changed after it was written)", root / name, "hash")  # fmt: skip


__all__ = [
    "CHUNK",
    "Manifest",
    "ManifestError",
    "build_manifest",
    "check_manifest",
    "file_sha256",
    "manifest_of",
]
