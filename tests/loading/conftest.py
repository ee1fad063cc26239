"""Session fixtures: one tiny replica written once in both layouts (see loading_replica.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from loading_replica import Replica, build_replica, write_diffusers, write_original


@pytest.fixture(scope="session")
def replica() -> Replica:
    return build_replica(seed=0)


@pytest.fixture(scope="session")
def layouts(replica: Replica, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wan_layouts")
    return {
        "diffusers": write_diffusers(replica, root / "diffusers"),
        "original": write_original(replica, root / "original"),
    }


@pytest.fixture(scope="session")
def loaded(layouts: dict[str, Path]):
    from panowan.models.loading import load_base_model

    return {name: load_base_model(path, dtype=torch.float32) for name, path in layouts.items()}
