"""Shared fixtures: a tiny synthetic, prepared dataset (3 rooms x 6 views at 32x64) and editable copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from panowan.data.prepare import prepare_rooms
from panowan.data.synth import synth_rooms

ROOMS, VIEWS, HEIGHT = 3, 6, 32


@pytest.fixture(scope="session")
def prepared_root(tmp_path_factory) -> Path:
    """Read-only: do not modify (copy with `data_copy`)."""
    root = tmp_path_factory.mktemp("synth")
    synth_rooms(root, ROOMS, VIEWS, HEIGHT, 2 * HEIGHT, seed=11)
    summary = prepare_rooms(root, progress=False)
    assert not summary.failed, summary.failed
    return root


@pytest.fixture
def data_copy(prepared_root, tmp_path) -> Path:
    """A private copy of the prepared dataset that a test may damage."""
    dst = tmp_path / "data"
    shutil.copytree(prepared_root, dst)
    return dst
