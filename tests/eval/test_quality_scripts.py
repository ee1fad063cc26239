"""The quality benchmark's and the ablation's summaries (benchmarks/bench_quality.py, benchmarks/ablation.py): the
item-4 checks follow the measured margins, the ablation table is the mean and spread over seeds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checks_follow_the_margins():
    checks = _load("bench_quality").checks
    best = {"hole_psnr": {"margin": 1.6}, "hole_ssim": {"margin": -0.01}, "hole_absrel": {"margin": 0.05, "ratio": 0.7},
            "hole_consistency_rgb_l1": {"margin": 0.01}}  # fmt: skip
    got = checks("hard", best)
    assert got["hole_psnr_best_plus_1.5dB"] is True and got["hole_ssim_above_best"] is False
    assert (
        got["hole_absrel_le_0.6x_best"] is False
        and got["hole_consistency_rgb_l1_better_than_every_fill"] is True
    )
    assert (
        got["hole_consistency_depth_rel_better_than_every_fill"] is None
    )  # not measured: neither true nor false
    easy = checks("easy", {"hole_psnr": {"margin": -0.2}, "hole_absrel": {"margin": 0.0}})
    assert easy == {"easy_no_worse_than_best_fill_psnr": False, "easy_no_worse_than_best_fill_absrel": True}


def test_ablation_table_is_mean_and_spread_over_seeds():
    ablation = _load("ablation")
    records = [
        {"variant": "full", "seed": s, "metrics": {"hole": {"psnr": p}}} for s, p in ((0, 18.0), (1, 19.0))
    ]
    records.append({"variant": "none", "seed": 0, "eval_error": "infer failed"})
    table = ablation.summarise(records, ["full", "none"])
    assert table["full"]["seeds"] == 2
    assert table["full"]["hole/psnr"] == pytest.approx({"mean": 18.5, "spread": 0.5})
    assert table["none"] == {"seeds": 0}
    assert set(ablation.VARIANTS) == {"full", "no-cross", "no-pose", "none", "alone"}
    assert ablation.VARIANTS["alone"][-2:] == ["--max_grad_norm", "0"]


def test_learned_fill_probe_keeps_known_pixels_and_starts_as_its_fill(prepared_root, tmp_path):
    """benchmarks/learned_fill_probe.py: the fresh U-Net (zero output layer) writes exactly the classical fill
    it corrects; a few training steps change the holes only (the known pixels are the condition's, in metres)."""
    import numpy as np

    from panowan.data.io import read_depth
    from panowan.data.layout import scan_rooms

    probe = _load("learned_fill_probe")
    common = ["--eval_root", str(prepared_root), "--width", "4", "--levels", "2", "--workers", "1"]
    fresh = probe.main(
        [*common, "--train_root", str(prepared_root), "--out", str(tmp_path / "fresh"), "--steps", "0"]
    )
    trained = probe.main([*common, "--train_root", str(prepared_root), "--out", str(tmp_path / "trained"),
                          "--steps", "3", "--batch", "2", "--lr", "1e-2"])  # fmt: skip
    assert fresh["steps"] == 0 and trained["steps"] == 3 and fresh["completed_views"] == 4
    room = scan_rooms(prepared_root)[0]
    views = {int(v["view"]): v for v in probe.room_views(str(room), "depth_steered", with_truth=False)}
    rid = f"{room.parent.name}/{room.name}"
    moved = 0.0
    for view, v in views.items():
        stem = f"panorama_{view:04d}_depth.npy"
        size = v["depth"].shape
        d_fresh = read_depth(tmp_path / "fresh" / "pred" / rid / stem, size, room)
        d_trained = read_depth(tmp_path / "trained" / "pred" / rid / stem, size, room)
        np.testing.assert_allclose(d_fresh, v["depth"], rtol=1e-5)  # the fill, through log and exp
        np.testing.assert_array_equal(d_trained[v["known"]], v["depth"][v["known"]])
        moved += float(np.abs(d_trained - d_fresh)[~v["known"]].sum())
    assert moved > 0


def test_hole_oracles_rebuild_the_scenes_and_refuse_another_seed(tmp_path):
    import json

    import numpy as np

    from panowan.data.prepare import prepare_rooms
    from panowan.data.synth import synth_rooms

    synth_rooms(tmp_path, 2, 5, 32, 64, seed=7, difficulty="hard", stats=True)
    assert not prepare_rooms(tmp_path, progress=False).failed
    oracles = _load("hole_oracles")
    result = oracles.main(["--data_root", str(tmp_path), "--json", str(tmp_path / "o.json")])
    assert result["views"] == len(result["rows"]) > 0
    for row in result["rows"]:
        parts = row["on_shell"] + row["on_object_seen_by_view0"] + row["on_object_unseen_by_view0"]
        assert parts == pytest.approx(1.0) and min(row["on_shell"], row["on_object_unseen_by_view0"]) >= -1e-9
        assert all(np.isfinite(row[m]) for m in oracles.METHODS)
    stats = json.loads((tmp_path / "synth_stats.json").read_text())
    (tmp_path / "synth_stats.json").write_text(json.dumps({**stats, "seed": 8}))
    with pytest.raises(ValueError, match="not the scene"):
        oracles.main(["--data_root", str(tmp_path)])


def test_hole_oracles_sample_view0_returns_view0_at_its_own_points():
    """The see-through oracle reads view 0's render where view 0 sees a point: at view 0's own surface points it
    must give back view 0's pixels (ERP convention and bilinear weights, round trip)."""
    import numpy as np

    from panowan.data.synth import cast_rays, make_scene
    from panowan.geometry.erp import erp_directions_N3

    oracles = _load("hole_oracles")
    scene = make_scene(11, 3, "hard")
    image = oracles.empty_room_view0(scene, 32, 64)
    rays = erp_directions_N3(32, 64) @ scene.poses[0].rotation.double().numpy()
    origin = scene.poses[0].position.double().numpy()
    t, _, _ = cast_rays(scene, origin, rays, objects=False)
    sampled = oracles.sample_view0(image, origin + t[:, None] * rays, scene.poses[0])
    assert np.abs(sampled - image.reshape(-1, 3)).max() < 1e-6
    shifted = oracles.sample_view0(
        image, origin + t[:, None] * np.roll(rays.reshape(32, 64, 3), 1, 1).reshape(-1, 3), scene.poses[0]
    )
    assert np.abs(shifted - np.roll(image, 1, 1).reshape(-1, 3)).max() < 1e-6


def test_learned_gate_probe_reproduces_the_room_shell_fill_and_trains(tmp_path):
    """The gate's training pixels hold the room-shell fill itself (its two candidates recombined with the fill's own
    weight, and its range); the probe trains, saves a gate and gives finite results, the better candidate per pixel
    above the harmonic fill."""
    import numpy as np

    from panowan.data.dataset import validate_room
    from panowan.data.layout import scan_rooms
    from panowan.data.prepare import prepare_rooms
    from panowan.data.room_shell import fit_room, room_shell_fill
    from panowan.data.shell_gate import feature_count, load_shell_gate
    from panowan.data.synth import synth_rooms
    from panowan.eval.baselines import read_condition
    from panowan.train.shell_gate import view_hole_pixels

    synth_rooms(tmp_path, 2, 4, 32, 64, seed=5, difficulty="hard", stats=True)
    assert not prepare_rooms(tmp_path, progress=False).failed
    probe = _load("learned_gate_probe")
    info = validate_room(next(iter(scan_rooms(tmp_path))))
    shell = fit_room(info)
    view = next(v for v in info.views[1:] if not read_condition(info, v)[2].all())
    row = view_hole_pixels(info, shell, view, ("S", "H", "F", "D"), context=True)
    rgb, rng, known = read_condition(info, view)
    filled, depth = room_shell_fill(
        rgb, np.where(known, rng, 0.0), known, info.poses[info.views.index(view)], shell
    )
    assert np.abs(np.round(row["room_shell"]) - filled[~known]).max() <= 1
    np.testing.assert_allclose(row["room_shell_range"], depth[~known], rtol=1e-6)
    assert row["f"].shape == (int((~known).sum()), feature_count(4, True)) and np.isfinite(row["f"]).all()
    args = ["--train_root", str(tmp_path), "--eval_roots", str(tmp_path), "--steps", "30", "--workers", "1"]
    result = probe.main([*args, "--candidates", "S", "H", "F", "--context", "--save", str(tmp_path / "g.st")])
    assert load_shell_gate(tmp_path / "g.st")[1]["held_out"] == result["held_out"]
    for scores in (result["train"], *result["held_out"].values()):
        assert all(np.isfinite(v) for v in scores.values())
        assert scores["best_candidate"] >= scores["harmonic"] - 1e-9  # the better candidate per pixel


def test_cnn_gate_probe_starts_as_the_embedded_gate(tmp_path):
    """Before a step the U-Net's output is zero, so its gate is the embedded gate exactly; its room-shell row is
    the fill's own (the learned gate probe's)."""
    import numpy as np

    from panowan.data.prepare import prepare_rooms
    from panowan.data.synth import synth_rooms

    synth_rooms(tmp_path, 2, 5, 32, 64, seed=5, difficulty="hard", stats=True)
    assert not prepare_rooms(tmp_path, progress=False).failed
    args = ["--train_root", str(tmp_path), "--eval_roots", str(tmp_path), "--workers", "1", "--levels", "2"]
    result = _load("cnn_gate_probe").main([*args, "--max_steps", "0"])
    scores = result["held_out"][str(tmp_path)]
    assert result["steps"] == 0 and all(np.isfinite(v) for v in scores.values())
    assert scores["cnn_gate"] == scores["shell_gate"]
    assert scores["range_absrel_cnn_gate"] == scores["range_absrel_shell_gate"]
    from panowan.data.shell_gate import EMBEDDED_GATE

    mlp = _load("learned_gate_probe").main(
        ["--eval_roots", str(tmp_path), "--gate", str(EMBEDDED_GATE), "--workers", "1"]
    )
    assert abs(mlp["held_out"][str(tmp_path)]["room_shell"] - scores["room_shell"]) < 0.05  # float16 maps
    assert _load("cnn_gate_probe").main([*args, "--max_steps", "2"])["steps"] == 2
