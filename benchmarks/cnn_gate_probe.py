r"""Probe: does a gate that sees the whole view beat the per-pixel shell gate?

    python benchmarks/cnn_gate_probe.py --train_root TRAIN --eval_roots HARD1 HARD2 ... --device cuda --json OUT.json

Why: the embedded shell gate (`panowan.data.shell_gate`, a per-pixel MLP) is 0.06-0.40 dB above the room-shell
fill on held-out rooms, while the better of its two candidates per pixel is 1.2-2.0 dB above it: the decision
"shell or furniture" needs the shape around the pixel (where the furniture's silhouette runs), which one pixel's
features do not hold. This probe puts an ERP U-Net (`models.erp_unet.ErpUNet`, the model's pixel-decoder body) on
the view's feature maps (the gate's features, both candidates, the known pixels and mask, and the embedded gate's
own log weights) and adds its output to the embedded gate's logits, so it starts as the embedded gate and learns a
correction. Loss and evaluation as `learned_gate_probe.py` (colour squared error and range relative error over the
hole pixels, each view weighing the same). A probe, not a method of the package.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch

from panowan.data import room_shell as rs
from panowan.data.dataset import validate_room
from panowan.data.io import read_depth, read_rgb
from panowan.data.layout import scan_rooms
from panowan.data.shell_gate import gate_inputs, load_shell_gate
from panowan.eval.baselines import read_condition
from panowan.models.erp_unet import ErpUNet

N_IN = 13 + 6 + 1 + 3 + 2 + 2
"""Input channels: the gate's features (standardised), S and H, the mask, the known colour, the gate's log weights."""


def view_maps(info, shell: rs.RoomShell, view: int, gate) -> dict[str, np.ndarray] | None:
    """One target view's maps, float16 channel-first: "x" `N_IN,H,W`, candidates "C" `2,3,H,W`, "C_range"
    `2,H,W`, "gt" `3,H,W`, "gt_range" `H,W`, "hole" `H,W` (None without a hole)."""
    rgb, rng, known = read_condition(info, view)
    if known.all():
        return None
    pose = info.poses[info.views.index(view)]
    x = gate_inputs(rgb, np.where(known, rng, 0.0), known, pose, shell)
    h, w, n = x.features_HWF.shape
    f = torch.from_numpy(x.features_HWF.reshape(-1, n))
    with torch.no_grad():
        q, qr = gate(f)
    # standardised as the gate's training pixels, bounded (float16 storage; a known pixel's are out of range)
    f = np.where(known[..., None], 0, ((f - gate.mean) / gate.std).numpy().reshape(h, w, n).clip(-10, 10))
    log_q = np.log(np.concatenate([q.numpy(), qr.numpy()], -1).clip(1e-6)).reshape(h, w, 4)
    c = x.rgb_HWK3  # H,W,2,3
    inputs = np.concatenate([f, c[:, :, 0] / 255, c[:, :, 1] / 255, known[..., None],
                             np.where(known[..., None], rgb, 0) / 255, log_q], -1)  # fmt: skip
    gt = read_rgb(info.paths.gt_rgb(view), info.size, info.paths.root)
    gt_range = read_depth(info.paths.gt_depth(view), info.size, info.paths.root)
    return {"x": inputs.transpose(2, 0, 1), "C": c.transpose(2, 3, 0, 1), "C_range": x.range_HW2.clip(0, 1e3).transpose(2, 0, 1),
            "gt": gt.transpose(2, 0, 1).astype(np.float32), "gt_range": gt_range, "hole": ~known,
            "p": x.sv.p, "room_shell_range": rs.shell_range(x.sv).clip(0, 1e3)}  # fmt: skip


def room_maps(room: str, gate_path: str | None) -> list[dict[str, np.ndarray]]:
    gate = load_shell_gate(gate_path)[0]
    torch.set_num_threads(1)
    info = validate_room(room)
    shell = rs.fit_room(info)
    out = []
    for v in info.views[1:]:
        if (m := view_maps(info, shell, v, gate)) is not None:
            out.append({k: a.astype(np.float16) if a.dtype.kind == "f" else a for k, a in m.items()})
    return out


def load(root: str, workers: int, gate_path: str | None) -> list[dict[str, np.ndarray]]:
    rooms = [str(r) for r in scan_rooms(root)]
    one = partial(room_maps, gate_path=gate_path)
    if workers <= 1:
        return [v for r in rooms for v in one(r)]
    with ProcessPoolExecutor(workers) as pool:
        return [v for views in pool.map(one, rooms) for v in views]


def stack(views: list[dict], device: str) -> dict[str, torch.Tensor]:
    keys = ("x", "C", "C_range", "gt", "gt_range", "hole")
    return {k: torch.from_numpy(np.stack([v[k] for v in views])).to(device) for k in keys}


def mix(correction, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(colour `N,3,H,W`, range `N,H,W`) of the gate: the embedded gate's logits plus `correction(x)`'s (the
    U-Net's `body`)."""
    x = b["x"].float()
    logits = x[:, -4:] + correction(x)
    q, qr = torch.softmax(logits[:, :2], 1), torch.softmax(logits[:, 2:], 1)
    rgb = (q[:, :, None] * b["C"].float()).sum(1)
    return rgb, (qr * b["C_range"].float()).sum(1)


