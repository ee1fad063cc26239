"""End-to-end inference on a tiny synthetic room: files, reproducibility, point cloud, bad inputs."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import warnings

import numpy as np
import pytest
import torch

from panowan.commands import infer as infer_cmd

ROOM = "area_000/room_0000"


def _args(data_root, output_dir, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    infer_cmd.add_arguments(parser)
    return parser.parse_args(["--data_root", str(data_root), "--output_dir", str(output_dir),
                              "--num_inference_steps", "2", "--num_frames", "5", "--resolution", "32",
                              *extra])  # fmt: skip


def _infer(data_root, output_dir, *extra: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained-default warning
        return infer_cmd.infer(_args(data_root, output_dir, *extra))


def _digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def two_runs(prepared_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("infer")
    _infer(prepared_root, out / "a", "--seed", "7")
    _infer(prepared_root, out / "b", "--seed", "7")
    _infer(prepared_root, out / "c", "--seed", "8", "--no_composite")
    return out


def test_same_seed_same_files(two_runs):
    a, b = _digests(two_runs / "a"), _digests(two_runs / "b")
    assert len(a) == 5 * 4 + 2  # 4 files per view, room.ply, completion.json
    assert a == b
    c = _digests(two_runs / "c")
    assert c[f"{ROOM}/panorama_0001.png"] != a[f"{ROOM}/panorama_0001.png"]


def test_outputs_layout_and_units(two_runs, prepared_root):
    import cv2

    room = two_runs / "a" / ROOM
    for v in range(5):
        rgb = cv2.imread(str(room / f"panorama_{v:04d}.png"), cv2.IMREAD_UNCHANGED)
        assert rgb.shape == (32, 64, 3) and rgb.dtype == np.uint8
        depth = np.load(room / f"panorama_{v:04d}_depth.npy")
        assert depth.dtype == np.float32 and depth.shape == (32, 64) and (depth > 0).all()
        mm = cv2.imread(str(room / f"panorama_{v:04d}_depth.png"), cv2.IMREAD_UNCHANGED)
        assert mm.dtype == np.uint16
        np.testing.assert_array_equal(mm, np.clip(np.round(depth * 1000), 0, 65535).astype(np.uint16))
        assert cv2.imread(str(room / f"panorama_{v:04d}_depth_color.png")).shape == (32, 64, 3)
    # view 0 is known everywhere: composited output equals the input panorama and its depth
    src = prepared_root / ROOM / "input"
    np.testing.assert_array_equal(
        cv2.imread(str(room / "panorama_0000.png")), cv2.imread(str(src / "panorama_0000.png"))
    )
    np.testing.assert_allclose(
        np.load(room / "panorama_0000_depth.npy"), np.load(src / "panorama_0000_depth.npy"), rtol=1e-5
    )
    meta = json.loads((room / "completion.json").read_text())
    assert meta["views"] == [0, 1, 2, 3, 4] and meta["seed"] == 7 and meta["composite"] is True


def test_point_cloud_opens_with_trimesh(two_runs):
    import trimesh

    room = two_runs / "a" / ROOM
    cloud = trimesh.load(room / "room.ply")
    depths = [np.load(room / f"panorama_{v:04d}_depth.npy") for v in range(5)]
    assert len(cloud.vertices) == sum(int((d > 0).sum()) for d in depths)
    assert cloud.colors.shape[0] == len(cloud.vertices)
    # View 0's points come first and are in its own frame: range = |point|.
    n0 = int((depths[0] > 0).sum())
    np.testing.assert_allclose(
        np.linalg.norm(cloud.vertices[:n0], axis=1), depths[0][depths[0] > 0], rtol=1e-5
    )


def test_point_cloud_view1_frame(two_runs, prepared_root):
    import trimesh

    from panowan.geometry.pointcloud import backproject_erp
    from panowan.geometry.pose import load_pose

    room = two_runs / "a" / ROOM
    cloud = np.asarray(trimesh.load(room / "room.ply").vertices)
    d0 = np.load(room / "panorama_0000_depth.npy")
    d1 = np.load(room / "panorama_0001_depth.npy")
    p0 = load_pose(prepared_root / ROOM / "input" / "pose_0000.json")
    p1 = load_pose(prepared_root / ROOM / "input" / "pose_0001.json")
    world, _ = backproject_erp(torch.from_numpy(d1).double(), p1)
    in_view0 = p0.world_to_camera(world).numpy()  # independent route: world points into view 0's camera
    n0, n1 = int((d0 > 0).sum()), int((d1 > 0).sum())
    np.testing.assert_allclose(cloud[n0 : n0 + n1], in_view0, atol=1e-4)


# ----------------------------------------------------------------------------------------- bad input
def _copy_room(prepared_root, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(prepared_root, dst)
    return dst


def _no_heavy_work(monkeypatch):
    """Fail loudly if a model is built: the errors below must come first."""

    def boom(*a, **k):
        raise AssertionError("the model was built before the input was checked")

    monkeypatch.setattr(infer_cmd, "build_model", boom)


def test_unprepared_room_error(prepared_root, tmp_path, monkeypatch):
    _no_heavy_work(monkeypatch)
    data = _copy_room(prepared_root, tmp_path)
    (data / ROOM / "input" / "pano0000_to_pano0003_rgb.png").unlink()
    with pytest.raises(ValueError, match=r"pano0000_to_pano0003_rgb\.png.*panowan prepare"):
        _infer(data, tmp_path / "out")


def test_missing_view_error(prepared_root, tmp_path, monkeypatch):
    _no_heavy_work(monkeypatch)
    data = _copy_room(prepared_root, tmp_path)
    (data / ROOM / "input" / "pose_0002.json").unlink()
    with pytest.raises(ValueError, match=r"pose_0002\.json"):
        _infer(data, tmp_path / "out")


def test_model_dir_errors(prepared_root, tmp_path, monkeypatch):
    _no_heavy_work(monkeypatch)
    with pytest.raises(ValueError, match="not an exported model"):
        _infer(prepared_root, tmp_path / "out", "--model_dir", str(tmp_path))
    with pytest.raises(ValueError, match="--model_dir is an exported model"):
        _infer(
            prepared_root, tmp_path / "out", "--model_dir", str(tmp_path), "--checkpoint_dir", str(tmp_path)
        )


def test_unknown_room_error(prepared_root, tmp_path, monkeypatch):
    _no_heavy_work(monkeypatch)
    with pytest.raises(ValueError, match="area_000/nope"):
        _infer(prepared_root, tmp_path / "out", "--rooms", "area_000/nope")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint folder as the trainer writes it (weights/ via save_trainable, COMPLETE marker)."""
    from panowan.models.lora import add_lora, save_trainable
    from panowan.models.replicas import tiny_dual_stream

    root = tmp_path_factory.mktemp("run")
    model, _ = tiny_dual_stream(seed=0)
    add_lora(model, 4)
    folder = root / "checkpoint-10"
    save_trainable(model, folder / "weights")
    (folder / "COMPLETE").write_text("")
    (folder / "config.json").write_text(json.dumps({"num_frames": 5, "resolution": 32, "flow_shift": 3.0}))
    return root


