"""Hole consistency on analytic scenes with known answers; the harmonic baseline; the best classical fill."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "geometry"))
from analytic_scene import TARGETS, VIEW0, make_pose, render, shared_with

from panowan.eval.consistency import hole_consistency, pool, shared_holes
from panowan.geometry.pose import Pose, yaw_matrix

H, W = 32, 64
SHIFT = 3  # view j is view i turned by SHIFT whole pixels: j's pixel u sees what i's pixel u - SHIFT sees


@pytest.fixture(scope="module")
def turned_pair():
    """Two views from one centre, the second turned by SHIFT pixels (reprojection between them is exact), with
    rectangular holes: i's rows 5-9 x columns 10-19, j's rows 7-12 x columns 12-25."""
    pose_i = make_pose((0.5, 0.0, 0.5), 0.3)
    pose_j = Pose(yaw_matrix(2 * math.pi * SHIFT / W) @ pose_i.rotation, pose_i.position)
    ri, rj = render(pose_i, H, W), render(pose_j, H, W)
    known = torch.ones(2, H, W, dtype=torch.bool)
    known[0, 5:10, 10:20] = False
    known[1, 7:13, 12:26] = False
    rgb = torch.stack([ri.image_3HW, rj.image_3HW])
    rng = torch.stack([ri.range_HW, rj.range_HW])[:, None].float()
    return rgb, rng, rng.double(), known, [pose_i, pose_j]


def test_counted_pixels_are_the_hand_computed_intersection(turned_pair):
    """S_ij (in j) = j's holes & i's holes moved SHIFT columns right: rows 7-9 x columns 13-22; S_ji (in i) = i's
    holes & j's moved SHIFT left: rows 7-9 x columns 10-19. 30 + 30 pixels."""
    rgb, rng, gt, known, poses = turned_pair
    s_ij = shared_holes(gt[0, 0], known[0], poses[0], gt[1, 0], known[1], poses[1])
    s_ji = shared_holes(gt[1, 0], known[1], poses[1], gt[0, 0], known[0], poses[0])
    expected_ij, expected_ji = torch.zeros(H, W, dtype=torch.bool), torch.zeros(H, W, dtype=torch.bool)
    expected_ij[7:10, 13:23] = True
    expected_ji[7:10, 10:20] = True
    assert torch.equal(s_ij, expected_ij) and torch.equal(s_ji, expected_ji)
    assert hole_consistency(rgb, rng, gt, known, poses)["pixels"] == 60


def test_completions_equal_to_the_truth_agree(turned_pair):
    rgb, rng, gt, known, poses = turned_pair
    out = hole_consistency(rgb, rng, gt, known, poses)
    assert out["pixels"] == 60 and out["coverage"] == 1.0
    assert out["rgb_l1"] == pytest.approx(0, abs=1e-5)
    assert out["depth_rel"] == pytest.approx(0, abs=1e-6)
    assert out["psnr"] > 90


def test_an_offset_in_the_holes_of_one_view_costs_exactly_the_offset(turned_pair):
    """View j's completion is off by c in colour and by a factor 1 + e in depth in its holes only. Into j,
    i's (true) completion meets j's: |diff| = c, depth error e / (1 + e); into i, j's (off) completion meets i's
    true one: c and e. Over 30 + 30 pixels: L1 = c, depth error (e / (1 + e) + e) / 2."""
    rgb, rng, gt, known, poses = turned_pair
    c, e = 0.03, 0.2
    hole_j = ~known[1]
    rgb_off, rng_off = rgb.clone(), rng.clone()
    rgb_off[1][:, hole_j] += c
    rng_off[1, 0][hole_j] *= 1 + e
    out = hole_consistency(rgb_off, rng_off, gt, known, poses)
    assert out["pixels"] == 60  # the set is the ground truth's: a bad completed depth does not move it
    assert out["rgb_l1"] == pytest.approx(c, abs=1e-5)
    assert out["psnr"] == pytest.approx(10 * math.log10(1 / c**2), abs=1e-3)
    assert out["depth_rel"] == pytest.approx((e / (1 + e) + e) / 2, abs=1e-5)
    assert out["coverage"] == 1.0


def test_no_shared_hole_gives_none(turned_pair):
    rgb, rng, gt, known, poses = turned_pair
    apart = torch.ones_like(known)
    apart[0, 5:10, 10:20] = False
    apart[1, 20:25, 40:50] = False  # j's hole sees nothing i had to fill
    out = hole_consistency(rgb, rng, gt, apart, poses)
    assert out == {k: None for k in out if k != "pixels"} | {"pixels": 0}
    one = torch.ones_like(known)
    one[0, 5:10, 10:20] = False  # a single view with holes: no pair at all
    assert hole_consistency(rgb, rng, gt, one, poses)["rgb_l1"] is None
    assert pool([out, out])["pixels"] == 0 and pool([out])["psnr"] is None


def test_translated_views_in_the_holes_view_0_does_not_see():
    """The four target views of the analytic room, holes = what view 0 does not see: the ground-truth
    completions agree closely (reprojection is not exact between translated views), every counted pixel is one
    that the other view truly sees, and a bad completed depth leaves the count unchanged."""
    h, w = 64, 128
    renders = [render(t, h, w) for t in TARGETS]
    poses = list(TARGETS)
    known = torch.stack([shared_with(r, VIEW0) for r in renders])
    rgb = torch.stack([r.image_3HW for r in renders])
    gt = torch.stack([r.range_HW for r in renders])[:, None]
    out = hole_consistency(rgb, gt.float(), gt, known, poses)
    assert out["pixels"] >= 40 and out["coverage"] > 0.9
    assert out["rgb_l1"] < 0.03 and out["depth_rel"] < 0.01
    for i, j in ((0, 2), (0, 3), (3, 1)):
        s_ij = shared_holes(gt[i, 0], known[i], poses[i], gt[j, 0], known[j], poses[j])
        assert s_ij.any() and not (s_ij & ~shared_with(renders[j], poses[i])).any()
    bad = gt.float().clone()
    bad[1, 0][~known[1]] *= 1.5
    worse = hole_consistency(rgb, bad, gt, known, poses)
    assert worse["pixels"] == out["pixels"]
    assert worse["depth_rel"] > 0.05