def losses(net: ErpUNet, b: dict[str, torch.Tensor]) -> torch.Tensor:
    rgb, rng = mix(net.body, b)
    hole = b["hole"].float()
    n = hole.sum((1, 2)).clamp(min=1)
    mse = ((((rgb - b["gt"].float()) / 255) ** 2).mean(1) * hole).sum((1, 2)) / n
    gt_range = b["gt_range"].float().clamp(min=1e-3)
    rel = ((rng - gt_range).abs() / gt_range * hole).sum((1, 2)) / n
    return (mse + rel).mean()


def psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(10 * np.log10(1 / max((((pred - gt) / 255) ** 2).mean(), 1e-10)))


def view_scores(v: dict, rgb: torch.Tensor, rng: torch.Tensor, name: str) -> dict[str, float]:
    """Hole PSNR and range AbsRel of one view's completion (`1,3,H,W`, `1,H,W`) as "{name}", "range_absrel_{name}"."""
    hole = v["hole"]
    gt, gt_range = v["gt"].astype(np.float64)[:, hole].T, v["gt_range"].astype(np.float64)[hole]
    rgb_N3 = rgb[0].float().cpu().numpy().astype(np.float64)[:, hole].T
    rng_N = rng[0].float().cpu().numpy().astype(np.float64)[hole]
    return {
        name: psnr(rgb_N3, gt),
        f"range_absrel_{name}": float((np.abs(rng_N - gt_range) / gt_range).mean()),
    }


def evaluate(net: ErpUNet, views: list[dict], device: str) -> dict[str, float]:
    """Mean over the views: the room-shell fill, the embedded gate alone and with the U-Net's correction."""
    rows = []
    for v in views:
        b = stack([v], device)
        with torch.no_grad(), torch.autocast(device.split(":")[0], torch.bfloat16, enabled=device != "cpu"):
            cnn = mix(net.body, b)
            alone = mix(lambda x: torch.zeros_like(x[:, :4]), b)
        p = torch.from_numpy(v["p"].astype(np.float32))[None, None]
        c = b["C"].float().cpu()
        shell = (
            p * c[:, 0] + (1 - p) * c[:, 1],
            torch.from_numpy(v["room_shell_range"].astype(np.float32))[None],
        )
        rows.append(view_scores(v, *shell, "room_shell") | view_scores(v, *alone, "shell_gate")
                    | view_scores(v, *cnn, "cnn_gate"))  # fmt: skip
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"views": len(rows)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train_root", required=True, help="prepared rooms with ground truth to train on")
    p.add_argument("--eval_roots", nargs="+", required=True, help="prepared held-out room sets")
    p.add_argument("--gate", default=None, help="the per-pixel gate to correct (default: the embedded one)")
    p.add_argument("--width", type=int, default=16, help="U-Net width at full resolution")
    p.add_argument("--levels", type=int, default=4, help="U-Net levels (H, W multiples of 2**levels)")
    p.add_argument("--batch", type=int, default=8, help="views per step")
    p.add_argument(
        "--lr", type=float, default=1e-3, help="AdamW learning rate (cosine to zero over the time)"
    )
    p.add_argument("--seconds", type=float, default=120, help="training time")
    p.add_argument("--max_steps", type=int, default=100_000, help="at most this many steps")
    p.add_argument("--seed", type=int, default=0, help="initialisation and sampling seed")
    p.add_argument("--workers", type=int, default=2, help="processes that compute the maps")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--save", default=None, help="write the U-Net's weights here")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    train = load(args.train_root, args.workers, args.gate)
    held_out = {r: load(r, args.workers, args.gate) for r in args.eval_roots}
    t_maps = time.monotonic() - t0
    torch.manual_seed(args.seed)
    net = ErpUNet(N_IN, 4, args.width, args.levels).to(args.device)
    data = stack(train, args.device)
    opt = torch.optim.AdamW(net.parameters(), args.lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(args.seed)
    step, t1, curve = 0, time.monotonic(), []
    while step < args.max_steps and (elapsed := time.monotonic() - t1) < args.seconds:
        for group in opt.param_groups:
            group["lr"] = args.lr * 0.5 * (1 + np.cos(np.pi * min(elapsed / args.seconds, 1)))
        idx = torch.randint(len(train), (args.batch,), generator=g).to(args.device)
        with torch.autocast(args.device.split(":")[0], torch.bfloat16, enabled=args.device != "cpu"):
            loss = losses(net, {k: t[idx] for k, t in data.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            curve.append(round(float(loss), 5))
    del data
    net.eval()
    result = {"steps": step, "seconds_maps": round(t_maps, 1), "seconds_train": round(time.monotonic() - t1, 1),
              "train_views": len(train), "loss_every_50": curve,
              "train": evaluate(net, train[:128], args.device),
              "held_out": {r: evaluate(net, v, args.device) for r, v in held_out.items()},
              "command": " ".join(["python", *sys.argv])}  # fmt: skip
    print(json.dumps({k: result[k] for k in ("steps", "train", "held_out")}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.save:
        torch.save(net.state_dict(), args.save)
    return result


if __name__ == "__main__":
    main()
