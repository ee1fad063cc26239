"""The learned shell gate: the room-shell fill's candidates mixed per hole pixel by a small MLP trained on rooms.

Why: the room-shell fill (`data.room_shell`) mixes two candidates of every hole pixel, the membrane of the known
pixels of the surface its ray meets (S) and the harmonic fill (H), by two hand-made rules; its weakest decision is
"does this hole pixel show the shell, or a hidden side of furniture?" (`benchmarks/hole_oracles.py`: the true
answer is worth 0.9 dB on seed 920001). The gate replaces the rules by a softmax over K candidate fills computed
from per-pixel features (the rules' own quantities, the ray, the distance to the known pixels, what the windows
around the pixel hold), and the range likewise over the shell's cast range and the depth-steered one. It needs no
scene labels: any rooms with ground truth train it (`train.shell_gate`).

Candidates (`CANDIDATES`), all `H,W,3` float64 on the 0-255 scale of the input:
- S: the shell surface's membrane (`room_shell.fill_by_label`); H: the harmonic fill;
- F: the membrane of the known furniture pixels only (a hidden side of furniture);
- D: the depth-steered colour (`depth_fill.fill_rgb_on_surface` on the depth-steered range).

Conventions: ERP views, row 0 the top (`geometry.erp`); windows wrap in longitude and mirror at the poles.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config

from panowan.data import room_shell as rs
from panowan.data.depth_fill import fill_rgb_on_surface
from panowan.data.inpaint import cast_like
from panowan.geometry.erp import erp_directions_N3

CANDIDATES = {"S": "the shell surface's membrane (fill_by_label)", "H": "the harmonic fill",
              "F": "the membrane of the known furniture pixels only (a hidden side of furniture)",
              "D": "the depth-steered colour: the membrane of the known pixels whose range agrees with the "
                   "depth-steered range"}  # fmt: skip
"""The colour fills a gate may choose between, per hole pixel; S and H (the room-shell fill's parts) always."""
FEATURES = ("p", "in_front", "p_shell", "log_steered_over_cast", "log_steered", "log_cast", "ray_y", "floor",
            "ceiling", "wall", "no_surface", "distance_to_known", "shell_minus_harmonic")  # fmt: skip
"""The base features; then, with candidates beyond S and H, each one's colour and its distance to H, and S and H's
colours; then, with `context`, the window features (`context_features`)."""
CONTEXT_RADII = (4, 16, 64)
"""Half-sides (pixels) of the windows of the context features."""
RANGE_CANDIDATES = ("cast", "steered")
"""The range candidates: the shell's cast range (the steered one where the ray meets no surface), the steered."""
EMBEDDED_GATE = Path(__file__).resolve().parents[1] / "assets" / "shell_gate.safetensors"


def window_mean(a_HWC: np.ndarray, r: int) -> np.ndarray:
    """The mean over the (2r+1)^2 window of every pixel, wrapping in longitude and mirrored at the poles."""
    padded = np.pad(
        np.pad(a_HWC, ((r, r), (0, 0), (0, 0)), mode="reflect"), ((0, 0), (r, r), (0, 0)), mode="wrap"
    )
    return cv2.blur(padded.astype(np.float32), (2 * r + 1, 2 * r + 1))[r:-r, r:-r].reshape(a_HWC.shape)


def context_features(known_HW: np.ndarray, label_HW: np.ndarray) -> np.ndarray:
    """`H,W,2 len(CONTEXT_RADII)`: per window, the fraction of known pixels and, of those, the fraction on
    furniture; what surrounds a hole pixel beyond its nearest known neighbour."""
    known_furniture = np.stack([known_HW, known_HW & (label_HW == rs.FURNITURE)], -1).astype(np.float32)
    out = []
    for r in CONTEXT_RADII:
        m = window_mean(known_furniture, r)
        out += [m[..., 0], m[..., 1] / np.maximum(m[..., 0], 1e-3)]
    return np.stack(out, -1)


def check_candidates(candidates: tuple[str, ...]) -> None:
    """ValueError unless `candidates` are S and H, then any others of `CANDIDATES` (the gate's layout)."""
    if tuple(candidates[:2]) != ("S", "H") or set(candidates) - set(CANDIDATES):
        raise ValueError(
            f"shell-gate candidates: S and H first, then any of {list(CANDIDATES)}; got {candidates}"
        )


def candidate_fills(rgb_HW3, known_HW, sv: rs.ShellView, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The colour candidates `names` (keys of `CANDIDATES`; S and H always), `H,W,3` float64."""
    out = {"S": rs.fill_by_label(sv.harmonic, known_HW, sv.label), "H": sv.harmonic}
    if "F" in names:  # the hole's pixels and the known furniture share a label, the shell's pixels have none
        out["F"] = rs.fill_by_label(
            sv.harmonic, known_HW, np.where(known_HW & (sv.label != rs.FURNITURE), -2, 0)
        )
    if "D" in names:
        known_rgb = np.where(known_HW[..., None], rgb_HW3, 0).astype(np.float64)
        out["D"] = fill_rgb_on_surface(known_rgb, sv.steered, known_HW)
    return out


@dataclass(frozen=True)
class GateInputs:
    """One view's gate inputs: features `H,W,F`, colour candidates `H,W,K,3`, range candidates `H,W,2`, and the
    room-shell fill's own view (`sv`: its weight `p`, its range `room_shell.shell_range(sv)`)."""

    features_HWF: np.ndarray
    rgb_HWK3: np.ndarray
    range_HW2: np.ndarray
    sv: rs.ShellView


def gate_inputs(rgb_HW3: np.ndarray, range_HW: np.ndarray, known_HW: np.ndarray, pose, shell: rs.RoomShell,
                candidates: tuple[str, ...] = ("S", "H"), context: bool = False) -> GateInputs:  # fmt: skip
    """The gate's inputs of one target view (`range_HW` metres, 0 at unknown pixels; `pose` world -> camera)."""
    check_candidates(candidates)
    h, w = known_HW.shape
    sv = rs.shell_view(rgb_HW3, range_HW, known_HW, pose, shell)
    fills = candidate_fills(rgb_HW3, known_HW, sv, candidates)
    cast = np.where(np.isfinite(sv.cast_range), sv.cast_range, 50.0)
    ray_y = (erp_directions_N3(h, w) @ pose.rotation.double().numpy())[:, 1].reshape(h, w)
    lab, hole = sv.label, ~known_HW
    f = np.stack([sv.p, sv.in_front, sv.p_shell, np.clip(np.log(sv.steered / cast), -3, 3), np.log(sv.steered),
                  np.log(cast), ray_y, lab == rs.FLOOR, lab == rs.CEILING, lab >= 2, lab < 0,
                  cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 5) / h,
                  np.abs(fills["S"] - sv.harmonic).sum(-1) / 255], -1).astype(np.float32)  # fmt: skip
    extra = [a for k in candidates[2:] for a in (fills[k] / 255, np.abs(fills[k] - sv.harmonic).sum(-1, keepdims=True) / 255)]  # fmt: skip
    if extra:
        f = np.concatenate([f, *extra, fills["S"] / 255, sv.harmonic / 255], -1).astype(np.float32)
    if context:
        f = np.concatenate([f, context_features(known_HW, lab)], -1)
    ranges = np.stack([np.where(np.isfinite(sv.cast_range), sv.cast_range, sv.steered), sv.steered], -1)
    return GateInputs(f, np.stack([fills[k] for k in candidates], 2), ranges, sv)


def feature_count(n_candidates: int, context: bool) -> int:
    """The length of `gate_inputs`' features for `n_candidates` colour candidates."""
    extra = 4 * (n_candidates - 2) + (6 if n_candidates > 2 else 0)
    return len(FEATURES) + extra + (2 * len(CONTEXT_RADII) if context else 0)


class ShellGate(torch.nn.Module, ConfigMixin):
    """Softmax weights of the colour candidates and of the range candidates from the features of hole pixels.

    candidates: the colour candidates' names (`CANDIDATES`, S and H first); context: the features include the
    window features; width: hidden width of the two MLPs (two SiLU layers each). The features are standardised by
    the buffers `mean`/`std`, set from the training pixels (`train.shell_gate`). diffusers' `ConfigMixin` keeps the
    config (`register_to_config`); the file is one safetensors file (`save`), not a diffusers folder, so that the
    embedded gate is a single package asset."""

    config_name = "shell_gate_config.json"

    @register_to_config
    def __init__(
        self, candidates: tuple[str, ...] = ("S", "H"), context: bool = False, width: int = 64
    ) -> None:
        super().__init__()
        check_candidates(candidates)
        n = feature_count(len(candidates), context)
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("std", torch.ones(n))
        self.rgb_head, self.range_head = (
            self._mlp(n, width, len(candidates)),
            self._mlp(n, width, len(RANGE_CANDIDATES)),
        )

    @staticmethod
    def _mlp(n_in: int, width: int, n_out: int) -> torch.nn.Sequential:
        silu = torch.nn.SiLU
        return torch.nn.Sequential(torch.nn.Linear(n_in, width), silu(), torch.nn.Linear(width, width), silu(),
                                   torch.nn.Linear(width, n_out))  # fmt: skip

    def forward(self, features_NF: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(colour weights `N,K`, range weights `N,2` over `RANGE_CANDIDATES`), each row summing to 1."""
        x = (features_NF - self.mean) / self.std
        return torch.softmax(self.rgb_head(x), -1), torch.softmax(self.range_head(x), -1)

    def save(self, path: str | os.PathLike, record: dict | None = None) -> None:
        """One safetensors file (written whole, then renamed): the weights, the config and `record` (how it was
        trained) in its metadata."""
        from safetensors.torch import save_file

        path = Path(path)
        meta = {"config": json.dumps(dict(self.config)), "record": json.dumps(record or {})}
        tmp = path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(tmp), metadata=meta)
        tmp.replace(path)


def load_shell_gate(path: str | os.PathLike | None = None) -> tuple[ShellGate, dict]:
    """(the gate, its training record) from a file `ShellGate.save` wrote; None: the embedded one."""
    from safetensors import safe_open

    path = Path(path or EMBEDDED_GATE)
    if not path.is_file():
        raise ValueError(f"{path}: no such shell-gate file")
    try:
        with safe_open(str(path), "pt") as f:
            meta, weights = f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        config = json.loads(meta["config"])
    except Exception as e:  # a file that is not a shell gate
        raise ValueError(f"{path}: not a shell-gate file ({e})") from e
    keep = {k: v for k, v in config.items() if not k.startswith("_")}
    gate = ShellGate(tuple(keep.pop("candidates")), **keep)
    gate.load_state_dict(weights)
    return gate.eval(), json.loads(meta.get("record", "{}"))


@functools.cache
def embedded_gate() -> ShellGate:
    """The embedded gate, read once per process."""
    return load_shell_gate()[0]


def shell_gate_fill(rgb_HW3: np.ndarray, range_HW: np.ndarray, known_HW: np.ndarray, pose, shell: rs.RoomShell,
                    gate: ShellGate | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(rgb like `rgb_HW3`, range `H,W` float32 metres) with the holes filled by `gate`'s mix of its candidates
    (None: the embedded gate); known pixels keep their values. `range_HW` is 0 at unknown pixels."""
    gate = embedded_gate() if gate is None else gate
    cfg = gate.config
    inputs = gate_inputs(rgb_HW3, range_HW, known_HW, pose, shell, tuple(cfg.candidates), cfg.context)
    hole = ~known_HW
    with torch.no_grad():
        q_rgb, q_range = (q.double().numpy() for q in gate(torch.from_numpy(inputs.features_HWF[hole])))
    rgb = np.where(known_HW[..., None], rgb_HW3, 0).astype(np.float64)
    rgb[hole] = (q_rgb[..., None] * inputs.rgb_HWK3[hole]).sum(1)
    depth = np.where(known_HW, range_HW, 0).astype(np.float64)
    depth[hole] = (q_range * inputs.range_HW2[hole]).sum(1)
    return cast_like(rgb, rgb_HW3.dtype), depth.astype(np.float32)
