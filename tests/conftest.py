"""Shared fixtures: a few tiny prepared synthetic rooms (32 x 64, 5 views), built once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def prepared_root(tmp_path_factory):
    from panowan.data.prepare import prepare_rooms
    from panowan.data.synth import synth_rooms

    root = tmp_path_factory.mktemp("rooms")
    synth_rooms(root, 1, 5, 32, 64, seed=4242)
    summary = prepare_rooms(root, progress=False)
    assert not summary.failed, summary.failed
    return root