def test_checkpoint_runs(prepared_root, checkpoint, tmp_path):
    out = _infer(prepared_root, tmp_path / "out", "--checkpoint_dir", str(checkpoint), "--checkpoint_step", "10",
                 "--lora_rank", "4", "--preset", "tiny")  # fmt: skip
    assert (out[0] / "room.ply").is_file()


def test_fully_trained_checkpoint_runs_and_exports(prepared_root, tmp_path):
    """A checkpoint of a run without LoRA (whole streams saved) completes rooms under `--lora_rank 0`, refuses
    another rank, and exports to a model folder that `--model_dir` completes identically."""
    from panowan.models.lora import save_trainable
    from panowan.models.replicas import tiny_dual_stream

    model, _ = tiny_dual_stream(seed=11)  # a base other than the seed-0 one the loader builds
    folder = tmp_path / "run" / "checkpoint-3"
    save_trainable(model, folder / "weights")
    (folder / "COMPLETE").write_text("")
    (folder / "config.json").write_text(json.dumps({"num_frames": 5, "resolution": 32, "flow_shift": 3.0}))
    out = _infer(
        prepared_root, tmp_path / "ckpt", "--checkpoint_dir", str(tmp_path / "run"), "--lora_rank", "0"
    )
    with pytest.raises(ValueError, match=r"LoRA rank 0.*--lora_rank is 4"):
        _infer(prepared_root, tmp_path / "x", "--checkpoint_dir", str(tmp_path / "run"), "--lora_rank", "4")
    infer_cmd.export_embedded(model, {"resolution": 32, "num_frames": 5, "synth_seeds": [0]}, tmp_path / "m",
                              compact=False)  # fmt: skip
    exported = _infer(prepared_root, tmp_path / "exp", "--model_dir", str(tmp_path / "m"))
    for a, b in zip(out, exported):
        assert (a / "panorama_0001.png").read_bytes() == (b / "panorama_0001.png").read_bytes()


