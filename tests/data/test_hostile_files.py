"""Hostile input files (issue 21, part C): each refused with an error that names the file and the problem, or
skipped and counted; never a crash, a huge allocation or a file silently ignored.

Complements tests/data/test_hostile.py (damaged rooms found at construction / when reading); pose files:
tests/geometry/test_pose_hostile.py.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import time
import zlib

import cv2
import numpy as np
import pytest

import panowan.data.dataset as dataset_module
from panowan.data.dataset import RoomDataset
from panowan.data.io import (
    MAX_IMAGE_HW,
    depth_header,
    npy_header,
    png_header,
    read_depth,
    read_mask,
    read_rgb,
)
from panowan.data.layout import RoomError, discover_views, scan_data_root
from panowan.data.prepare import prepare_rooms


def rooms_of(root):
    return sorted(p for p in root.glob("*/*") if p.is_dir())


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_claiming(height: int, width: int) -> bytes:
    """A well-formed PNG (valid CRCs, IEND at the end) whose IHDR claims `height x width` RGB pixels, with one
    row of image data: small on disk, 3 * height * width bytes for a decoder that trusts the header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = zlib.compress(b"\x00" + bytes(3 * min(width, 64)))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", row) + _chunk(b"IEND", b"")


def _png_bytes(height: int = 8, width: int = 16) -> bytes:
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if OpenCV is asked to decode anything (a refusal must come from the header)."""

    def refuse(*args, **kwargs):
        raise AssertionError("cv2.imdecode called: the file was not refused from its header")

    monkeypatch.setattr(cv2, "imdecode", refuse)
    monkeypatch.setattr(cv2, "imread", refuse)


# ------------------------------------------------------------------------------------ 1. claimed size
def test_png_claiming_60000x120000_is_refused_before_decoding(tmp_path, no_decoding):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_claiming(60000, 120000))
    assert path.stat().st_size < 200
    for reader in (png_header, read_rgb, read_mask):
        with pytest.raises(ValueError) as err:
            reader(path)
        message = str(err.value)
        assert "huge.png" in message and "60000x120000" in message, message
        assert f"{MAX_IMAGE_HW[0]}x{MAX_IMAGE_HW[1]}" in message and "before decoding" in message, message


def test_size_limit_admits_every_sane_panorama_and_refuses_one_pixel_more(tmp_path, no_decoding):
    assert MAX_IMAGE_HW[0] >= 720 and MAX_IMAGE_HW[1] >= 1440  # the 14B preset's 720 x 1440, with margin
    path = tmp_path / "edge.png"
    for height, width in ((720, 1440), (8192, 16384), MAX_IMAGE_HW):
        path.write_bytes(_png_claiming(height, width))
        assert png_header(path) == (height, width)
    for height, width in ((MAX_IMAGE_HW[0] + 1, MAX_IMAGE_HW[1]), (MAX_IMAGE_HW[0], MAX_IMAGE_HW[1] + 1)):
        path.write_bytes(_png_claiming(height, width))
        with pytest.raises(ValueError, match=rf"edge\.png.*{height}x{width}.*above the limit"):
            png_header(path)
    path.write_bytes(_png_claiming(0, 64))
    with pytest.raises(ValueError, match=r"edge\.png.*empty image"):
        png_header(path)


def test_sparse_npy_claiming_60000x120000_is_refused_unread(tmp_path, monkeypatch):
    """A header promising 28.8 GB of float32 in a sparse file is not truncated, so only the limit stops it."""
    path = tmp_path / "huge_depth.npy"
    header = {"descr": "<f4", "fortran_order": False, "shape": (60000, 120000)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.truncate(f.tell() + 60000 * 120000 * 4)  # a hole: no disk blocks
    assert npy_header(path)[0] == (60000, 120000)  # a consistent header ...
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load called on a refused file"))
    for reader in (depth_header, read_depth):  # ... refused as a depth map
        with pytest.raises(ValueError, match=r"huge_depth\.npy.*60000x120000.*above the limit"):
            reader(path)


def test_room_with_a_huge_png_is_refused_at_construction(data_copy, no_decoding):
    bad = rooms_of(data_copy)[1]
    (bad / "output" / "panorama_0002.png").write_bytes(_png_claiming(60000, 120000))
    with pytest.raises(RoomError, match=r"output/panorama_0002\.png: header claims 60000x120000") as err:
        RoomDataset(data_copy, num_frames=5)
    assert str(bad) in str(err.value)
    ds = RoomDataset(data_copy, num_frames=5, skip_bad_rooms=True)
    assert len(ds) == 2 and ds.summary["bad_rooms"] == 1


# -------------------------------------------------------------------------------------- 2. truncation
@pytest.mark.parametrize("keep", [5, 8, 20, 40, "half", "all but 1"])
def test_truncated_png_names_the_file(tmp_path, keep):
    data = _png_bytes(32, 64)
    n = {"half": len(data) // 2, "all but 1": len(data) - 1}.get(keep, keep)
    path = tmp_path / "cut.png"
    path.write_bytes(data[:n])
    for reader in (png_header, read_rgb, read_mask):
        with pytest.raises(ValueError, match=r"cut\.png: PNG is truncated"):
            reader(path)


def test_png_with_image_data_cut_but_iend_intact_cannot_be_decoded(tmp_path):
    data = _png_bytes(32, 64)
    idat = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[idat : idat + 4])
    payload = data[idat + 8 : idat + 8 + length // 2]
    path = tmp_path / "short_idat.png"
    path.write_bytes(data[:idat] + _chunk(b"IDAT", payload) + _chunk(b"IEND", b""))
    assert png_header(path) == (32, 64)  # the header and the end look right ...
    with pytest.raises(ValueError, match=r"short_idat\.png: PNG cannot be decoded"):
        read_rgb(path)  # ... the decoder finds the data short


@pytest.mark.parametrize("keep", [3, 9, 50, 0.8])
def test_truncated_npy_names_the_file(tmp_path, keep):
    path = tmp_path / "cut_depth.npy"
    np.save(path, np.ones((32, 64), np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])
    for reader in (npy_header, read_depth):
        with pytest.raises(ValueError, match=r"cut_depth\.npy: NPY is truncated"):
            reader(path)


def test_empty_directory_and_broken_link_as_data_files(tmp_path):
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.npy: file is empty"):
        read_depth(tmp_path / "empty.npy")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ValueError, match=r"folder\.png: is a directory"):
        read_rgb(tmp_path / "folder.png")
    (tmp_path / "dangling.npy").symlink_to(tmp_path / "nowhere.npy")
    with pytest.raises(ValueError, match=r"dangling\.npy: is a broken symbolic link"):
        read_depth(tmp_path / "dangling.npy")


def test_object_dtype_npy_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "objects_depth.npy"
    np.save(path, np.array([[{"a": 1}]], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"objects_depth\.npy: NPY holds Python objects"):
        depth_header(path)


# --------------------------------------------------------------------------------------- 3. NaN / inf
def _poke(path, value, where=None):
    depth = np.load(path)
    if where is None:
        depth[2, 7] = value
    else:
        depth[where(depth)] = value
    np.save(path, depth)


@pytest.mark.parametrize(
    "name, value, kind",
    [
        ("output/panorama_0005_depth.npy", -np.inf, "inf/negative"),
        ("input/panorama_0000_depth.npy", np.inf, "inf"),
        ("input/panorama_0000_depth.npy", -3.0, "negative"),
    ],
)
def test_non_finite_ground_truth_or_view0_depth_is_refused(data_copy, name, value, kind):
    bad = rooms_of(data_copy)[0]
    _poke(bad / name, value)
    with pytest.raises(RoomError) as err:
        RoomDataset(data_copy, num_frames=5)[0]
    message = str(err.value)
    assert str(bad) in message and name in message and f"1 {kind} values" in message, message


@pytest.mark.parametrize("value, kind", [(np.nan, "NaN"), (np.inf, "inf"), (-3.0, "negative")])
def test_prepare_refuses_view0_depth_the_dataset_would_refuse(data_copy, value, kind):
    """`panowan prepare` applies the dataset's rule to view 0's depth, so a room never prepares fine and then
    fails when read."""
    from panowan.data.prepare import prepare_room

    bad = rooms_of(data_copy)[0]
    _poke(bad / "input/panorama_0000_depth.npy", value)
    with pytest.raises(RoomError, match=f"1 {kind} values") as err:
        prepare_room(bad, overwrite=True)
    assert "input/panorama_0000_depth.npy" in str(err.value)


@pytest.mark.parametrize("with_masks", [True, False])
def test_non_finite_conditioning_depth_at_holes_is_a_hole(data_copy, with_masks):
    """0, NaN and inf all mean "hole" in a conditioning depth: the sample is the same, finite, bit for bit."""
    room = rooms_of(data_copy)[0]
    if not with_masks:
        for f in room.glob("input/*_mask.png"):
            f.unlink()
    want = RoomDataset(data_copy, num_frames=5)[0]
    for view, value in ((1, np.nan), (2, np.inf), (3, np.nan), (4, -np.inf)):
        _poke(room / "input" / f"pano0000_to_pano{view:04d}_depth_range.npy", value, lambda d: d == 0)
    got = RoomDataset(data_copy, num_frames=5)[0]
    assert 0 < float(got.mask.mean()) < 1  # there are holes
    for name in ("mask", "cond_rgb", "cond_depth"):
        value = getattr(got, name)
        assert bool(value.isfinite().all()) and bool((value == getattr(want, name)).all()), name


# ------------------------------------------------------------------------------- 4. pose files in a room
def test_room_with_a_broken_pose_file_names_it(data_copy):
    bad = rooms_of(data_copy)[2]
    pose = bad / "input" / "pose_0003.json"
    pose.write_text(json.dumps({"position": [0, 0, 0], "rotation_quaternion": [0, 0, 0, 0]}))
    with pytest.raises(
        RoomError, match=r"input/pose_0003\.json: 'rotation_quaternion' is the zero quaternion"
    ):
        RoomDataset(data_copy, num_frames=5)
    pose.unlink()
    pose.mkdir()  # a folder with a pose file's name
    with pytest.raises(RoomError, match=r"input/pose_0003\.json: is a directory"):
        RoomDataset(data_copy, num_frames=5)


# ------------------------------------------------------------------------------- 5. duplicate view files
DUPLICATES = {
    "panorama padded 3": ("output/panorama_0003.png", "output/panorama_003.png", "duplicates view 3"),
    "panorama padded 5": ("output/panorama_0003.png", "output/panorama_00003.png", "duplicates view 3"),
    "panorama upper case": ("output/panorama_0003.png", "output/PANORAMA_0003.png", "duplicates view 3"),
    "depth padded 3": (
        "output/panorama_0002_depth.npy",
        "output/panorama_002_depth.npy",
        "duplicates view 2",
    ),
    "two poses for one view": ("input/pose_0004.json", "input/pose_004.json", "duplicates view 4"),
    "reference padded 3": ("input/panorama_0000.png", "input/panorama_000.png", "duplicates view 0"),
}


@pytest.mark.parametrize("original, copy, problem", DUPLICATES.values(), ids=DUPLICATES.keys())
def test_two_files_for_one_view_are_refused(data_copy, original, copy, problem):
    bad = rooms_of(data_copy)[1]
    shutil.copy(bad / original, bad / copy)
    with pytest.raises(RoomError) as err:
        discover_views(bad)
    assert f"{copy}: {problem}" in str(err.value) and str(bad) in str(err.value), str(err.value)
    ds = RoomDataset(data_copy, num_frames=5, skip_bad_rooms=True)
    assert len(ds) == 2 and ds.summary["bad_rooms"] == 1 and copy in ds.summary["bad"][0][1]


RENAMED = {
    "pose padded 3": ("input/pose_0005.json", "input/pose_005.json", "must be named pose_0005.json"),
    "panorama padded 5": (
        "output/panorama_0005.png",
        "output/panorama_00005.png",
        "must be named panorama_0005",
    ),
    "five digits": ("output/panorama_0005.png", "output/panorama_12345.png", "more than four digits"),
}


@pytest.mark.parametrize("original, renamed, problem", RENAMED.values(), ids=RENAMED.keys())
def test_view_file_with_another_padding_is_refused_not_ignored(data_copy, original, renamed, problem):
    bad = rooms_of(data_copy)[1]
    (bad / original).rename(bad / renamed)
    with pytest.raises(RoomError, match=rf"{renamed}: .*{problem}"):
        discover_views(bad)


# ------------------------------------------------------------------------------------------ symlinks
def test_symlinked_rooms(data_copy, tmp_path, caplog):
    """A link to a room elsewhere is a room; a second path to a listed room is listed once (warned); a
    broken link or a link loop is a bad room named as such."""
    first = rooms_of(data_copy)[0]
    outside = tmp_path / "elsewhere" / "room_x"
    shutil.copytree(first, outside)
    links = data_copy / "zz_links"
    links.mkdir()
    (links / "outside").symlink_to(outside)  # a room kept out of the data root: used
    (links / "again").symlink_to(first)  # a second path to room 0: left out
    with caplog.at_level(logging.WARNING, logger="panowan"):
        ds = RoomDataset(data_copy, num_frames=5)
    assert [r.paths.room_id for r in ds.rooms][-1] == "zz_links/outside" and len(ds) == 4
    assert ds.summary["aliased_rooms"] == 1
    assert [r.getMessage() for r in caplog.records if r.name.startswith("panowan")] == [
        f"{links / 'again'} is the same folder as {first} (a symbolic link): the room is listed once"
    ]
    (links / "dangling").symlink_to(tmp_path / "gone")
    (links / "loop").symlink_to(links / "loop")
    for name in ("dangling", "loop"):
        with pytest.raises(RoomError, match=rf"{name}: room folder is a broken symbolic link"):
            discover_views(links / name)
    ds = RoomDataset(data_copy, num_frames=5, skip_bad_rooms=True)
    assert len(ds) == 4 and ds.summary["bad_rooms"] == 2
    assert sorted(b[0] for b in ds.summary["bad"]) == [str(links / "dangling"), str(links / "loop")]


def test_broken_symlink_inside_a_room_names_the_file(data_copy, tmp_path):
    bad = rooms_of(data_copy)[0]
    (bad / "input" / "description.txt").unlink()
    (bad / "input" / "description.txt").symlink_to(tmp_path / "gone.txt")
    with pytest.raises(RoomError, match=r"input/description\.txt: is a broken symbolic link"):
        RoomDataset(data_copy, num_frames=5)


# ------------------------------------------------------------------------------ 6. many empty folders
EMPTY_FOLDERS = 10_000


def test_ten_thousand_empty_room_folders_are_skipped_fast_with_one_log_line(data_copy, monkeypatch, caplog):
    for k in range(EMPTY_FOLDERS):
        os.makedirs(data_copy / f"empty_area_{k % 4}" / f"room_{k:05d}")
    (data_copy / "empty_area_0" / "room_00000" / ".DS_Store").write_bytes(b"x")  # hidden files only: empty
    calls = []
    real = dataset_module.discover_views
    monkeypatch.setattr(dataset_module, "discover_views", lambda room: calls.append(room) or real(room))
    with caplog.at_level(logging.INFO, logger="panowan"):
        start = time.perf_counter()
        scan = scan_data_root(data_copy)
        scan_s = time.perf_counter() - start
        start = time.perf_counter()
        ds = RoomDataset(data_copy, num_frames=5)
        dataset_s = time.perf_counter() - start
    print(f"\n{EMPTY_FOLDERS} empty room folders: scan {scan_s:.3f} s, RoomDataset {dataset_s:.3f} s")
    assert len(scan.empty) == EMPTY_FOLDERS and scan.rooms == rooms_of(data_copy)[:3]
    assert len(ds) == 3 and ds.summary["empty_folders"] == EMPTY_FOLDERS and ds.summary["bad_rooms"] == 0
    assert len(calls) == 3  # the empty folders never reach view discovery
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("panowan")]
    assert len(messages) == 2 and all(f"skipped {EMPTY_FOLDERS} empty room folders" in m for m in messages)
    assert scan_s < 2.0 and dataset_s < 3.0, (scan_s, dataset_s)


def test_prepare_skips_empty_room_folders_too(data_copy, caplog):
    for k in range(50):
        (data_copy / "area_000" / f"zz_empty_{k:02d}").mkdir()
    with caplog.at_level(logging.WARNING, logger="panowan"):
        summary = prepare_rooms(data_copy, progress=False)
    assert not summary.failed and len(summary.skipped) == 3  # prepared already; the empty ones not listed
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records if r.name.startswith("panowan")] == [
        "skipped 50 empty room folders (area_000/zz_empty_00, area_000/zz_empty_01, "
        "area_000/zz_empty_02, ...)"
    ]
