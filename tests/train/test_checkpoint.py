"""Checkpoint files on their own: complete-or-invisible folders, limit pruning, exact state round trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from panowan.train import checkpoint as ckpt


def _save(out, step, model, opt, sched, limit=None):
    def save_weights(folder):
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "w.safetensors"))

    return ckpt.save_checkpoint(out, step, save_weights=save_weights, local_streams=("rgb", "depth"), pair_index=0,
                                optimizer=opt, scheduler=sched, scaler=None, trainer_state={"loader": {"epoch": step}},
                                config={"seed": 1}, total_limit=limit)  # fmt: skip


def _setup(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    return model, opt, sched


def _train_step(model, opt, sched):
    opt.zero_grad()
    model(torch.randn(4, 3)).square().sum().backward()
    opt.step()
    sched.step()


def test_round_trip_restores_weights_optimizer_scheduler_and_rngs(tmp_path) -> None:
    model, opt, sched = _setup(0)
    _train_step(model, opt, sched)
    folder = _save(tmp_path, 1, model, opt, sched)
    _train_step(model, opt, sched)  # its input batch comes from the torch RNG saved above
    after_one_more = {k: v.clone() for k, v in model.state_dict().items()}

    model2, opt2, sched2 = _setup(5)  # other init, other RNG state

    def load():
        loaded = {}
        state = ckpt.load_checkpoint(folder, load_weights=lambda f: loaded.update(load_file(str(f / "w.safetensors"))),
                                     local_streams=("rgb", "depth"), optimizer=opt2, scheduler=sched2, scaler=None)  # fmt: skip
        model2.load_state_dict(loaded)
        return state

    assert load() == {"step": 1, "loader": {"epoch": 1}}
    draws = (torch.rand(3), np.random.rand(), random.random())
    load()
    again = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(draws[0], again[0]) and draws[1:] == again[1:]
    load()
    _train_step(model2, opt2, sched2)
    for k, v in after_one_more.items():
        assert torch.equal(model2.state_dict()[k], v), k
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_incomplete_folders_are_invisible_and_limit_prunes_oldest(tmp_path) -> None:
    model, opt, sched = _setup(0)
    for step in (1, 2, 3):
        _save(tmp_path, step, model, opt, sched, limit=2)
    (tmp_path / "checkpoint-9").mkdir()  # no marker
    (tmp_path / f"{ckpt.TMP_PREFIX}10").mkdir()  # a save that never finished
    assert [s for s, _ in ckpt.complete_checkpoints(tmp_path)] == [2, 3]
    assert ckpt.resolve_resume(tmp_path, "latest") == tmp_path / "checkpoint-3"
    assert ckpt.resolve_resume(tmp_path, "none") is None
    assert ckpt.resolve_resume(tmp_path / "empty", "latest") is None
    with pytest.raises(ValueError, match="incomplete checkpoint"):
        ckpt.resolve_resume(tmp_path, str(tmp_path / "checkpoint-9"))
    with pytest.raises(ValueError, match="same placement"):
        ckpt.load_checkpoint(tmp_path / "checkpoint-3", load_weights=lambda f: None, local_streams=("rgb",),
                             optimizer=opt, scheduler=sched, scaler=None)  # fmt: skip
