"""The model shipped in panowan/assets, on unseen rooms: what README and BENCHMARKS claim for it still holds."""

from __future__ import annotations

import json

import pytest


def test_shipped_model_metadata():
    """Under 20 MB, with the Telea-filled RGB and Navier-Stokes-filled depth conditions, a valid sampling
    recommendation, a depth refiner, and every run of its chain (and the refiner's fit) recorded with the commands
    that repeat it."""
    from panowan.commands import infer as infer_cmd

    source = infer_cmd.embedded_source()
    assert source.kind == "embedded"
    assert source.weights.stat().st_size < 20 * 2**20
    assert source.model_config.condition_fills() == {"rgb": "telea", "depth": "ns"}
    assert source.sampling["num_inference_steps"] >= 1 and source.sampling["sampler"] in ("unipc", "euler")
    assert source.model_config.depth_refiner_width == 16
    fit = source.train_config["depth_refiner"]
    assert {"command", "data_commands", "config", "eval", "ran_as"} <= set(fit)
    assert fit["eval"]["hole_absrel_refined"] < fit["eval"]["hole_absrel_fill"]
    run, resolutions = source.train_config, []
    while run:
        assert {"data_commands", "train_command", "recipe", "synth_seeds"} <= set(run)
        resolutions.append(run["resolution"])
        run = run.get("init_from")
    assert resolutions == [256, 256, 256, 256, 64]


@pytest.mark.slow
def test_shipped_model_beats_opencv_in_the_holes(tmp_path):
    """`panowan demo` (3 rooms of the demo seed, the model's recommended sampling): hole RGB PSNR above both
    OpenCV inpaintings' and hole depth AbsRel below both (BENCHMARKS.md: 8 rooms, three seeds). Measured on these
    rooms: 18.84 dB against 18.63 / 18.47, AbsRel 0.142 against 0.182 / 0.179 (Telea / Navier-Stokes)."""
    from panowan.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--baselines", "telea", "ns"]) == 0
    results = json.loads((out / "metrics.json").read_text())
    model = results["model"]["mean"]["hole"]
    for name in ("telea", "ns"):
        classical = results[name]["mean"]["hole"]
        assert model["psnr"] > classical["psnr"] + 0.05, (name, model["psnr"], classical["psnr"])
        assert model["absrel"] < classical["absrel"] - 0.01, (name, model["absrel"], classical["absrel"])
    settings = json.loads((out / "completions" / "area_000" / "room_0000" / "completion.json").read_text())
    assert (settings["steps"], settings["sampler"]) == (2, "euler")
    assert (settings["rgb_condition_fill"], settings["depth_condition_fill"]) == ("telea", "ns")
    assert settings["depth_refiner"] is True
