"""RoomDataset: Sample contract, frame selection, view order, resizing, DepthNorm, collate."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from panowan.data.dataset import (
    DepthNorm,
    RoomDataset,
    collate,
    frame_count,
    path_order,
    resize_masked,
    select_frames,
)
from panowan.data.io import read_depth, read_mask, read_rgb
from panowan.data.layout import RoomPaths
from panowan.geometry.pose import load_pose


def rooms_of(root):
    return sorted(p for p in root.glob("*/*") if p.is_dir())


def test_frame_count_is_largest_4k_plus_1():
    for views in range(5, 40):
        for frames in (5, 9, 13, 17, 21, 33):
            n = frame_count(views, frames)
            naive = max(k for k in range(1, 100) if (k - 1) % 4 == 0 and k <= views and k <= frames)
            assert n == naive


def test_select_frames_keeps_ends_and_is_seeded():
    for views in (5, 6, 9, 12, 23):
        picks = [tuple(select_frames(views, 9, np.random.default_rng([0, 1, e]))) for e in range(8)]
        for p in picks:
            assert len(p) == frame_count(views, 9) and p[0] == 0 and p[-1] == views - 1
            assert list(p) == sorted(set(p))
        assert picks[0] == tuple(select_frames(views, 9, np.random.default_rng([0, 1, 0])))
        if views > 9:
            assert len(set(picks)) > 1


def test_path_order_starts_at_zero_and_is_greedy():
    rng = np.random.default_rng(0)
    pos = rng.normal(size=(9, 3))
    order = path_order(pos)
    assert order[0] == 0 and sorted(order) == list(range(9))
    for i in range(1, 9):  # each step goes to the nearest item not yet visited
        rest = [j for j in range(9) if j not in order[:i]]
        assert order[i] == min(rest, key=lambda j: np.linalg.norm(pos[j] - pos[order[i - 1]]))
    line = np.array([[0, 0, 0], [5, 0, 0], [1, 0, 0], [3, 0, 0], [2, 0, 0]], float)
    assert path_order(line) == [0, 2, 4, 3, 1]


def test_masked_resize_keeps_holes_out_of_valid_depth():
    rng = np.random.default_rng(1)
    depth = rng.uniform(1, 9, (32, 64)).astype(np.float32)
    valid = rng.uniform(size=(32, 64)) > 0.4
    depth[~valid] = 0.0  # a hole value that must never be averaged in
    valid[:4, :8] = False  # a block with no valid sample at all
    out, out_valid = resize_masked(depth[..., None], valid, 16, 32)
    for v in range(16):  # naive reference: mean of the valid samples of each 2x2 block
        for u in range(32):
            block, ok = (
                depth[2 * v : 2 * v + 2, 2 * u : 2 * u + 2],
                valid[2 * v : 2 * v + 2, 2 * u : 2 * u + 2],
            )
            assert out_valid[v, u] == ok.any()
            if ok.any():
                assert out[v, u, 0] == pytest.approx(block[ok].mean(), rel=1e-5)
            else:
                assert out[v, u, 0] == 0
    assert not out_valid[:2, :4].any()


def test_depth_norm_round_trip_float64_and_range():
    d = torch.exp(torch.linspace(-3, 4, 1000, dtype=torch.float64))
    norm = DepthNorm.from_depth(np.array([[0.5, 8.0], [2.0, 3.0]], np.float32))
    torch.testing.assert_close(norm.denormalize(norm.normalize(d)), d, rtol=1e-14, atol=0)
    n = norm.normalize(torch.tensor([0.25, 0.5, 8.0, 16.0], dtype=torch.float64))
    step = np.log(2) / norm.half_range  # margin: half the minimum / twice the maximum map to -1 / 1
    torch.testing.assert_close(n, torch.tensor([-1.0, -1 + step, 1 - step, 1.0], dtype=torch.float64))
    assert -1 < n[1] < n[2] < 1
    arr = np.array([0.7, 3.3])
    np.testing.assert_allclose(norm.denormalize(norm.normalize(arr)), arr, rtol=1e-14)


def test_sample_contract(prepared_root):
    ds = RoomDataset(prepared_root, num_frames=17, height=16)
    assert len(ds) == 3 and ds.summary["rooms_used"] == 3
    s = ds[1]
    f = 5  # 6 views -> largest 4k+1 is 5
    shapes = {"rgb": (f, 3, 16, 32), "depth": (f, 1, 16, 32), "depth_valid": (f, 1, 16, 32), "cond_rgb": (f, 3, 16, 32),
              "cond_depth": (f, 1, 16, 32), "mask": (f, 1, 16, 32), "plucker": (f, 6, 16, 32)}  # fmt: skip
    for name, shape in shapes.items():
        t = getattr(s, name)
        assert tuple(t.shape) == shape, name
        assert t.dtype == (torch.bool if name == "depth_valid" else torch.float32), name
        assert torch.isfinite(t.float()).all()
    for name in ("rgb", "cond_rgb", "depth", "cond_depth"):
        assert getattr(s, name).abs().max() <= 1
    assert s.view_indices[0] == 0 and s.view_indices[-1] == 5 and len(s.view_indices) == 5
    assert s.room_id == "/".join(rooms_of(prepared_root)[1].parts[-2:])
    assert s.prompt == (rooms_of(prepared_root)[1] / "input" / "description.txt").read_text().strip()
    assert torch.all(s.mask[0] == 1) and torch.all(s.plucker[0, 3:] == 0)
    assert set(s.mask.unique().tolist()) <= {0.0, 1.0} and s.mask[1:].mean() < 1
    assert torch.all(s.cond_rgb * (1 - s.mask) == 0) and torch.all(s.cond_depth * (1 - s.mask) == 0)
    assert s.depth_valid.all()


def test_sample_values_match_files_at_native_size(prepared_root):
    ds = RoomDataset(prepared_root, num_frames=5)
    s, paths = ds[0], RoomPaths(rooms_of(prepared_root)[0])
    for i, v in enumerate(s.view_indices):
        rgb = torch.from_numpy(read_rgb(paths.gt_rgb(v))).permute(2, 0, 1).float() / 127.5 - 1
        torch.testing.assert_close(s.rgb[i], rgb)
        depth = torch.from_numpy(read_depth(paths.gt_depth(v)))
        inside = s.depth[i, 0].abs() < 1  # values outside view 0's range (+ margin) are clamped
        assert inside.float().mean() > 0.8
        torch.testing.assert_close(
            s.depth_norm.denormalize(s.depth[i, 0])[inside], depth[inside], rtol=1e-5, atol=0
        )
        clamped = s.depth_norm.normalize(depth[~inside].double()).clamp(-1, 1).float()
        torch.testing.assert_close(s.depth[i, 0][~inside], clamped)
        if v:
            known = torch.from_numpy(read_mask(paths.cond_mask(v))).float()
            assert torch.equal(s.mask[i, 0], known)
    rel = load_pose(paths.pose(s.view_indices[2])).relative_to(load_pose(paths.pose(0)))
    torch.testing.assert_close(
        s.plucker[2, 3:, 5, 7],
        torch.linalg.cross(rel.position, s.plucker[2, :3, 5, 7].double()).float(),
        atol=1e-5,
        rtol=0,
    )


def test_telea_condition_fill_fills_only_the_holes(prepared_root):
    """cond_fill="telea": known pixels as with "zero", holes hold the seam-aware Telea fill of the known pixels
    (the "telea" baseline's function); view 0 (no hole) is unchanged; everything else is identical."""
    from panowan.data.inpaint import inpaint_erp

    zero, fill = (
        RoomDataset(prepared_root, num_frames=5)[0],
        RoomDataset(prepared_root, num_frames=5, cond_fill="telea")[0],
    )
    assert zero.view_indices == fill.view_indices
    for name in ("rgb", "depth", "cond_depth", "mask", "plucker"):
        assert torch.equal(getattr(zero, name), getattr(fill, name)), name
    known = zero.mask[:, 0] > 0.5  # F,H,W
    assert known[0].all() and not known[1:].all()
    assert torch.equal(fill.cond_rgb[known.unsqueeze(1).expand_as(fill.cond_rgb)],
                       zero.cond_rgb[known.unsqueeze(1).expand_as(zero.cond_rgb)])  # fmt: skip
    for f in range(1, len(known)):
        hole = ~known[f].numpy()
        if not hole.any():
            continue
        u8 = np.clip(np.rint((zero.cond_rgb[f].permute(1, 2, 0).numpy() + 1) * 127.5), 0, 255).astype(
            np.uint8
        )
        u8[hole] = 0
        want = inpaint_erp(u8, hole, "telea").astype(np.float32) / 127.5 - 1
        got = fill.cond_rgb[f].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(got[hole], want[hole], atol=1e-6)
        assert np.abs(got[hole]).mean() > 0.05  # not the zeros of the "zero" fill


def test_depth_condition_fill_fills_only_the_depth_holes(prepared_root):
    """cond_depth_fill="ns": the normalised depth condition's known pixels are as with "zero"; its holes hold the
    normalised seam-aware Navier-Stokes fill of the known range in metres (the "ns" baseline's), nearer the truth
    than zeros; nothing else changes."""
    from panowan.data.inpaint import inpaint_erp

    dataset = RoomDataset(prepared_root, num_frames=5)
    zero, paths = dataset[0], dataset.rooms[0].paths
    fill = RoomDataset(prepared_root, num_frames=5, cond_depth_fill="ns")[0]
    for name in ("rgb", "depth", "cond_rgb", "mask", "plucker"):
        assert torch.equal(getattr(zero, name), getattr(fill, name)), name
    known = zero.mask[:, 0] > 0.5  # F,H,W; the synthetic rooms' depth is known wherever their RGB is
    assert torch.equal(fill.cond_depth[:, 0][known], zero.cond_depth[:, 0][known])
    holes = 0
    for f in range(1, len(known)):
        hole = ~known[f].numpy()
        holes += int(hole.sum())
        metres = np.where(hole, 0, read_depth(paths.cond_depth(zero.view_indices[f]))).astype(np.float32)
        want = zero.depth_norm.normalize(inpaint_erp(metres, hole, "ns"))
        got = fill.cond_depth[f, 0].numpy()
        np.testing.assert_allclose(got[hole], np.clip(want[hole], -1, 1), atol=1e-4)
        truth = zero.depth[f, 0].numpy()[hole]
        assert np.abs(got[hole] - truth).mean() < np.abs(truth).mean()  # better than the zeros
    assert holes > 0


def test_epochs_resample_and_path_order(prepared_root, tmp_path):
    # A room with 12 views: make one by synthesising it (views > frames so sampling matters).
    from panowan.data.prepare import prepare_rooms
    from panowan.data.synth import synth_rooms

    synth_rooms(tmp_path, 1, 12, 16, 32, seed=4)
    prepare_rooms(tmp_path, progress=False)
    ds = RoomDataset(tmp_path, num_frames=9, seed=3)
    seen = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        views = ds.selected_views(0)
        assert len(views) == 9 and views[0] == 0 and views[-1] == 11 and views == sorted(views)
        seen.add(tuple(views))
    assert len(seen) > 1
    ds.set_epoch(2)
    assert ds[0].view_indices == ds.selected_views(0)
    path = RoomDataset(tmp_path, num_frames=9, seed=3, view_order="path")
    path.set_epoch(2)
    order = path.selected_views(0)
    assert order[0] == 0 and sorted(order) == ds.selected_views(0)
    positions = np.stack(
        [
            load_pose(tmp_path / "area_000/room_0000/input" / f"pose_{v:04d}.json").position.numpy()
            for v in order
        ]
    )
    assert [order[i] for i in path_order(positions)] == order


def test_collate_and_batch_depth_norm(prepared_root):
    ds = RoomDataset(prepared_root, num_frames=5, height=16)
    batch = collate([ds[0], ds[2]])
    assert batch.rgb.shape == (2, 5, 3, 16, 32) and batch.plucker.shape == (2, 5, 6, 16, 32)
    assert batch.room_id == [ds[0].room_id, ds[2].room_id] and len(batch.view_indices) == 2
    assert batch.depth_norm.center.shape == (2,)
    metres = batch.depth_norm.denormalize(batch.depth)
    for b, s in enumerate((ds[0], ds[2])):
        torch.testing.assert_close(metres[b], s.depth_norm.denormalize(s.depth))


def test_rooms_with_few_views_are_dropped_and_counted(data_copy):
    room = rooms_of(data_copy)[0]
    for v in (4, 5):
        for f in (room / "output").glob(f"panorama_{v:04d}*"):
            f.unlink()
        (room / "input" / f"pose_{v:04d}.json").unlink()
    ds = RoomDataset(data_copy, num_frames=5)
    assert len(ds) == 2 and ds.summary["too_few_views"] == 1


def test_bad_arguments_are_refused(prepared_root):
    for kwargs in (
        {"num_frames": 8},
        {"num_frames": 1},
        {"height": 20},
        {"view_order": "random"},
        {"mask_polarity": "x"},
        {"cond_fill": "lama"},
        {"cond_depth_fill": "poisson"},
    ):
        with pytest.raises(ValueError):
            RoomDataset(prepared_root, **kwargs)
    empty = prepared_root.parent / "empty_root"
    shutil.rmtree(empty, ignore_errors=True)
    empty.mkdir()
    with pytest.raises(ValueError, match="no usable rooms"):
        RoomDataset(empty)


def test_cached_files_give_the_same_samples_without_rereading(data_copy):
    """cache_files: the second epoch is served from memory (the files are gone) and equals uncached reads."""
    plain = RoomDataset(data_copy, num_frames=5, height=16)
    cached = RoomDataset(data_copy, num_frames=5, height=16, cache_files=True)
    for epoch in (0, 1):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(len(plain)):
            a, b = plain[i], cached[i]
            for name in ("rgb", "depth", "depth_valid", "cond_rgb", "cond_depth", "mask", "plucker"):
                assert torch.equal(getattr(a, name), getattr(b, name)), (epoch, i, name)
    plain.set_epoch(0)
    cached.set_epoch(0)
    want = plain[0]
    every_file = {p for p in data_copy.rglob("*") if p.suffix in (".png", ".npy")}
    read = set(cached._files)
    assert read and read <= every_file
    for path in read:
        path.unlink()
    assert torch.equal(cached[0].rgb, want.rgb) and torch.equal(cached[0].cond_depth, want.cond_depth)


def test_rooms_filter_validates_only_the_named_rooms_and_views_pick_a_pass(data_copy):
    """`rooms=` opens the named folders only (a broken neighbour is never read); `sample(views=)` gives exactly
    those views and equals `dataset[i]` for the epoch's own selection; bad requests are refused by name."""
    from panowan.data.dataset import RoomDataset

    all_rooms = sorted(p for p in data_copy.glob("*/*") if p.is_dir())
    keep, broken = all_rooms[0], all_rooms[1]
    (broken / "input" / "panorama_0000.png").write_bytes(b"not a png")
    with pytest.raises(ValueError):
        RoomDataset(data_copy, num_frames=5)
    one = RoomDataset(data_copy, num_frames=5, rooms=[keep])
    assert len(one) == 1 and one.rooms[0].paths.root.resolve() == keep.resolve()
    chosen = one.selected_views(0)
    same = one.sample(0, one.epoch, views=chosen)
    assert same.view_indices == chosen and torch.equal(same.cond_rgb, one[0].cond_rgb)
    other = one.sample(0, one.epoch, views=[0, 2, 3, 4, 5])
    assert other.view_indices == [0, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="must start with view 0"):
        one.sample(0, 0, views=[1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match=r"no views \[9\]"):
        one.sample(0, 0, views=[0, 1, 2, 3, 9])
    with pytest.raises(ValueError, match="not room folders of this data root"):
        RoomDataset(data_copy, num_frames=5, rooms=[data_copy / "nowhere" / "room"])
