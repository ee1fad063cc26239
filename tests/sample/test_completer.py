"""The Python API (`panowan.Completer`): the embedded model end to end without argparse, the same files as
`panowan infer`, every kind of room input, and a light `import panowan`."""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from panowan.commands import infer as infer_cmd

ROOM = "area_000/room_0000"


def _digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def completer():
    from panowan import Completer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained-default warning, where the package holds no model
        return Completer.from_pretrained(None, device="cpu", dtype=torch.float32, resolution=32)


def test_api_writes_what_infer_writes(completer, prepared_root, tmp_path):
    """from_pretrained(None) -> complete a room folder -> save: byte for byte the files of `panowan infer` with
    the same seed and settings; the result holds every view's RGB, metric depth and mask."""
    result = completer.complete(prepared_root / ROOM, steps=1, seed=5, sampler="euler")
    written = result.save(tmp_path / "api")
    assert written == tmp_path / "api" / ROOM

    parser = argparse.ArgumentParser()
    infer_cmd.add_arguments(parser)
    args = parser.parse_args(["--data_root", str(prepared_root), "--output_dir", str(tmp_path / "cli"), "--seed",
                              "5", "--num_inference_steps", "1", "--sampler", "euler", "--resolution", "32",
                              "--device", "cpu"])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        infer_cmd.infer(args)
    api, cli = _digests(tmp_path / "api"), _digests(tmp_path / "cli")
    assert len(api) == 5 * 4 + 2 and api == cli

    assert result.views == [0, 1, 2, 3, 4] and len(result) == 5 and result.room_id == ROOM
    assert result.rgb.shape == (5, 32, 64, 3) and result.rgb.dtype == np.float32
    assert result.rgb.min() >= 0 and result.rgb.max() <= 1
    assert result.depth.shape == (5, 32, 64) and (result.depth > 0).all()
    assert result.mask.dtype == bool and result.mask[0].all() and not result.mask[1:].all()
    assert result.passes[0].views == (0, 1, 2, 3, 4) and result.completed_in == [0] * 5
    rgb1, depth1, mask1 = result.view(1)
    np.testing.assert_array_equal(rgb1, result.rgb[1])
    np.testing.assert_array_equal(mask1, result.mask[1])
    np.testing.assert_array_equal(depth1, result.depth[1])
    saved = np.load(written / "panorama_0001_depth.npy")
    np.testing.assert_array_equal(saved, depth1)
    meta = json.loads((written / "completion.json").read_text())
    assert meta["views"] == result.views and meta["seed"] == 5 and "passes" not in meta


def test_dataset_item_and_sample_inputs(completer, prepared_root, tmp_path):
    """A (dataset, index) pair and a bare Sample complete as the room folder does; a Sample has no poses, so
    saving it asks for them."""
    from panowan.sample.rooms import open_rooms

    folder = completer.complete(prepared_root / ROOM, steps=1, seed=2)
    dataset, indices = open_rooms(str(prepared_root), [ROOM], completer.num_frames, completer.resolution, 0,
                                  completer.model.config.condition_fills())  # fmt: skip
    item = completer.complete((dataset, indices[0]), steps=1, seed=2)
    bare = completer.complete(dataset[indices[0]], steps=1, seed=2)
    for other in (item, bare):
        assert other.views == folder.views
        np.testing.assert_array_equal(other.rgb, folder.rgb)
        np.testing.assert_array_equal(other.depth, folder.depth)
    with pytest.raises(ValueError, match="poses"):
        bare.save(tmp_path / "bare")
    info = dataset.rooms[indices[0]]
    posed = completer.complete(dataset[indices[0]], steps=1, seed=2, poses=info.poses)
    assert _digests(posed.save(tmp_path / "posed")) == _digests(folder.save(tmp_path / "folder"))


def test_from_pretrained_exported_folder(prepared_root, tmp_path):
    """A folder holding an exported model loads as `--model_dir` does; its recommended sampling is used."""
    from panowan import Completer
    from panowan.models.replicas import tiny_dual_stream

    model, _ = tiny_dual_stream(seed=3)
    infer_cmd.export_embedded(model, {"resolution": 32, "num_frames": 5}, tmp_path / "m", compact=False,
                              sampling={"num_inference_steps": 1, "sampler": "euler"})  # fmt: skip
    loaded = Completer.from_pretrained(tmp_path / "m", dtype="float32")
    assert loaded.source.kind == "embedded" and (loaded.num_frames, loaded.resolution) == (5, 32)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], tensor, rtol=0, atol=0)
    result = loaded.complete(prepared_root / ROOM)
    assert (result.settings["steps"], result.settings["sampler"]) == (1, "euler")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        loaded.complete(prepared_root / ROOM, steps=0)
    with pytest.raises(ValueError, match="checkpoint"):
        Completer.from_pretrained(tmp_path / "nothing_here")


def test_import_panowan_stays_light():
    code = ("import sys, panowan; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'Completer' in dir(panowan); from panowan import Completer, RoomCompletion; "
            "assert Completer.__module__ == 'panowan.sample.completer'")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_step_cache_skips_steps_and_records_them(completer, prepared_root):
    """--step_cache through the API: a threshold no step reaches changes nothing and records nothing more
    than the threshold; a huge one skips every step after the first and the settings say how many."""
    plain = completer.complete(prepared_root / ROOM, steps=4, seed=5, sampler="euler")
    never = completer.complete(prepared_root / ROOM, steps=4, seed=5, sampler="euler", step_cache=1e-12)
    always = completer.complete(prepared_root / ROOM, steps=4, seed=5, sampler="euler", step_cache=1e9)
    assert "step_cache" not in plain.settings
    assert never.settings["step_cache_skipped"] == 0
    assert np.array_equal(never.rgb, plain.rgb) and np.array_equal(never.depth, plain.depth)
    assert always.settings["step_cache_skipped"] == 3
    assert not np.array_equal(always.rgb, plain.rgb)


def test_attention_backend_is_checked_before_loading():
    from panowan.models.attention import attention_backend

    with pytest.raises(ValueError, match=r"not a diffusers backend; one of: .*native"):
        attention_backend("no-such-kernel")
    with attention_backend("native"):  # diffusers' own SDPA path: accepted, usable as a context
        pass


def test_known_depth_is_pasted_back_in_metres_as_read(completer, prepared_root, tmp_path):
    """Known pixels keep the input's depth exactly, also where a target view sees farther than the room's
    normalised depth range (built from view 0) reaches: the composite uses the metric condition, not the
    clamped normalised one."""
    import shutil

    room = tmp_path / "rooms" / ROOM
    shutil.copytree(prepared_root / ROOM, room)
    cond = room / "input" / "pano0000_to_pano0002_depth_range.npy"
    depth = np.load(cond)
    known = depth > 0
    far = np.argwhere(known)[0]
    depth[tuple(far)] = 1000.0  # far beyond anything view 0 saw: clamped by the normalisation
    np.save(cond, depth)
    result = completer.complete(room, steps=1, seed=5, sampler="euler")
    i = result.views.index(2)
    got = result.depth[i]
    assert result.mask[i][tuple(far)] and got[tuple(far)] == np.float32(1000.0)
    assert np.array_equal(got[known], depth[known].astype(np.float32))
