"""Hostile input: every damaged room gives a RoomError naming the file, or a counted skip; never a sample."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from panowan.data.dataset import RoomDataset
from panowan.data.io import npy_header, png_header, read_depth, read_mask, read_rgb
from panowan.data.layout import RoomError, discover_views, scan_rooms


def rooms_of(root):
    return sorted(p for p in root.glob("*/*") if p.is_dir())


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _write_png(path, image):
    assert cv2.imwrite(str(path), image)


def _damage_missing(room):
    (room / "output" / "panorama_0003_depth.npy").unlink()
    return "output/panorama_0003_depth.npy"


def _damage_truncated_png(room):
    _truncate(room / "output" / "panorama_0002.png")
    return "output/panorama_0002.png"


def _damage_truncated_npy(room):
    _truncate(room / "input" / "pano0000_to_pano0004_depth_range.npy", 0.8)
    return "input/pano0000_to_pano0004_depth_range.npy"


def _damage_pose_keys(room):
    (room / "input" / "pose_0002.json").write_text(json.dumps({"pos": [0, 0, 0], "quat": [1, 0, 0, 0]}))
    return "input/pose_0002.json"


def _damage_pose_norm(room):
    (room / "input" / "pose_0004.json").write_text(
        json.dumps({"position": [0, 0, 0], "rotation_quaternion": [0.9, 0.1, 0, 0]})
    )
    return "input/pose_0004.json"


def _damage_not_2to1(room):
    _write_png(room / "output" / "panorama_0000.png", np.zeros((32, 48, 3), np.uint8))
    return "output/panorama_0000.png"


def _damage_size_mismatch(room):
    _write_png(room / "output" / "panorama_0003.png", np.zeros((16, 32, 3), np.uint8))
    return "output/panorama_0003.png"


def _damage_depth_shape(room):
    np.save(room / "output" / "panorama_0001_depth.npy", np.ones((32, 64, 3), np.float32))
    return "output/panorama_0001_depth.npy"


def _damage_depth_dtype(room):
    np.save(room / "output" / "panorama_0001_depth.npy", np.ones((32, 64), np.int32))
    return "output/panorama_0001_depth.npy"


CONSTRUCTION = {
    "missing file": _damage_missing,
    "truncated png": _damage_truncated_png,
    "truncated npy": _damage_truncated_npy,
    "pose wrong keys": _damage_pose_keys,
    "pose non-unit quaternion": _damage_pose_norm,
    "panorama not 2:1": _damage_not_2to1,
    "size mismatch between views": _damage_size_mismatch,
    "depth wrong shape": _damage_depth_shape,
    "depth wrong dtype": _damage_depth_dtype,
}


@pytest.mark.parametrize("damage", CONSTRUCTION.values(), ids=CONSTRUCTION.keys())
def test_found_at_construction(data_copy, damage):
    bad = rooms_of(data_copy)[1]
    file = damage(bad)
    with pytest.raises(RoomError) as err:
        RoomDataset(data_copy, num_frames=5)
    assert str(bad) in str(err.value) and file in str(err.value)
    ds = RoomDataset(data_copy, num_frames=5, skip_bad_rooms=True)
    assert len(ds) == 2 and ds.summary["bad_rooms"] == 1 and ds.summary["bad"][0][0] == str(bad)
    assert all(ds[i].room_id != "/".join(bad.parts[-2:]) for i in range(len(ds)))


def _set_depth(room, name, value, where=None):
    path = room / name
    depth = np.load(path)
    if where is None:
        depth[3, 5] = value
    else:
        depth[where(depth)] = value
    np.save(path, depth)
    return name


READ_TIME = {
    "nan ground truth": lambda r: _set_depth(r, "output/panorama_0002_depth.npy", np.nan),
    "inf ground truth": lambda r: _set_depth(r, "output/panorama_0000_depth.npy", np.inf),
    "negative ground truth": lambda r: _set_depth(r, "output/panorama_0004_depth.npy", -1.0),
    "nan view 0 input": lambda r: _set_depth(r, "input/panorama_0000_depth.npy", np.nan),
    "nan where mask known": lambda r: _set_depth(
        r, "input/pano0000_to_pano0003_depth_range.npy", np.nan, lambda d: d > 0
    ),
    "negative where mask known": lambda r: _set_depth(
        r, "input/pano0000_to_pano0003_depth_range.npy", -2.0, lambda d: d > 3
    ),
}


@pytest.mark.parametrize("damage", READ_TIME.values(), ids=READ_TIME.keys())
def test_found_when_reading(data_copy, damage):
    bad = rooms_of(data_copy)[0]
    file = damage(bad)
    ds = RoomDataset(data_copy, num_frames=5)
    with pytest.raises(RoomError) as err:
        ds[0]
    assert str(bad) in str(err.value) and file in str(err.value)
    ds[1]  # the other rooms still load


def _invert_masks(room):
    for v in discover_views(room)[1:]:
        path = room / "input" / f"pano0000_to_pano{v:04d}_mask.png"
        _write_png(path, 255 - cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))


def test_inverted_mask_is_refused_and_hole_polarity_accepts_it(data_copy, prepared_root):
    bad = rooms_of(data_copy)[0]
    _invert_masks(bad)
    with pytest.raises(RoomError, match="inverted") as err:
        RoomDataset(data_copy, num_frames=5)[0]
    assert "_mask.png" in str(err.value) and str(bad) in str(err.value)
    flipped = RoomDataset(data_copy, num_frames=5, mask_polarity="hole")[0]
    original = RoomDataset(prepared_root, num_frames=5)[0]
    for name in ("mask", "cond_rgb", "cond_depth", "depth"):
        assert (getattr(flipped, name) == getattr(original, name)).all(), name


def test_masks_are_optional(data_copy, prepared_root):
    for f in rooms_of(data_copy)[0].glob("input/*_mask.png"):
        f.unlink()
    without = RoomDataset(data_copy, num_frames=5)[0]
    original = RoomDataset(prepared_root, num_frames=5)[0]
    assert (without.mask == original.mask).all() and (without.cond_depth == original.cond_depth).all()


def test_io_errors_name_the_file(tmp_path):
    png = tmp_path / "a.png"
    _write_png(png, np.full((8, 16, 3), 7, np.uint8))
    assert png_header(png) == (8, 16) and read_rgb(png, (8, 16)).shape == (8, 16, 3)
    with pytest.raises(ValueError, match="differs"):
        read_rgb(png, (8, 8))
    data = bytearray(png.read_bytes())
    data[40:60] = bytes(20)  # corrupt the image data but keep the file's end intact
    png.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"a\.png"):
        read_rgb(png)
    grey = tmp_path / "m.png"
    _write_png(grey, np.array([[0, 128], [255, 0]], np.uint8))
    with pytest.raises(ValueError, match="not binary"):
        read_mask(grey)
    npy = tmp_path / "d.npy"
    np.save(npy, np.ones((4, 8), np.float64))
    assert npy_header(npy) == ((4, 8), np.dtype(np.float64)) and read_depth(npy).dtype == np.float32
    np.save(npy, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="objects"):
        read_depth(npy)
    for path in (tmp_path / "none.png", tmp_path / "none.npy"):
        with pytest.raises(ValueError, match="missing"):
            (read_rgb if path.suffix == ".png" else read_depth)(path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.png"):
        read_rgb(tmp_path / "empty.png")


def test_scan_and_discovery(data_copy):
    assert scan_rooms(data_copy) == rooms_of(data_copy)
    room = rooms_of(data_copy)[2]
    assert discover_views(room) == list(range(6))
    (room / "input" / "pose_0005.json").unlink()
    with pytest.raises(RoomError, match=r"pose_0005\.json"):
        discover_views(room)
    with pytest.raises(ValueError, match="not a directory"):
        scan_rooms(data_copy / "nowhere")
