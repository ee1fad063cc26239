"""The learned shell gate (`panowan.data.shell_gate`, trained by `panowan.train.shell_gate`): its window features
against a naive loop, a one-hot gate returning its candidate, the saved file, training, and its use as a baseline
and as a condition fill."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panowan.data import room_shell as rs
from panowan.data import shell_gate as sg

H, W = 64, 128


@pytest.fixture(scope="module")
def hard_rooms(tmp_path_factory):
    from panowan.data.prepare import prepare_rooms
    from panowan.data.synth import synth_rooms

    root = tmp_path_factory.mktemp("gate_rooms")
    synth_rooms(root, 2, 5, H, W, seed=5, difficulty="hard", stats=True)
    assert not prepare_rooms(root, progress=False).failed
    return root


@pytest.fixture(scope="module")
def one_view(hard_rooms):
    """(info, shell, view, rgb, range with 0 at unknown pixels, known) of a target view with a hole."""
    from panowan.data.dataset import validate_room
    from panowan.data.layout import scan_rooms
    from panowan.eval.baselines import read_condition

    info = validate_room(next(iter(scan_rooms(hard_rooms))))
    shell = rs.fit_room(info)
    view = next(v for v in info.views[1:] if not read_condition(info, v)[2].all())
    rgb, rng, known = read_condition(info, view)
    return info, shell, view, rgb, np.where(known, rng, 0.0), known


def test_window_mean_is_the_naive_window_on_the_sphere():
    """Wrapping in longitude, mirrored (without repeating the edge row) at the poles, for a radius above the
    height too."""
    a = np.random.default_rng(0).random((6, 10, 2))
    for r in (1, 3, 8):
        naive = np.zeros_like(a)
        for i in range(6):
            for j in range(10):
                rows = [_mirror(x, 6) for x in range(i - r, i + r + 1)]
                cols = [(j + d) % 10 for d in range(-r, r + 1)]
                naive[i, j] = a[np.ix_(rows, cols)].mean((0, 1))
        np.testing.assert_allclose(sg.window_mean(a, r), naive, atol=1e-6)


def _mirror(i: int, n: int) -> int:
    """numpy's "reflect" index: ... 2 1 | 0 1 ... n-1 | n-2 ..., repeated."""
    period = 2 * (n - 1)
    i %= period
    return i if i < n else period - i


def test_a_one_hot_gate_returns_its_candidate_and_keeps_known_pixels(one_view):
    info, shell, view, rgb, rng, known = one_view
    pose = info.poses[info.views.index(view)]
    gate = sg.ShellGate(("S", "H", "F", "D"), context=True, width=8)
    with torch.no_grad():  # the last layers' bias alone: candidate 1 (H) and range candidate 1 (steered)
        for head in (gate.rgb_head, gate.range_head):
            head[-1].weight.zero_()
            head[-1].bias.fill_(-50.0)
            head[-1].bias[1] = 50.0
    out_rgb, out_range = sg.shell_gate_fill(rgb, rng, known, pose, shell, gate)
    x = sg.gate_inputs(rgb, rng, known, pose, shell, ("S", "H", "F", "D"), True)
    assert x.features_HWF.shape == (H, W, sg.feature_count(4, True)) and np.isfinite(x.features_HWF).all()
    hole = ~known
    assert out_rgb.dtype == np.uint8 and out_range.dtype == np.float32
    np.testing.assert_array_equal(out_rgb[known], rgb[known])
    np.testing.assert_array_equal(out_range[known], rng[known].astype(np.float32))
    harmonic = np.clip(np.rint(x.sv.harmonic), 0, 255)
    np.testing.assert_array_equal(out_rgb[hole], harmonic[hole])
    np.testing.assert_allclose(out_range[hole], x.sv.steered[hole], rtol=1e-6)


