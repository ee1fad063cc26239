"""Hostile pose files (issue 21, part C): each refused with a ValueError naming the file and the problem, or
(a quaternion off unit length within the tolerance) normalised with a warning naming the file.

Missing keys, wrong lengths and a NaN position: tests/geometry/test_geometry_erp_pose.py.
"""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from panowan.geometry.pose import (
    MAX_POSE_FILE_BYTES,
    QUATERNION_ROUNDING,
    PoseFormat,
    load_pose,
    quaternion_to_matrix,
)

Q = [0.9, 0.3, -0.3, 0.1]
UNIT_Q = [x / math.sqrt(sum(y * y for y in Q)) for x in Q]


def write(tmp_path, text: str, name: str = "pose_0007.json"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def pose_text(position="[1, 2, 3]", quaternion=None) -> str:
    quaternion = quaternion or json.dumps(UNIT_Q)
    return f'{{"position": {position}, "rotation_quaternion": {quaternion}}}'


REFUSED = {
    "zero quaternion": (pose_text(quaternion="[0, 0, 0, 0]"), "is the zero quaternion"),
    "norm 1.01": (
        pose_text(quaternion=json.dumps([1.01, 0, 0, 0])),
        r"not a unit quaternion \(norm 1\.010000",
    ),
    "norm 0.5": (pose_text(quaternion=json.dumps([0.5, 0, 0, 0])), r"not a unit quaternion \(norm 0\.500000"),
    "inf position": (pose_text(position="[0, Infinity, 0]"), "'position' has a non-finite value"),
    "nan quaternion": (pose_text(quaternion="[NaN, 0, 0, 1]"), "'rotation_quaternion' has a non-finite"),
    "-inf quaternion": (
        pose_text(quaternion="[1, -Infinity, 0, 0]"),
        "'rotation_quaternion' has a non-finite",
    ),
    "string numbers": (pose_text(position='["1", "2", "3"]'), "'position' must be a list of 3 numbers"),
    "booleans": (pose_text(quaternion="[true, false, false, false]"), "must be a list of 4 numbers"),
    "null": (pose_text(position="[0, null, 0]"), "'position' must be a list of 3 numbers"),
    "nested list": (pose_text(position="[[0], [1], [2]]"), "'position' must be a list of 3 numbers"),
    "huge integer": (pose_text(position="[0, 1" + "0" * 400 + ", 0]"), "'position' has a non-finite value"),
    "duplicate key": (
        '{"position": [0, 0, 0], "position": [5, 5, 5], "rotation_quaternion": [1, 0, 0, 0]}',
        "key 'position' appears twice",
    ),
    "top-level list": ("[1, 0, 0, 0]", "a pose must be a JSON object"),
    "truncated json": (pose_text()[:-9], "not valid JSON"),
}


@pytest.mark.parametrize("text, problem", REFUSED.values(), ids=REFUSED.keys())
def test_hostile_pose_is_refused_naming_the_file(tmp_path, text, problem):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=problem) as err:
        load_pose(path)
    assert str(err.value).startswith(f"{path}: "), str(err.value)


def test_quaternion_within_tolerance_is_normalised_with_a_warning(tmp_path):
    scale = 1 + 5e-4  # inside the default 1e-3 tolerance, far above float32 round-off
    path = write(tmp_path, pose_text(quaternion=json.dumps([scale * x for x in UNIT_Q])))
    with pytest.warns(UserWarning, match=r"pose_0007\.json: 'rotation_quaternion' has norm 1\.000500, not 1"):
        pose = load_pose(path)
    want = quaternion_to_matrix(torch.tensor(UNIT_Q, dtype=torch.float64))
    assert torch.allclose(pose.rotation, want, atol=1e-12)
    assert torch.allclose(pose.rotation @ pose.rotation.T, torch.eye(3, dtype=torch.float64), atol=1e-12)


def test_round_off_is_normalised_silently_and_the_tolerance_is_a_setting(tmp_path):
    path = write(
        tmp_path, pose_text(quaternion=json.dumps([(1 + QUATERNION_ROUNDING / 2) * x for x in UNIT_Q]))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        load_pose(path)
    loose = write(tmp_path, pose_text(quaternion=json.dumps([1.01, 0, 0, 0])), "loose.json")
    with pytest.warns(UserWarning, match=r"loose\.json.*norm 1\.010000"):
        load_pose(loose, PoseFormat(unit_tolerance=0.05))
    with pytest.raises(ValueError, match=r"loose\.json.*not a unit quaternion"):
        load_pose(loose)


def test_unreadable_pose_files_name_the_file(tmp_path):
    folder = tmp_path / "pose_0001.json"
    folder.mkdir()
    with pytest.raises(ValueError, match=r"pose_0001\.json: is a directory"):
        load_pose(folder)
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"position": [0, 0, 0], "rotation_quaternion": [1, 0, 0, 0], "note": "caf\xe9"}')
    with pytest.raises(ValueError, match=r"latin\.json: pose file is not UTF-8 text"):
        load_pose(latin)
    big = tmp_path / "big.json"
    big.write_text(" " * MAX_POSE_FILE_BYTES + "x")
    with pytest.raises(ValueError, match=rf"big\.json: pose file is {MAX_POSE_FILE_BYTES + 1}"):
        load_pose(big)
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "gone.json")
    with pytest.raises(ValueError, match=r"dangling\.json: pose file is missing"):
        load_pose(dangling)
