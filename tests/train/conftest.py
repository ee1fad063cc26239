"""Shared fixtures: one intra-op thread (2 shared cores), synthetic prepared rooms at 32x64."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)  # before any torch work: forked ranks then inherit no OpenMP pool


@pytest.fixture(scope="session")
def rooms(tmp_path_factory) -> Path:
    """3 synthetic rooms, 5 views of 32 x 64, prepared (view 0 reprojected into every view)."""
    from panowan.data.prepare import prepare_rooms
    from panowan.data.synth import synth_rooms

    root = tmp_path_factory.mktemp("rooms")
    synth_rooms(root, 3, 5, 32, 64, seed=0)
    summary = prepare_rooms(root)
    assert not summary.failed, summary.failed
    return root


def corrupt_copy(src: Path, dst: Path, count: int) -> list[str]:
    """Copy the rooms and put a NaN into one ground-truth depth of the first `count` rooms (found only
    when the room is loaded, not when it is scanned). Returns the corrupted room ids."""
    shutil.copytree(src, dst)
    room_dirs = sorted(p for p in dst.glob("*/*") if p.is_dir())
    for room in room_dirs[:count]:
        path = room / "output" / "panorama_0002_depth.npy"
        depth = np.load(path)
        depth[3, 5] = np.nan
        np.save(path, depth)
    return [f"{r.parent.name}/{r.name}" for r in room_dirs[:count]]