def test_saved_gate_reads_back_equal_and_bad_files_are_refused(tmp_path):
    gate = sg.ShellGate(("S", "H", "D"), context=False, width=8)
    f = torch.randn(5, sg.feature_count(3, False))
    gate.save(tmp_path / "g.safetensors", {"command": "x"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "g.safetensors"
    ]  # written, then renamed: no leftover
    back, record = sg.load_shell_gate(tmp_path / "g.safetensors")
    assert tuple(back.config.candidates) == ("S", "H", "D") and record == {"command": "x"}
    for a, b in zip(gate(f), back(f), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    (tmp_path / "bad.safetensors").write_bytes(b"not a gate")
    with pytest.raises(ValueError, match=r"bad\.safetensors: not a shell-gate file"):
        sg.load_shell_gate(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="no such shell-gate file"):
        sg.load_shell_gate(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="S and H first"):
        sg.ShellGate(("H", "S"))


def test_embedded_gate_loads_with_its_training_record():
    gate, record = sg.load_shell_gate()
    assert set(gate.config.candidates) <= set(sg.CANDIDATES) and "command" in record
    assert gate.mean.numel() == sg.feature_count(len(gate.config.candidates), gate.config.context)


def test_training_is_deterministic_and_fits_its_rooms(hard_rooms):
    from panowan.train.shell_gate import data_root_hole_pixels, fit_shell_gate

    views = data_root_hole_pixels(hard_rooms, ("S", "H", "F"), context=True, pixels=500)
    assert views and all(len(v["f"]) <= 500 for v in views)
    a, b = (
        fit_shell_gate(views, ("S", "H", "F"), True, steps=60, width=8, batch=512, seed=1) for _ in range(2)
    )
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)

    def rgb_error(gate):
        with torch.no_grad():
            q = [gate(torch.from_numpy(v["f"]))[0].numpy() for v in views]
        return np.mean([(((qi[..., None] * v["C"]).sum(1) - v["gt"]) ** 2).mean() for qi, v in zip(q, views)])

    untrained = sg.ShellGate(("S", "H", "F"), True, 8)
    untrained.mean.copy_(a.mean)
    untrained.std.copy_(a.std)
    assert rgb_error(a) < rgb_error(untrained)
    with pytest.raises(ValueError, match="do not match"):
        fit_shell_gate(views, ("S", "H"), False, steps=1)


def test_shell_gate_baseline_and_condition_fill_agree(hard_rooms, one_view, tmp_path):
    """`panowan eval`'s baseline and the dataset's condition fill are the same fill (the embedded gate)."""
    from panowan.data.dataset import RoomDataset
    from panowan.eval.baselines import BASELINES, CLASSICAL_FILLS, baseline_view, run_baseline

    assert "shell_gate" in BASELINES and "shell_gate" not in CLASSICAL_FILLS  # learned: no classical rival
    info, shell, view, rgb, rng, known = one_view
    pose = info.poses[info.views.index(view)]
    out_rgb, _ = baseline_view(rgb, rng, known, "shell_gate", (pose, shell))
    np.testing.assert_array_equal(out_rgb, sg.shell_gate_fill(rgb, rng, known, pose, shell)[0])
    with pytest.raises(ValueError, match="shell_gate baseline needs"):
        baseline_view(rgb, rng, known, "shell_gate")
    written = run_baseline(hard_rooms, tmp_path / "pred", "shell_gate", [info.paths.room_id])
    assert len(written) == 1
    ds = RoomDataset(
        hard_rooms, num_frames=len(info.views), cond_fill="shell_gate", cond_depth_fill="shell_gate"
    )
    index = next(i for i, r in enumerate(ds.rooms) if r.paths.root == info.paths.root)
    sample = ds[index]
    frame = sample.view_indices.index(view)
    cond = (sample.cond_rgb[frame].permute(1, 2, 0).numpy() + 1) * 127.5
    hole = ~known
    assert np.abs(cond[hole] - out_rgb[hole]).max() <= 1


def test_each_stream_gets_its_own_shell_fill(hard_rooms):
    """RGB from the shell gate and depth from the room-shell fill: each condition is the one its stream names."""
    from panowan.data.dataset import RoomDataset

    def sample(rgb_fill: str, depth_fill: str):
        return RoomDataset(hard_rooms, num_frames=5, cond_fill=rgb_fill, cond_depth_fill=depth_fill)[0]

    mixed, gate, shell = (
        sample("shell_gate", "room_shell"),
        sample("shell_gate", "zero"),
        sample("zero", "room_shell"),
    )
    assert torch.equal(mixed.cond_rgb, gate.cond_rgb) and torch.equal(mixed.cond_depth, shell.cond_depth)
    assert not torch.equal(gate.cond_depth, shell.cond_depth)  # the fills differ, so the check can fail