def test_lora_rank_mismatch_error(prepared_root, checkpoint, tmp_path, monkeypatch):
    _no_heavy_work(monkeypatch)
    with pytest.raises(ValueError, match=r"LoRA rank 4.*--lora_rank is 8"):
        _infer(prepared_root, tmp_path / "out", "--checkpoint_dir", str(checkpoint), "--lora_rank", "8")


def test_other_configuration_error(prepared_root, checkpoint, tmp_path, monkeypatch):
    _no_heavy_work(monkeypatch)
    with pytest.raises(ValueError, match="another model configuration"):
        _infer(
            prepared_root,
            tmp_path / "out",
            "--checkpoint_dir",
            str(checkpoint),
            "--preset",
            "wan2.1-1.3b-i2v",
        )


def test_missing_checkpoint_step_error(prepared_root, checkpoint, tmp_path, monkeypatch):
    _no_heavy_work(monkeypatch)
    with pytest.raises(ValueError, match=r"checkpoint-99.*steps \[10\]"):
        _infer(
            prepared_root, tmp_path / "out", "--checkpoint_dir", str(checkpoint), "--checkpoint_step", "99"
        )


def test_config_mismatch_in_weights_is_caught(prepared_root, checkpoint, tmp_path):
    """A weights folder whose tensors do not fit its config: load_trainable names the file."""
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "run"
    shutil.copytree(checkpoint, bad)
    path = bad / "checkpoint-10" / "weights" / "plucker_net.safetensors"
    tensors = load_file(path)
    key = next(iter(tensors))
    tensors[key] = torch.zeros(*[s + 1 for s in tensors[key].shape])
    save_file(tensors, path)
    with pytest.raises(ValueError, match=r"plucker_net\.safetensors"):
        _infer(prepared_root, tmp_path / "out", "--checkpoint_dir", str(bad))


