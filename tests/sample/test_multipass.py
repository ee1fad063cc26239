"""Multi-pass completion: a room with more views than the model's frames has every view completed, in passes
that hold view 0 and completed views as known frames; one pass (unchanged files) for a room of F views."""

from __future__ import annotations

import argparse
import hashlib
import json
import warnings

import numpy as np
import pytest
import torch

from panowan.commands import infer as infer_cmd
from panowan.sample import multipass
from panowan.sample.multipass import first_pass, known_frames, plan_passes

ROOM = "area_000/room_0000"


def _digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def _room(root, views: int, seed: int):
    from panowan.data.prepare import prepare_rooms
    from panowan.data.synth import synth_rooms

    synth_rooms(root, 1, views, 32, 64, seed=seed)
    summary = prepare_rooms(root, progress=False)
    assert not summary.failed, summary.failed
    return root / ROOM


@pytest.fixture(scope="module")
def rooms(tmp_path_factory):
    root = tmp_path_factory.mktemp("multipass")
    return {7: _room(root / "v7", 7, 71), 12: _room(root / "v12", 12, 120)}


@pytest.fixture(scope="module")
def completer():
    from panowan import Completer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained-default warning, where the package holds no model
        return Completer.from_pretrained(None, resolution=32, num_frames=5)


