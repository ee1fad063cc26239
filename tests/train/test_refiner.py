"""Fitting the depth refiner: it learns, deterministically; its examples are what the sampler feeds it; the
script exports a model that `panowan infer` runs with and without its refiner."""

from __future__ import annotations

import argparse
import json
import runpy
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from panowan.commands import infer as infer_cmd
from panowan.models.refiner import DepthRefiner
from panowan.train.refiner import (
    RefinerConfig,
    RefinerExamples,
    collect_examples,
    evaluate_refiner,
    fit_refiner,
    hole_log_l1,
)

ROOM = "area_000/room_0000"
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_depth_refiner.py"


def _biased_examples(n: int = 12, bias: float = 0.3) -> RefinerExamples:
    """The model's depth is right where known and `bias` too near in the holes (as an inpainting that
    blends the occluder into the background is)."""
    g = torch.Generator().manual_seed(0)
    truth = torch.nn.functional.interpolate(
        torch.rand(n, 1, 4, 8, generator=g), size=(16, 32), mode="bilinear"
    )
    truth = truth - 0.5
    mask = (
        (torch.rand(n, 1, 4, 8, generator=g) > 0.5).float().repeat_interleave(4, -2).repeat_interleave(4, -1)
    )
    model = torch.where(mask.bool(), truth, truth - bias)
    rgb = torch.rand(n, 3, 16, 32, generator=g) * 2 - 1
    return RefinerExamples(
        inputs_NCHW=torch.cat([model, model, mask, rgb], dim=1),
        target_N1HW=truth,
        valid_N1HW=torch.ones(n, 1, 16, 32, dtype=torch.bool),
        center_N=torch.full((n,), 1.0),
        half_range_N=torch.full((n,), 1.0),
    )


def test_refiner_config_refuses_bad_values():
    with pytest.raises(ValueError, match="steps"):
        RefinerConfig(steps=0)
    with pytest.raises(ValueError, match="lr"):
        RefinerConfig(lr=0)