def _perturbed_tiny_with_lora():
    from panowan.models.lora import add_lora
    from panowan.models.replicas import tiny_dual_stream

    model, _ = tiny_dual_stream(seed=3)
    add_lora(model, 4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # not the initialisation: a load must really copy
    return model


def test_embedded_model_roundtrip(tmp_path, monkeypatch):
    """export_embedded(compact=False) writes what the default-model path loads back, tensor for tensor."""
    model = _perturbed_tiny_with_lora()
    files = infer_cmd.export_embedded(model, {"resolution": 32, "synth_seeds": [0]}, tmp_path, compact=False)
    assert sum(f.stat().st_size for f in files) < 20 * 2**20
    monkeypatch.setattr(infer_cmd, "ASSETS", tmp_path)
    source = infer_cmd.embedded_source()
    assert source.kind == "embedded" and source.lora.rank == 4 and source.train_config["resolution"] == 32
    loaded, _, _ = infer_cmd.build_model(source, None, torch.device("cpu"), torch.float32)
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys()
    for k in ours:
        torch.testing.assert_close(theirs[k], ours[k], rtol=0, atol=0)


def test_compact_embedded_model_computes_the_same_function(tmp_path):
    """The default export (LoRA folded in, float16 parameters) is smaller and, loaded back, gives the
    adapter model's outputs up to float16 rounding of the weights."""
    from safetensors import safe_open

    from panowan.models.replicas import tiny_inputs

    model = _perturbed_tiny_with_lora().eval()
    full = infer_cmd.export_embedded(model, {}, tmp_path / "full", compact=False)[0].stat().st_size
    files = infer_cmd.export_embedded(model, {}, tmp_path / "compact")
    assert files[0].stat().st_size < 0.5 * full  # no adapter matrices, half-width numbers
    with safe_open(str(files[0]), "pt") as f:
        names = list(f.keys())
        assert {f.get_slice(k).get_dtype() for k in names} == {"F16"}
    source = infer_cmd.embedded_source(tmp_path / "compact")  # what --model_dir loads
    assert source.lora is None
    loaded, _, _ = infer_cmd.build_model(source, None, torch.device("cpu"), torch.float32)
    assert not any("lora" in k for k in loaded.state_dict())
    inputs = tiny_inputs(seed=1)
    with torch.no_grad():
        want, got = model(**inputs), loaded(**inputs)
    for s in want:
        err = (got[s] - want[s]).abs().max() / want[s].abs().max()
        assert 0 < err < 2e-3, (s, float(err))  # rounded (so really float16), but only by rounding


def test_untrained_default_warns(monkeypatch, tmp_path):
    monkeypatch.setattr(infer_cmd, "ASSETS", tmp_path)
    with pytest.warns(UserWarning, match="UNTRAINED"):
        assert infer_cmd.embedded_source().kind == "untrained"


def test_guidance_runs_unconditional_pass(prepared_root, tmp_path, monkeypatch):
    """guidance 2 adds the negative-prompt pass: beside the conditional one in a forward of batch 2 (the
    default), or as a second forward per step (--no_batch_guidance); both give the same completion."""
    from panowan.models.dual_stream import DualStreamWan

    calls = []
    original = DualStreamWan.forward

    def counting(self, *a, **k):
        calls.append([t.abs().sum().item() for t in k["text"]])  # one entry per batch element
        return original(self, *a, **k)

    monkeypatch.setattr(DualStreamWan, "forward", counting)
    _infer(prepared_root, tmp_path / "g1", "--guidance_scale", "1")
    assert [len(c) for c in calls] == [1, 1]
    calls.clear()
    _infer(prepared_root, tmp_path / "g2", "--guidance_scale", "2")
    assert [len(c) for c in calls] == [2, 2]  # batched: 2 steps, each one forward of cond + uncond
    assert all(c[0] > 0 and c[1] == 0 for c in calls)  # the empty negative prompt encodes to zeros
    calls.clear()
    _infer(prepared_root, tmp_path / "g2s", "--guidance_scale", "2", "--no_batch_guidance")
    assert [len(c) for c in calls] == [1, 1, 1, 1] and sum(c[0] == 0 for c in calls) == 2
    for a in sorted((tmp_path / "g2").rglob("panorama_*_depth.npy")):
        b = np.load(tmp_path / "g2s" / a.relative_to(tmp_path / "g2"))
        np.testing.assert_allclose(np.load(a), b, rtol=1e-4, atol=1e-5)


def test_residual_decoding_gives_the_fill_back_where_the_latents_keep_it(prepared_root):
    """A model with condition fills whose final latents equal its conditions' own latents completes the holes
    with the fills at full resolution; plain decoding would blur them to the codec's blocks. A stream without a
    fill decodes as before."""
    from panowan.data.dataset import RoomDataset
    from panowan.models.codec import AnalyticCodec
    from panowan.models.conditioning import depth_to_video, frames_to_video
    from panowan.sample.pipeline import finish_completion

    sample = RoomDataset(prepared_root, num_frames=5, height=32, cond_fill="telea", cond_depth_fill="ns")[0]
    codec = AnalyticCodec(4)
    latents = {"rgb": codec.encode(frames_to_video(sample.cond_rgb[None]).double()),
               "depth": codec.encode(depth_to_video(frames_to_video(sample.cond_depth[None])).double())}  # fmt: skip
    want_rgb = (sample.cond_rgb.clamp(-1, 1) + 1) / 2
    want_depth = sample.depth_norm.denormalize(sample.cond_depth.double()).float()
    rgb_only = finish_completion(
        codec, latents, sample, composite=False, settings={}, filled=frozenset({"rgb"})
    )
    both = finish_completion(
        codec, latents, sample, composite=False, settings={}, filled=frozenset({"rgb", "depth"})
    )
    plain = finish_completion(codec, latents, sample, composite=False, settings={})
    torch.testing.assert_close(rgb_only.raw_rgb_F3HW, want_rgb, atol=1e-5, rtol=0)
    torch.testing.assert_close(both.raw_depth_m_F1HW, want_depth, atol=1e-4, rtol=1e-5)
    assert (plain.raw_rgb_F3HW - want_rgb).abs().mean() > 0.01
    assert (plain.raw_depth_m_F1HW - want_depth).abs().mean() > 0.01
    assert torch.equal(plain.raw_depth_m_F1HW, rgb_only.raw_depth_m_F1HW)
    assert torch.equal(both.raw_rgb_F3HW, rgb_only.raw_rgb_F3HW)


def test_exported_fill_and_sampling_are_what_infer_uses(prepared_root, tmp_path):
    """An export's rgb_condition_fill and recommended sampling reach `panowan infer`: the same weights with the
    Telea fill complete the holes differently and the known pixels identically; without flags the
    recommendation is used (completion.json), the flags override it; a bad recommendation is refused."""
    from panowan.data.io import read_mask, read_rgb
    from panowan.models.replicas import tiny_dual_stream

    model, _ = tiny_dual_stream(seed=3)
    filled, _ = tiny_dual_stream(seed=3, rgb_condition_fill="telea")
    filled.load_state_dict(model.state_dict())
    infer_cmd.export_embedded(model, {"resolution": 32, "num_frames": 5}, tmp_path / "zero", compact=False)
    infer_cmd.export_embedded(filled, {"resolution": 32, "num_frames": 5}, tmp_path / "telea", compact=False,
                              sampling={"num_inference_steps": 1, "sampler": "euler"})  # fmt: skip

    def run(name: str, model_dir: str, *flags: str):
        parser = argparse.ArgumentParser()
        infer_cmd.add_arguments(parser)
        args = parser.parse_args(["--data_root", str(prepared_root), "--output_dir", str(tmp_path / name),
                                  "--model_dir", str(tmp_path / model_dir), "--rooms", ROOM, *flags])  # fmt: skip
        room = infer_cmd.infer(args)[0]
        settings = json.loads((room / "completion.json").read_text())
        return room, (settings["steps"], settings["sampler"])

    zero, zero_settings = run("z", "zero", "--num_inference_steps", "1", "--sampler", "euler")
    telea, telea_settings = run("t", "telea")
    assert zero_settings == telea_settings == (1, "euler")
    assert run("t2", "telea", "--num_inference_steps", "2")[1] == (2, "euler")
    known = read_mask(prepared_root / ROOM / "input" / "pano0000_to_pano0001_mask.png") > 0.5
    a, b = (read_rgb(room / "panorama_0001.png") for room in (zero, telea))
    assert np.array_equal(a[known], b[known]) and not np.array_equal(a[~known], b[~known])
    meta = json.loads((tmp_path / "telea" / "default_model.json").read_text())
    meta["sampling"] = {"num_inference_steps": 0}
    (tmp_path / "telea" / "default_model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="bad sampling recommendation"):
        run("t3", "telea")


def test_pixel_decoders_run_in_inference_and_change_the_holes_only(prepared_root, tmp_path):
    """An exported model with pixel decoders completes rooms through them: with the decoders' output layers at
    zero the files equal the same weights' without decoders (the decoders start as the identity); with trained
    (here: perturbed) decoders the holes change and the known pixels do not; completion.json says so."""
    from panowan.data.io import read_mask, read_rgb
    from panowan.models.replicas import tiny_dual_stream

    plain, _ = tiny_dual_stream(seed=3)
    decoded, _ = tiny_dual_stream(seed=3, pixel_decoder_width=4)
    decoded.load_state_dict({**decoded.state_dict(), **plain.state_dict()})
    for name, m in (("plain", plain), ("fresh", decoded)):
        infer_cmd.export_embedded(m, {"resolution": 32, "num_frames": 5}, tmp_path / name, compact=False)
    with torch.no_grad():
        for decoder in decoded.pixel_decoders.values():
            decoder.out.weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
    infer_cmd.export_embedded(
        decoded, {"resolution": 32, "num_frames": 5}, tmp_path / "trained", compact=False
    )
    rooms = {n: _infer(prepared_root, tmp_path / f"out_{n}", "--model_dir", str(tmp_path / n), "--rooms", ROOM)[0]
             for n in ("plain", "fresh", "trained")}  # fmt: skip
    same = {k: v for k, v in _digests(rooms["plain"]).items() if k != "completion.json"}
    assert same == {k: v for k, v in _digests(rooms["fresh"]).items() if k != "completion.json"}
    assert json.loads((rooms["trained"] / "completion.json").read_text())["pixel_decoder"] is True
    assert json.loads((rooms["plain"] / "completion.json").read_text())["pixel_decoder"] is False
    known = read_mask(prepared_root / ROOM / "input" / "pano0000_to_pano0001_mask.png") > 0.5
    a, b = (read_rgb(rooms[n] / "panorama_0001.png") for n in ("plain", "trained"))
    assert np.array_equal(a[known], b[known]) and not np.array_equal(a[~known], b[~known])
