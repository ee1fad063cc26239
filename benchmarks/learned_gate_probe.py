r"""Probe: can a *learned* choice between the room-shell fill's two parts beat the fill on held-out rooms?

    python benchmarks/learned_gate_probe.py --train_root TRAIN --eval_roots HARD1 HARD2 ... --json OUT.json

Why: `hole_oracles.py` says the room-shell fill's weakest decision is per hole pixel "does it show the shell, or a
hidden side of furniture?" (its `true_gate` oracle, the fill with the true answer as its weight, is 0.9 dB above
it on seed 920001). The fill decides with two rules (`data.room_shell.shell_view`: the membrane of the known
pixels' "on the shell" indicator, zeroed where the depth-steered range is in front of the shell). This probe
replaces the rules by a small MLP per hole pixel, trained on the ground truth of other rooms, and keeps both
candidates as they are: out = q S + (1 - q) H, S the shell surface's membrane (`fill_by_label`), H the harmonic
fill, q = sigmoid(MLP(features)). Loss: the colour's squared error (what hole PSNR measures), each view's hole
pixels weighted 1 / its hole size (the benchmark averages per view). No scene labels are used: any prepared rooms
with ground truth train it. CPU; features of 32 rooms of 9 views take about a minute on 2 cores, training seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

from panowan.data import room_shell as rs
from panowan.data.dataset import validate_room
from panowan.data.io import read_rgb
from panowan.data.layout import scan_rooms
from panowan.eval.baselines import read_condition
from panowan.geometry.erp import erp_directions_N3

FEATURES = ("p", "in_front", "p_shell", "log_steered_over_cast", "log_steered", "log_cast", "ray_y", "floor",
            "ceiling", "wall", "no_surface", "distance_to_known", "shell_minus_harmonic")  # fmt: skip


def view_features(info, shell: rs.RoomShell, view: int) -> dict | None:
    """One target view's hole pixels: features `N,F`, the two candidates and the truth `N,3`, the fill's own."""
    rgb, rng, known = read_condition(info, view)
    if known.all():
        return None
    h, w = known.shape
    pose = info.poses[info.views.index(view)]
    sv = rs.shell_view(rgb, np.where(known, rng, 0.0), known, pose, shell)
    shell_rgb, hole = rs.fill_by_label(sv.harmonic, known, sv.label), ~known
    cast = np.where(np.isfinite(sv.cast_range), sv.cast_range, 50.0)
    ray_y = (erp_directions_N3(h, w) @ pose.rotation.double().numpy())[:, 1].reshape(h, w)
    lab = sv.label
    f = np.stack([sv.p, sv.in_front, sv.p_shell, np.clip(np.log(sv.steered / cast), -3, 3), np.log(sv.steered),
                  np.log(cast), ray_y, lab == rs.FLOOR, lab == rs.CEILING, lab >= 2, lab < 0,
                  cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 5) / h,
                  np.abs(shell_rgb - sv.harmonic).sum(-1) / 255], -1).astype(np.float32)  # fmt: skip
    p = sv.p[..., None]
    gt = read_rgb(info.paths.gt_rgb(view), info.size, info.paths.root)
    return {"f": f[hole], "S": shell_rgb[hole], "H": sv.harmonic[hole], "gt": gt[hole].astype(np.float64),
            "room_shell": (p * shell_rgb + (1 - p) * sv.harmonic)[hole]}  # fmt: skip


def room_views(room: str) -> list[dict]:
    info = validate_room(room)
    shell = rs.fit_room(info)
    return [r for v in info.views[1:] if (r := view_features(info, shell, v)) is not None]


def load(root: str, workers: int) -> list[dict]:
    rooms = [str(r) for r in scan_rooms(root)]
    if not rooms:
        raise SystemExit(f"{root}: no rooms")
    if workers <= 1:
        return [v for room in rooms for v in room_views(room)]
    with ProcessPoolExecutor(workers) as pool:
        return [v for views in pool.map(room_views, rooms) for v in views]


def psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(10 * np.log10(1 / max((((pred - gt) / 255) ** 2).mean(), 1e-10)))


def train(views: list[dict], steps: int, width: int, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """The gate q(features) in [0, 1], `N,1`, trained on `views`' hole pixels."""
    torch.manual_seed(seed)
    cat = {k: torch.from_numpy(np.concatenate([v[k] for v in views])).float() for k in ("f", "S", "H", "gt")}
    sizes = torch.tensor([len(v["f"]) for v in views])
    starts = torch.cumsum(sizes, 0) - sizes
    mu, sd = cat["f"].mean(0), cat["f"].std(0) + 1e-6
    net = torch.nn.Sequential(torch.nn.Linear(len(FEATURES), width), torch.nn.SiLU(), torch.nn.Linear(width, width),
                              torch.nn.SiLU(), torch.nn.Linear(width, 1))  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    # a view drawn uniformly, then one of its hole pixels: each view weighs the same, as in the benchmark's mean
    g = torch.Generator().manual_seed(seed)
    view = torch.randint(len(views), (steps, 8192), generator=g)
    batches = starts[view] + (torch.rand(steps, 8192, generator=g, dtype=torch.float64) * sizes[view]).long()
    for idx in batches:
        q = torch.sigmoid(net((cat["f"][idx] - mu) / sd))
        loss = (((q * cat["S"][idx] + (1 - q) * cat["H"][idx] - cat["gt"][idx]) / 255) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return lambda f: torch.sigmoid(net((torch.from_numpy(f) - mu) / sd)).detach().numpy()


def evaluate(gate, views: list[dict]) -> dict[str, float]:
    """Mean hole PSNR over the views: the fill, the learned gate, the harmonic fill, and the better of the two
    candidates per pixel (the most a gate of 0 or 1 can reach)."""
    rows = []
    for v in views:
        q = gate(v["f"])
        s_better = (((v["S"] - v["gt"]) ** 2).sum(-1) < ((v["H"] - v["gt"]) ** 2).sum(-1))[:, None]
        rows.append({"room_shell": psnr(v["room_shell"], v["gt"]), "learned_gate": psnr(q * v["S"] + (1 - q) * v["H"], v["gt"]),
                     "harmonic": psnr(v["H"], v["gt"]), "best_candidate": psnr(np.where(s_better, v["S"], v["H"]), v["gt"])})  # fmt: skip
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"views": len(rows)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train_root", required=True, help="prepared rooms with ground truth to train on")
    p.add_argument("--eval_roots", nargs="+", required=True, help="prepared held-out room sets")
    p.add_argument("--steps", type=int, default=3000, help="Adam steps of 8192 hole pixels")
    p.add_argument("--width", type=int, default=64, help="MLP hidden width")
    p.add_argument("--seed", type=int, default=0, help="initialisation and sampling seed")
    p.add_argument("--workers", type=int, default=2, help="processes that compute the features")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    train_views = load(args.train_root, args.workers)
    # every set's features before training: forking workers after torch's threads have run can hang
    held_out = {root: load(root, args.workers) for root in args.eval_roots}
    gate = train(train_views, args.steps, args.width, args.seed)
    result = {"train": evaluate(gate, train_views), "held_out": {r: evaluate(gate, v) for r, v in held_out.items()},
              "features": FEATURES, "command": " ".join(["python", *sys.argv])}  # fmt: skip
    print(json.dumps({k: result[k] for k in ("train", "held_out")}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
