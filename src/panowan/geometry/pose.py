"""Camera poses: quaternions, rotation matrices, the pose JSON of the data layout, relative poses.

Convention (NOTES.md): a pose JSON holds `{"position": [x, y, z], "rotation_quaternion": [w, x, y, z]}`.
`position` is the camera centre in world coordinates; the quaternion rotates **world into camera**
coordinates. Hence for a world point X:  X_cam = R (X - position),  and a camera ray d_cam points
along d_world = R^T d_cam from `position`.

Users whose files differ say so explicitly through `PoseFormat`; nothing is guessed.

Hostile or broken pose files are refused with a `ValueError` that names the file (`load_pose`): missing
keys, duplicate keys, components that are not JSON numbers (strings, booleans, null), NaN / inf, the zero
quaternion, a quaternion whose norm is off 1 by more than `PoseFormat.unit_tolerance`, files that are not
UTF-8 JSON, directories, and files over `MAX_POSE_FILE_BYTES`. A quaternion within the tolerance is
normalised: silently when it is unit up to `QUATERNION_ROUNDING` (float32 round-off of a written unit
quaternion), with a warning naming the file otherwise.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

MAX_POSE_FILE_BYTES = 1 << 20
"""A pose JSON is about 100 bytes; a file over 1 MiB is refused unread (a wrong file, or a hostile one)."""

QUATERNION_ROUNDING = 1e-6
"""A quaternion whose norm is off 1 by at most this is normalised silently (float32 round-off is ~1e-7);
up to `PoseFormat.unit_tolerance` it is normalised with a warning; beyond, refused."""


def quaternion_to_matrix(q_wxyz: torch.Tensor) -> torch.Tensor:
    """Unit quaternions `[..., 4]` in (w, x, y, z) order -> rotation matrices `[..., 3, 3]`."""
    w, x, y, z = q_wxyz.unbind(-1)
    rows = (
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    )  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*q_wxyz.shape[:-1], 3, 3)


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrices `[..., 3, 3]` -> unit quaternions `[..., 4]` (w, x, y, z) with w >= 0.

    Uses the numerically best of the four Shepperd candidates per matrix.
    """
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # Four candidates, each accurate when its leading component is large.
    cands = torch.stack(
        (
            torch.stack((1 + m00 + m11 + m22, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]), -1),
            torch.stack((m[..., 2, 1] - m[..., 1, 2], 1 + m00 - m11 - m22, m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]), -1),
            torch.stack((m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m00 + m11 - m22, m[..., 1, 2] + m[..., 2, 1]), -1),
            torch.stack((m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 - m00 - m11 + m22), -1),
        ),
        dim=-2,
    )  # fmt: skip
    lead = torch.stack(
        (1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22), -1
    )
    best = lead.argmax(dim=-1, keepdim=True)
    q = torch.gather(cands, -2, best.unsqueeze(-1).expand(*best.shape[:-1], 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def yaw_matrix(angle: float | torch.Tensor, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Rotation by `angle` radians about the camera y axis (down), as a 3x3 matrix.

    In the ERP convention a camera-frame rotation by `yaw_matrix(a)` moves content by +a in longitude.
    """
    a = torch.as_tensor(angle, dtype=dtype)
    c, s = torch.cos(a), torch.sin(a)
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    return torch.stack((c, zero, s, zero, one, zero, -s, zero, c), -1).reshape(*a.shape, 3, 3)


@dataclass(frozen=True)
class Pose:
    """A camera pose: `rotation` (3x3, world -> camera) and `position` (3, camera centre in world)."""

    rotation: torch.Tensor
    position: torch.Tensor

    def __post_init__(self) -> None:
        if self.rotation.shape[-2:] != (3, 3) or self.position.shape[-1:] != (3,):
            raise ValueError(
                f"Pose needs rotation [...,3,3] and position [...,3]; got {tuple(self.rotation.shape)}, {tuple(self.position.shape)}"
            )

    @staticmethod
    def identity(dtype: torch.dtype = torch.float64) -> Pose:
        return Pose(torch.eye(3, dtype=dtype), torch.zeros(3, dtype=dtype))

    def world_to_camera(self, points_N3: torch.Tensor) -> torch.Tensor:
        return (points_N3 - self.position) @ self.rotation.transpose(-1, -2)

    def camera_to_world(self, points_N3: torch.Tensor) -> torch.Tensor:
        return points_N3 @ self.rotation + self.position

    def relative_to(self, reference: Pose) -> Pose:
        """This pose expressed in `reference`'s camera frame (so `reference` becomes the identity)."""
        r_ref = reference.rotation
        return Pose(
            self.rotation @ r_ref.transpose(-1, -2),
            (self.position - reference.position) @ r_ref.transpose(-1, -2),
        )

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Pose:
        return Pose(
            self.rotation.to(device=device, dtype=dtype), self.position.to(device=device, dtype=dtype)
        )


def stack_poses(poses: list[Pose]) -> Pose:
    """A list of poses -> one Pose with a leading view dimension (`rotation_F33`, `position_F3`)."""
    return Pose(torch.stack([p.rotation for p in poses]), torch.stack([p.position for p in poses]))


@dataclass(frozen=True)
class PoseFormat:
    """How a user's pose JSON is written. The defaults are the layout of NOTES.md."""

    position_key: str = "position"
    """Key of the camera centre [x, y, z] in world coordinates."""
    rotation_key: str = "rotation_quaternion"
    """Key of the rotation quaternion."""
    quaternion_order: Literal["wxyz", "xyzw"] = "wxyz"
    """Component order of the stored quaternion."""
    direction: Literal["world_to_camera", "camera_to_world"] = "world_to_camera"
    """What the stored rotation maps: world into camera (the data's convention) or camera into world."""
    unit_tolerance: float = 1e-3
    """A quaternion whose norm differs from 1 by more than this is refused (not silently normalised)."""
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.quaternion_order not in ("wxyz", "xyzw"):
            raise ValueError(f"quaternion_order must be 'wxyz' or 'xyzw', not {self.quaternion_order!r}")
        if self.direction not in ("world_to_camera", "camera_to_world"):
            raise ValueError(
                f"direction must be 'world_to_camera' or 'camera_to_world', not {self.direction!r}"
            )


def _numbers(value, n: int, path: Path, key: str) -> list[float]:
    """`n` finite JSON numbers. Strings ("1.0"), booleans and null are refused, not converted: a pose
    written that way comes from a broken exporter, and `float(True) == 1.0` would hide it."""
    if not isinstance(value, list | tuple) or len(value) != n:
        raise ValueError(f"{path}: '{key}' must be a list of {n} numbers, got {value!r}")
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in value):
        raise ValueError(f"{path}: '{key}' must be a list of {n} numbers, got {value!r}")
    try:
        out = [float(x) for x in value]
    except OverflowError:  # an integer too large for a float (10**400): as non-finite as inf
        raise ValueError(f"{path}: '{key}' has a non-finite value: {value!r}") from None
    if not all(math.isfinite(x) for x in out):
        raise ValueError(f"{path}: '{key}' has a non-finite value: {value!r}")
    return out


def _unit_quaternion(q: list[float], fmt: PoseFormat, path: Path) -> list[float]:
    """`q` normalised, or ValueError naming the file (zero quaternion, norm off 1 beyond the tolerance)."""
    norm = math.sqrt(sum(x * x for x in q))
    if norm == 0.0:
        raise ValueError(f"{path}: '{fmt.rotation_key}' is the zero quaternion {q}, which is no rotation")
    if abs(norm - 1.0) > fmt.unit_tolerance:  # refused, not normalised: a wrong scale is a broken file
        raise ValueError(
            f"{path}: '{fmt.rotation_key}' is not a unit quaternion (norm {norm:.6f}, allowed 1 +- "
            f"{fmt.unit_tolerance:g}, PoseFormat.unit_tolerance)"
        )
    if abs(norm - 1.0) > QUATERNION_ROUNDING:
        warnings.warn(f"{path}: '{fmt.rotation_key}' has norm {norm:.6f}, not 1; normalised", stacklevel=3)
    return [x / norm for x in q]


def parse_pose(obj: dict, fmt: PoseFormat = PoseFormat(), path: str | os.PathLike = "<pose>") -> Pose:
    """A decoded pose JSON object -> Pose (world -> camera rotation, float64)."""
    path = Path(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: a pose must be a JSON object, got {type(obj).__name__}")
    for key in (fmt.position_key, fmt.rotation_key):
        if key not in obj:
            raise ValueError(
                f"{path}: missing key '{key}' (found {sorted(obj)}); set the pose format "
                f"(--pose_position_key/--pose_rotation_key) if your files name it differently"
            )
    position = _numbers(obj[fmt.position_key], 3, path, fmt.position_key)
    q = _numbers(obj[fmt.rotation_key], 4, path, fmt.rotation_key)
    if fmt.quaternion_order == "xyzw":
        q = [q[3], q[0], q[1], q[2]]
    rotation = quaternion_to_matrix(torch.tensor(_unit_quaternion(q, fmt, path), dtype=torch.float64))
    position_t = torch.tensor(position, dtype=torch.float64)
    if fmt.direction == "camera_to_world":
        rotation = rotation.T.contiguous()
    return Pose(rotation, position_t)


def load_pose(path: str | os.PathLike, fmt: PoseFormat = PoseFormat()) -> Pose:
    """Read one pose JSON file, with errors that name the file (the refusals: this module's docstring)."""
    path = Path(path)
    try:
        if (size := path.stat().st_size) > MAX_POSE_FILE_BYTES:
            raise ValueError(f"{path}: pose file is {size} bytes, over the {MAX_POSE_FILE_BYTES}-byte limit")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: pose file is missing") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not a pose file") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: pose file is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ValueError(f"{path}: pose file cannot be read ({e.strerror or e})") from None
    try:
        obj = json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    except _DuplicateKey as e:
        raise ValueError(f"{path}: key '{e.args[0]}' appears twice (JSON keeps the last silently)") from None
    return parse_pose(obj, fmt, path)


class _DuplicateKey(Exception):
    """A JSON object with a repeated key (json.loads would keep the last one without a word)."""


def _refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def pose_to_json(pose: Pose) -> dict:
    """Pose -> the JSON object of the data layout (world -> camera quaternion, w x y z)."""
    q = matrix_to_quaternion(pose.rotation.to(torch.float64))
    return {"position": [float(x) for x in pose.position], "rotation_quaternion": [float(x) for x in q]}


def relative_poses(poses: Pose, ref_index: int = 0) -> Pose:
    """F-stacked poses (`rotation_F33`, `position_F3`) expressed in view `ref_index`'s camera frame.

    The reference view becomes the identity; every other view keeps its pose relative to it.
    """
    if poses.rotation.dim() != 3:
        shape = tuple(poses.rotation.shape)
        raise ValueError(f"relative_poses needs F-stacked poses (rotation [F,3,3]); got {shape}")
    count = poses.rotation.shape[0]
    if not -count <= ref_index < count:
        raise ValueError(f"ref_index {ref_index} is out of range for {count} poses")
    reference = Pose(poses.rotation[ref_index], poses.position[ref_index])
    return poses.relative_to(reference)