def test_fit_learns_the_hole_bias_deterministically():
    examples = _biased_examples()
    config = RefinerConfig(width=4, steps=120, batch=4, lr=1e-2)
    refiner, losses = fit_refiner(examples, config, progress=False)
    x = examples.inputs_NCHW
    with torch.no_grad():
        before = hole_log_l1(x[:, :1], examples)
        after = hole_log_l1(refiner(x), examples)
    assert abs(float(before) - 0.3) < 1e-5
    assert float(after) < 0.1, float(after)
    assert len(losses) == 120 and np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    scores = evaluate_refiner(refiner, examples)
    assert scores["hole_absrel_refined"] < 0.5 * scores["hole_absrel_model"]
    again, _ = fit_refiner(examples, config, progress=False)
    for a, b in zip(refiner.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_hole_log_l1_counts_valid_hole_pixels_only():
    examples = _biased_examples(n=2)
    examples.valid_N1HW[0] = False  # view 0 has no ground truth: it must not count
    x = examples.inputs_NCHW
    pred = x[:, :1].clone()
    pred[0] += 5  # wrong everywhere in the view without ground truth
    pred[1][x[1, 2:3] > 0.5] += 5  # wrong only where view 1 is known
    assert abs(float(hole_log_l1(pred, examples)) - 0.3) < 1e-5


@pytest.fixture(scope="module")
def tiny_model():
    from panowan.models.codec import build_codec
    from panowan.models.encoders import build_encoder
    from panowan.models.replicas import tiny_dual_stream

    model, config = tiny_dual_stream(seed=3, rgb_condition_fill="telea", depth_condition_fill="ns")
    return model.eval().requires_grad_(False), build_codec(config), build_encoder(config)


def test_examples_are_what_the_sampler_feeds_the_refiner(prepared_root, tiny_model):
    """Examples hold the raw completion of views 1.. in normalised space; a refiner given them computes exactly
    the depth `complete_room` writes when the model carries that refiner."""
    from panowan.sample.pipeline import complete_room

    model, codec, encoder = tiny_model
    dataset, _ = infer_cmd.open_rooms(str(prepared_root), None, 5, 32, 0, model.config.condition_fills())
    sampling = {"steps": 2, "sampler": "euler", "flow_shift": 3.0}
    examples = collect_examples(model, codec, encoder, dataset, epochs=2, sampling=sampling, progress=False)
    assert examples.inputs_NCHW.shape == (2 * 4, 6, 32, 64)
    sample = dataset.sample(0, 1)
    assert torch.equal(examples.inputs_NCHW[4:, 2:3], sample.mask[1:])
    assert torch.equal(examples.target_N1HW[4:], sample.depth[1:])
    refiner = DepthRefiner(4)
    with torch.no_grad():
        refiner.out.weight.normal_(0, 0.3)
    model.attach_depth_refiner(refiner)
    try:
        refined = complete_room(
            model, codec, encoder, sample, seed=1, composite=False, progress=False, **sampling
        )
    finally:
        model.attach_depth_refiner(None)
    x = examples.inputs_NCHW[4:]
    with torch.no_grad():
        want = refiner(x).clamp(-1, 1)
    got = sample.depth_norm.normalize(refined.raw_depth_m_F1HW[1:].double()).float()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert refined.settings["depth_refiner"] is True


def _export_tiny(folder: Path, refiner: DepthRefiner | None = None) -> None:
    from panowan.models.replicas import tiny_dual_stream

    model, _ = tiny_dual_stream(seed=3, rgb_condition_fill="telea", depth_condition_fill="ns")
    model.attach_depth_refiner(refiner)
    infer_cmd.export_embedded(model, {"resolution": 32, "num_frames": 5}, folder, compact=False,
                              sampling={"num_inference_steps": 1, "sampler": "euler"})  # fmt: skip


def _infer(prepared_root, model_dir: Path, out: Path, *flags: str) -> dict:
    parser = argparse.ArgumentParser()
    infer_cmd.add_arguments(parser)
    args = parser.parse_args(["--data_root", str(prepared_root), "--output_dir", str(out), "--model_dir",
                              str(model_dir), "--rooms", ROOM, *flags])  # fmt: skip
    room = infer_cmd.infer(args)[0]
    settings = json.loads((room / "completion.json").read_text())
    return {"settings": settings, "depth": np.load(room / "panorama_0001_depth.npy")}


def test_infer_runs_the_exported_refiner_unless_told_not_to(prepared_root, tmp_path):
    from panowan.data.io import read_mask

    refiner = DepthRefiner(4)
    with torch.no_grad():
        refiner.out.bias.fill_(0.2)  # 0.2 normalised units farther in every hole
    _export_tiny(tmp_path / "m", refiner)
    on = _infer(prepared_root, tmp_path / "m", tmp_path / "on")
    off = _infer(prepared_root, tmp_path / "m", tmp_path / "off", "--no_refiner")
    assert (on["settings"]["depth_refiner"], off["settings"]["depth_refiner"]) == (True, False)
    known = read_mask(prepared_root / ROOM / "input" / "pano0000_to_pano0001_mask.png") > 0.5
    assert np.array_equal(on["depth"][known], off["depth"][known])
    assert (on["depth"][~known] > off["depth"][~known]).mean() > 0.9  # clamping may hold a few back
    _export_tiny(tmp_path / "plain")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _infer(prepared_root, tmp_path / "plain", tmp_path / "plain_out", "--no_refiner")
    assert any("no depth refiner; --no_refiner is ignored" in str(w.message) for w in caught)


def test_script_exports_the_model_with_its_fitted_refiner(prepared_root, tmp_path, monkeypatch):
    _export_tiny(tmp_path / "base")
    argv = [str(SCRIPT), "--model_dir", str(tmp_path / "base"), "--data", str(prepared_root), "--eval_data",
            str(prepared_root), "--out", str(tmp_path / "out"), "--width", "2", "--steps", "3", "--batch", "2",
            "--epochs", "1", "--device", "cpu"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    source = infer_cmd.embedded_source(tmp_path / "out")
    assert source.model_config.depth_refiner_width == 2 and source.description.endswith(
        "with its depth refiner"
    )
    record = source.train_config["depth_refiner"]
    assert record["config"]["steps"] == 3 and record["views"] == 4 and record["sampling"]["steps"] == 1
    assert {"hole_absrel_fill", "hole_absrel_model", "hole_absrel_refined"} <= set(record["eval"])
    assert source.train_config["resolution"] == 32  # the diffusion model's record is kept
    model, _, _ = infer_cmd.build_model(source, None, torch.device("cpu"), torch.float32)
    assert model.depth_refiner is not None and model.depth_refiner.width == 2
