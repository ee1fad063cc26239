"""Training the shell gate (`data.shell_gate`) on the hole pixels of prepared rooms with ground truth.

Loss: the colour's squared error of the gate's mix against the ground truth (what hole PSNR measures), and the
range's relative error (what AbsRel measures), each on its own head. Every step draws a view uniformly, then one
of its hole pixels, so each view weighs the same, as in the benchmarks' mean over views.
"""

from __future__ import annotations

import zlib
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch

from panowan.data import room_shell as rs
from panowan.data.dataset import validate_room
from panowan.data.io import read_depth, read_rgb
from panowan.data.layout import scan_rooms
from panowan.data.shell_gate import ShellGate, gate_inputs
from panowan.eval.baselines import read_condition


def view_hole_pixels(info, shell: rs.RoomShell, view: int, candidates: tuple[str, ...] = ("S", "H"),
                     context: bool = False) -> dict[str, np.ndarray] | None:  # fmt: skip
    """One target view's hole pixels (None if it has none): features "f" `N,F`, colour candidates "C" `N,K,3`,
    truth "gt" `N,3`, range candidates "C_range" `N,2`, true range "gt_range" `N`, and the room-shell fill's own
    colour "room_shell" `N,3` and range "room_shell_range" `N` (its weight `p` on the candidates S and H)."""
    rgb, rng, known = read_condition(info, view)
    if known.all():
        return None
    pose = info.poses[info.views.index(view)]
    x = gate_inputs(rgb, np.where(known, rng, 0.0), known, pose, shell, candidates, context)
    hole, p = ~known, x.sv.p[~known][:, None]
    c = x.rgb_HWK3[hole]
    gt = read_rgb(info.paths.gt_rgb(view), info.size, info.paths.root)
    gt_range = read_depth(info.paths.gt_depth(view), info.size, info.paths.root)
    return {"f": x.features_HWF[hole], "C": c, "gt": gt[hole].astype(np.float64), "C_range": x.range_HW2[hole],
            "gt_range": gt_range[hole].astype(np.float64), "room_shell": p * c[:, 0] + (1 - p) * c[:, 1],
            "room_shell_range": rs.shell_range(x.sv)[hole]}  # fmt: skip


def room_hole_pixels(room: str | Path, candidates: tuple[str, ...] = ("S", "H"), context: bool = False,
                     pixels: int | None = None) -> list[dict[str, np.ndarray]]:  # fmt: skip
    """`view_hole_pixels` of every target view of `room` with a hole, float32; with `pixels`, at most that many
    hole pixels of each (a fixed random subset, seeded by the room's folder name and the view)."""
    info = validate_room(room)
    shell = rs.fit_room(info)
    out = []
    for v in info.views[1:]:
        if (row := view_hole_pixels(info, shell, v, candidates, context)) is None:
            continue
        if pixels is not None and len(row["f"]) > pixels:
            rng = np.random.default_rng(zlib.crc32(f"{Path(room).name}/{v}".encode()))
            keep = np.sort(rng.choice(len(row["f"]), pixels, replace=False))
            row = {k: a[keep] for k, a in row.items()}
        out.append({k: a.astype(np.float32) for k, a in row.items()})
    return out


def data_root_hole_pixels(root: str | Path, candidates: tuple[str, ...] = ("S", "H"), context: bool = False,
                          pixels: int | None = None, workers: int = 1) -> list[dict[str, np.ndarray]]:  # fmt: skip
    """`room_hole_pixels` of every room under `root`, in `workers` processes (call before torch has run threads:
    forking then can hang)."""
    rooms = [str(r) for r in scan_rooms(root)]
    if not rooms:
        raise ValueError(f"{root}: no rooms")
    one_room = partial(room_hole_pixels, candidates=candidates, context=context, pixels=pixels)
    if workers <= 1:
        return [v for room in rooms for v in one_room(room)]
    with ProcessPoolExecutor(workers) as pool:
        return [v for views in pool.map(one_room, rooms) for v in views]


def fit_shell_gate(views: list[dict[str, np.ndarray]], candidates: tuple[str, ...] = ("S", "H"),
                   context: bool = False, *, steps: int = 3000, width: int = 64, batch: int = 8192,
                   lr: float = 3e-3, seed: int = 0, device: str = "cpu") -> ShellGate:  # fmt: skip
    """A `ShellGate` fitted to the hole pixels `views` (`room_hole_pixels` of the same candidates and context) on
    `device`, returned on the CPU; the sampling is drawn on the CPU, so a device changes only the arithmetic."""
    if not views:
        raise ValueError("no training views with holes")
    torch.manual_seed(seed)
    gate = ShellGate(tuple(candidates), context, width)
    cat = {k: torch.from_numpy(np.concatenate([v[k] for v in views])).float().to(device)
           for k in ("f", "C", "gt", "C_range", "gt_range")}  # fmt: skip
    if cat["f"].shape[1] != gate.mean.numel() or cat["C"].shape[1] != len(candidates):
        raise ValueError(f"features {tuple(cat['f'].shape[1:])} / candidates {cat['C'].shape[1]} do not match "
                         f"the gate's {gate.mean.numel()} / {len(candidates)}")  # fmt: skip
    gate.mean.copy_(cat["f"].mean(0))
    gate.std.copy_(cat["f"].std(0) + 1e-6)
    gate.to(device)
    sizes = torch.tensor([len(v["f"]) for v in views])
    starts = torch.cumsum(sizes, 0) - sizes
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(gate.parameters(), lr)
    for _ in range(steps):
        view = torch.randint(len(views), (batch,), generator=g)
        idx = (starts[view] + (torch.rand(batch, generator=g, dtype=torch.float64) * sizes[view]).long()).to(
            device
        )
        q_rgb, q_range = gate(cat["f"][idx])
        rgb = (q_rgb[..., None] * cat["C"][idx]).sum(1)
        rng, gt_range = (q_range * cat["C_range"][idx]).sum(1), cat["gt_range"][idx]
        valid = torch.isfinite(gt_range) & (gt_range > 0)  # a scan's ground truth may have holes of its own
        range_error = torch.where(valid, (rng - gt_range).abs() / torch.where(valid, gt_range, 1), 0)
        loss = (((rgb - cat["gt"][idx]) / 255) ** 2).mean() + range_error.sum() / valid.sum().clamp(min=1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return gate.cpu().eval()
