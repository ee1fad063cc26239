"""`panowan prepare`: files written, view 0 exact, idempotent, --overwrite, failures reported by path."""

from __future__ import annotations

import os

import numpy as np

from panowan.cli import main
from panowan.data.io import read_depth, read_mask, read_rgb
from panowan.data.layout import RoomPaths, discover_views
from panowan.data.prepare import prepare_rooms


def rooms_of(root):
    return sorted(p for p in root.glob("*/*") if p.is_dir())


def _prepared_files(root):
    out = []
    for room in rooms_of(root):
        p = RoomPaths(room)
        for v in discover_views(room):
            out += [p.cond_rgb(v), p.cond_depth(v), p.cond_mask(v)]
    return out


def test_writes_all_files_and_view0_is_its_panorama(prepared_root):
    files = _prepared_files(prepared_root)
    assert len(files) == 3 * 6 * 3 and all(f.is_file() for f in files)
    for room in rooms_of(prepared_root):
        p = RoomPaths(room)
        assert np.array_equal(read_rgb(p.cond_rgb(0)), read_rgb(p.ref_rgb))
        assert np.array_equal(read_depth(p.cond_depth(0)), read_depth(p.ref_depth))
        assert read_mask(p.cond_mask(0)).all()


def test_reprojection_agrees_with_ground_truth(prepared_root):
    for room in rooms_of(prepared_root):
        p = RoomPaths(room)
        for v in range(1, 6):
            known = read_mask(p.cond_mask(v))
            depth, gt = read_depth(p.cond_depth(v)), read_depth(p.gt_depth(v))
            assert known.mean() > 0.3
            assert np.all(depth[~known] == 0) and np.all(read_rgb(p.cond_rgb(v))[~known] == 0)
            rel = np.abs(depth[known] / gt[known] - 1)
            assert np.median(rel) < 0.02


def test_idempotent_and_overwrite(data_copy):
    files = _prepared_files(data_copy)
    for f in files:
        os.utime(f, (1_000_000, 1_000_000))
    summary = prepare_rooms(data_copy, progress=False)
    assert len(summary.skipped) == 3 and not summary.prepared and not summary.failed
    assert all(f.stat().st_mtime == 1_000_000 for f in files)
    summary = prepare_rooms(data_copy, overwrite=True, workers=2, progress=False)
    assert len(summary.prepared) == 3
    assert all(f.stat().st_mtime > 1_000_000 for f in files)


def test_missing_file_completes_the_room(data_copy):
    room = rooms_of(data_copy)[1]
    victim = RoomPaths(room).cond_mask(4)
    victim.unlink()
    summary = prepare_rooms(data_copy, progress=False)
    assert summary.prepared == [room] and victim.is_file()


def test_bad_room_is_reported_by_path_and_reason(data_copy, capsys):
    bad = rooms_of(data_copy)[2]
    (bad / "input" / "pose_0003.json").write_text(
        '{"position": [0, 0, 0], "rotation_quaternion": [1, 1, 0, 0]}'
    )
    (bad / "input" / "pano0000_to_pano0001_rgb.png").unlink()  # so the room is not skipped as complete
    summary = prepare_rooms(data_copy, progress=False)
    assert [r for r, _ in summary.failed] == [bad]
    assert "pose_0003.json" in summary.failed[0][1] and "unit quaternion" in summary.failed[0][1]
    code = main(["prepare", "--data_root", str(data_copy)])
    err = capsys.readouterr().err
    assert code == 1 and str(bad) in err and "pose_0003.json" in err


def test_thread_budget_is_the_callers(data_copy, monkeypatch):
    """In-process preparation leaves the caller's torch thread count alone; a pool of workers splits that
    count between them (never the machine's cores: several jobs may share the machine)."""
    import torch

    import panowan.data.prepare as prep

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        prepare_rooms(data_copy, overwrite=True, progress=False)
        assert torch.get_num_threads() == 1
        torch.set_num_threads(4)
        seen = []

        class InlinePool:  # records each job's thread share without forking
            def __init__(self, max_workers):
                self.workers = max_workers

            def map(self, fn, jobs):
                seen.extend(job[3] for job in jobs)
                return [(job[0], "skipped", "") for job in jobs]

            def shutdown(self, **_):
                pass

        monkeypatch.setattr(prep, "ProcessPoolExecutor", InlinePool)
        prepare_rooms(data_copy, workers=2, progress=False)
        assert seen and set(seen) == {2}
        prepare_rooms(data_copy, workers=8, progress=False)
        assert set(seen[-3:]) == {1}
    finally:
        torch.set_num_threads(before)