def test_pool_weights_rooms_by_pixels():
    a = {"rgb_l1": 0.1, "psnr": 20.0, "depth_rel": 0.2, "coverage": 1.0, "pixels": 10, "rgb_mse": 0.01}
    b = {"rgb_l1": 0.4, "psnr": 10.0, "depth_rel": 0.5, "coverage": 0.5, "pixels": 30, "rgb_mse": 0.1}
    out = pool([a, b])
    assert out["pixels"] == 40
    assert out["rgb_l1"] == pytest.approx(0.325) and out["depth_rel"] == pytest.approx(0.425)
    assert out["psnr"] == pytest.approx(10 * math.log10(1 / 0.0775))
    assert out["coverage"] == pytest.approx(0.625)


# ------------------------------------------------------------------------------ the harmonic baseline
def test_harmonic_baseline_runs_and_is_evaluated(prepared_root, tmp_path):
    from panowan.eval.baselines import BASELINES, CLASSICAL_FILLS, run_baseline
    from panowan.eval.metrics import INPAINTING_BASELINES, PSNR_CAP, evaluate_dir

    assert "harmonic" in BASELINES and INPAINTING_BASELINES == CLASSICAL_FILLS == (
        "telea",
        "ns",
        "harmonic",
        "depth_steered",
        "room_shell",
    )
    run_baseline(prepared_root, tmp_path / "harmonic", "harmonic")
    res = evaluate_dir(tmp_path / "harmonic", prepared_root)
    hole = res["mean"]["hole"]
    assert math.isfinite(hole["psnr"]) and hole["psnr"] < PSNR_CAP
    assert 0 < hole["absrel"] < 1
    room = next(iter(res["rooms"].values()))
    assert set(room["hole_consistency"]) == {"rgb_l1", "psnr", "depth_rel", "coverage", "pixels", "rgb_mse"}
    assert res["mean"]["hole_consistency"]["pixels"] == room["hole_consistency"]["pixels"]


def test_bare_baselines_flag_means_every_baseline():
    from panowan.cli import build_parser
    from panowan.commands.eval import selected_baselines

    def chosen(*flags: str) -> list[str]:
        return selected_baselines(
            build_parser().parse_args(["eval", "--pred_dir", "p", "--data_root", "d", *flags]).baselines
        )

    every = ["telea", "ns", "harmonic", "depth_steered", "room_shell", "shell_gate", "copy"]
    assert chosen("--baselines") == every
    assert chosen() == [] and chosen("--baselines", "ns") == ["ns"]
    assert build_parser().parse_args(["demo"]).baselines == every


# ------------------------------------------------------------------------- the best classical fill
def _result(psnr, absrel, l1):
    mean = {"hole": {"psnr": psnr, "absrel": absrel}, "hole_consistency": {"rgb_l1": l1}}
    return {"mean": mean, "rooms": {}}


def test_best_classical_per_metric(tmp_path):
    from panowan.commands.eval import write_results
    from panowan.eval.summary import best_classical, markdown_table

    methods = {"model": _result(18.2, 0.10, 0.02), "telea": _result(18.1, 0.20, 0.05),
               "ns": _result(17.0, 0.16, None), "harmonic": _result(18.0, 0.08, 0.04),
               "copy": _result(5.0, 1.0, 0.0)}  # fmt: skip
    best = best_classical(methods)
    assert set(best) == {"hole_psnr", "hole_absrel", "hole_consistency_rgb_l1"}  # SSIM: nobody has it
    assert best["hole_psnr"] == pytest.approx({"method": "telea", "value": 18.1, "model": 18.2,
                                               "higher_is_better": True, "margin": 0.1, "better": True})  # fmt: skip
    assert best["hole_absrel"] == pytest.approx({"method": "harmonic", "value": 0.08, "model": 0.10,
                                                 "higher_is_better": False, "margin": -0.02, "better": False,
                                                 "ratio": 1.25})  # fmt: skip
    l1 = best["hole_consistency_rgb_l1"]  # copy (0.0) is no contender; ns has no value
    assert (l1["method"], l1["better"], l1["ratio"]) == ("harmonic", True, 0.5)
    assert l1["margin"] == pytest.approx(0.02)
    table = markdown_table(methods)
    assert "- hole depth AbsRel: model 0.1, best classical fill 0.08 (harmonic): the model is worse by 0.02 " \
           "(model / best = 1.25)" in table  # fmt: skip
    assert "- hole cross-view RGB L1: model 0.02, best classical fill 0.04 (harmonic): the model is better by " \
           "0.02 (model / best = 0.5)" in table  # fmt: skip
    json_path, _ = write_results(methods, tmp_path / "m.json")
    written = json.loads(json_path.read_text())
    assert written["model"]["best_classical"] == best
    assert "best_classical" not in methods["model"]  # the caller's results are left alone
    assert best_classical({"model": methods["model"], "copy": methods["copy"]}) == {}