# ------------------------------------------------------------------------------------------------ plans
@pytest.mark.parametrize("count", [5, 6, 7, 9, 12, 13, 30])
@pytest.mark.parametrize("order", ["index", "path"])
def test_plan_completes_every_view_once(count, order):
    views = list(range(count))
    rng = np.random.default_rng(count)
    positions = {v: rng.normal(size=3) for v in views}
    size = min(5, (count - 1) // 4 * 4 + 1)
    plan = plan_passes(views, size, positions=positions, view_order=order, seed=3)
    completed = [v for p in plan for v in p.completed]
    assert sorted(completed) == views  # every view, exactly once
    assert plan[0].seed == 3 and len({p.seed for p in plan}) == len(plan)
    assert sorted(plan[0].views) == first_pass(views, size) and plan[0].known == ()
    done = set(plan[0].completed)
    for p in plan[1:]:
        assert p.views[0] == 0 and len(p.views) == size and len(set(p.views)) == size
        assert p.known and set(p.known) <= done - {0}  # completed earlier, never view 0
        assert set(p.views) == {0, *p.completed, *p.known} and not set(p.completed) & done
        if order == "index":
            assert list(p.views) == sorted(p.views)
        done |= set(p.completed)
    assert plan == plan_passes(views, size, positions=positions, view_order=order, seed=3)
    assert len(plan) == 1 + -(-(count - size) // (size - 2))


def test_first_pass_spreads_views():
    assert first_pass(range(5), 5) == [0, 1, 2, 3, 4]
    assert first_pass(range(7), 5) == [0, 2, 3, 5, 6]
    assert first_pass(range(12), 5) == [0, 3, 6, 8, 11]
    assert first_pass([0, 2, 4, 10, 11, 12], 5) == [0, 2, 10, 11, 12]  # positions 0, 1, 3, 4, 5


def test_known_frames_are_full_conditions(prepared_root):
    """A completed view as a known frame: its RGB and (normalised) depth are the condition, mask all ones."""
    from panowan.data.dataset import RoomDataset

    sample = RoomDataset(prepared_root, num_frames=5, height=32)[0]
    rgb = torch.rand(3, 32, 64)
    depth = torch.exp(torch.empty(1, 32, 64).uniform_(0.0, 1.5))
    out = known_frames(sample, {2: (rgb, depth)})
    torch.testing.assert_close(out.cond_rgb[2], rgb * 2 - 1)
    torch.testing.assert_close(sample.depth_norm.denormalize(out.cond_depth[2]), depth, rtol=1e-5, atol=0)
    assert out.mask[2].eq(1).all() and not sample.mask[2].eq(1).all()
    for i in (0, 1, 3, 4):
        assert torch.equal(out.cond_rgb[i], sample.cond_rgb[i]) and torch.equal(out.mask[i], sample.mask[i])
    assert torch.equal(out.rgb, sample.rgb)


# ------------------------------------------------------------------------------------------ completion
def test_one_pass_room_is_unchanged(completer, prepared_root, tmp_path):
    """A room of F views: one pass, byte for byte what `complete_room` + `write_completion` (the single-pass
    inference every earlier `panowan infer` ran) writes."""
    from panowan.sample.model_source import weight_settings
    from panowan.sample.pipeline import complete_room, write_completion
    from panowan.sample.rooms import open_rooms

    dataset, _ = open_rooms(str(prepared_root), None, 5, 32, 4, completer.model.config.condition_fills())
    sample = dataset[0]
    info = dataset.rooms[0]
    old = complete_room(completer.model, completer.codec, completer.encoder, sample, steps=2, seed=4,
                        sampler="euler", flow_shift=completer.flow_shift, progress=False)  # fmt: skip
    old.settings["model"] = completer.source.kind
    old.settings.update(weight_settings(completer.source))  # what identifies the weights (the infer skip)
    write_completion(tmp_path / "old", old, [info.poses[info.views.index(v)] for v in old.view_indices])
    new = completer.complete(prepared_root / ROOM, steps=2, seed=4, sampler="euler")
    assert len(new.passes) == 1 and new.views == sample.view_indices
    new.save(tmp_path / "new")
    assert _digests(tmp_path / "old") == _digests(tmp_path / "new")


@pytest.mark.parametrize("views", [7, 12])
def test_every_view_completed_and_known_views_kept(completer, rooms, tmp_path, monkeypatch, views):
    """Every view is written and listed (with its pass); a pass's known frames are the earlier completions, the
    final result of a view is the pass that completed it (never overwritten by a later pass), and the completion
    is deterministic in the seed."""
    calls = []
    original = multipass.complete_room

    def spy(model, codec, encoder, sample, **kw):
        out = original(model, codec, encoder, sample, **kw)
        calls.append((sample, out))
        return out

    monkeypatch.setattr(multipass, "complete_room", spy)
    result = completer.complete(rooms[views], steps=1, seed=9, sampler="euler")
    folder = result.save(tmp_path / "a")
    assert result.views == list(range(views)) and len(calls) == len(result.passes) > 1
    for v in range(views):
        for suffix in (".png", "_depth.npy", "_depth.png", "_depth_color.png"):
            assert (folder / f"panorama_{v:04d}{suffix}").is_file()
    meta = json.loads((folder / "completion.json").read_text())
    assert meta["views"] == list(range(views)) and meta["completed_in_pass"] == result.completed_in
    assert [p["views"] for p in meta["passes"]] == [list(p.views) for p in result.passes]
    for v, k in zip(result.views, result.completed_in):
        assert v in meta["passes"][k]["completed"]

    by_view = {}  # view -> (rgb 3HW, depth 1HW) of the pass that completed it
    for step, (sample, out) in zip(result.passes, calls):
        assert tuple(sample.view_indices) == step.views == tuple(out.view_indices)
        for i, v in enumerate(step.views):
            if v in step.known:  # a known frame: the earlier completion, as a full condition
                rgb, depth = by_view[v]
                torch.testing.assert_close(sample.cond_rgb[i], rgb * 2 - 1, rtol=0, atol=1e-6)
                assert sample.mask[i].eq(1).all()
                torch.testing.assert_close(out.rgb_F3HW[i], rgb, rtol=0, atol=1e-5)  # composited: kept
                torch.testing.assert_close(out.depth_m_F1HW[i], depth, rtol=1e-4, atol=0)
        for i, v in enumerate(step.views):
            if v in step.completed:
                by_view[v] = (out.rgb_F3HW[i], out.depth_m_F1HW[i])
    for i, v in enumerate(result.views):
        rgb, depth = by_view[v]
        np.testing.assert_array_equal(result.rgb[i], rgb.permute(1, 2, 0).numpy())
        np.testing.assert_array_equal(result.depth[i], depth[0].numpy())
    assert result.mask[0].all() and not result.mask[1:].all()  # view 0 known everywhere

    again = completer.complete(rooms[views], steps=1, seed=9, sampler="euler")
    assert _digests(again.save(tmp_path / "b")) == _digests(folder)
    other = completer.complete(rooms[views], steps=1, seed=10, sampler="euler")
    later = [i for i, k in enumerate(other.completed_in) if k > 0]
    assert not np.array_equal(other.rgb[later], result.rgb[later])


def test_infer_writes_every_view(completer, rooms, tmp_path):
    """`panowan infer` on a 7-view room with a 5-frame model writes all 7 views, as the API does."""
    parser = argparse.ArgumentParser()
    infer_cmd.add_arguments(parser)
    data_root = rooms[7].parent.parent
    args = parser.parse_args(["--data_root", str(data_root), "--output_dir", str(tmp_path / "cli"), "--seed", "1",
                              "--num_inference_steps", "1", "--sampler", "euler", "--resolution", "32",
                              "--num_frames", "5", "--device", "cpu"])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        infer_cmd.infer(args)
    completer.complete(rooms[7], steps=1, seed=1, sampler="euler").save(tmp_path / "api")
    cli = _digests(tmp_path / "cli")
    assert len(cli) == 7 * 4 + 2 and cli == _digests(tmp_path / "api")
