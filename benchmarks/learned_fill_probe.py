r"""Probe: how far above the best classical fill can a *learned per-view fill* go on the hard rooms?

    # on a GPU: train on prepared hard rooms, write completions of held-out rooms, then evaluate them
    python benchmarks/learned_fill_probe.py --train_root TRAIN --eval_root HARD --out OUT --device cuda \
        --time_budget_s 400
    python -m panowan eval --pred_dir OUT/pred --data_root HARD --baselines harmonic depth_steered

Why: every dual-stream model so far sits within 0.1 dB of the fill it is given (BENCHMARKS.md, issue 18). This
separates the two questions that result mixes up: is there a margin to learn on these rooms at all, and does the
model's training reach it? The probe is the model's own full-resolution stage alone (`models.erp_unet.ErpUNet`, the
body of the pixel decoders) trained as a plain regression, one view at a time, with no transformer, no noise and no
other view: input the classical fill of a target view's holes (`--fill`, RGB and depth), the known mask and the
pixel's camera-frame ray; output a correction of the hole pixels (RGB, and log depth). Loss: mean squared error of
the hole RGB (what hole PSNR measures) plus the L1 error of the hole log depth. Augmentation: a random yaw roll and
a mirror per sample (both keep an ERP an ERP). If this probe beats the best fill by a clear margin, the margin is
learnable from one view's neighbourhood and the joint model under-trains its decoders; if it does not, the issue's
+1.5 dB needs what no single view holds.

Writes OUT/probe.safetensors (the U-Net, float16), OUT/probe.json (settings, loss curve, seconds) and OUT/pred (completions
of every --eval_root room, if given, in `panowan infer`'s layout: view 0 as given, the known pixels kept).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from panowan.geometry.erp import erp_directions
from panowan.models.erp_unet import ErpUNet

IN_CHANNELS = 3 + 1 + 1 + 3  # fill RGB, fill log depth (centred), mask, ray
OUT_CHANNELS = 3 + 1  # RGB correction, log-depth correction


# ------------------------------------------------------------------------------------------------ data
def room_views(room: str, fill: str, with_truth: bool = True) -> list[dict[str, np.ndarray]]:
    """Every target view (1..) of one prepared room: fill RGB uint8 `H,W,3`, fill / truth depth (metres), known
    mask, and (with_truth) the true RGB; the view index under "view"."""
    from panowan.data.dataset import validate_room
    from panowan.data.io import read_depth, read_rgb
    from panowan.data.room_shell import fit_room
    from panowan.eval.baselines import baseline_view, read_condition

    info = validate_room(Path(room))
    paths, size = info.paths, info.size
    shell = fit_room(info) if fill == "room_shell" else None
    views = []
    for view, pose in zip(info.views[1:], info.poses[1:], strict=True):
        rgb_cond, depth, known = read_condition(info, view)
        rgb, depth_fill = baseline_view(
            rgb_cond, depth, known, fill, None if shell is None else (pose, shell)
        )
        item = {"view": np.int64(view), "rgb": rgb, "depth": depth_fill.astype(np.float32), "known": known}
        if with_truth:
            item["gt_rgb"] = read_rgb(paths.gt_rgb(view), size, room)
            item["gt_depth"] = read_depth(paths.gt_depth(view), size, room).astype(np.float32)
        views.append(item)
    return views


def load_views(root: str, fill: str, workers: int) -> list[dict[str, np.ndarray]]:
    from panowan.data.layout import scan_rooms

    rooms = [str(r) for r in scan_rooms(root)]
    if not rooms:
        raise ValueError(f"{root}: no prepared rooms")
    if workers <= 1:
        return [v for room in rooms for v in room_views(room, fill)]
    with ProcessPoolExecutor(workers) as pool:
        return [v for views in pool.map(room_views, rooms, [fill] * len(rooms)) for v in views]


def log_depth(depth_m: torch.Tensor) -> torch.Tensor:
    return torch.log(depth_m.clamp_min(1e-3))


def net_inputs(rgb_N3HW: torch.Tensor, depth_N1HW: torch.Tensor, known_N1HW: torch.Tensor):
    """(U-Net input `N,8,H,W`, the log-depth offset `N,1,1,1`): RGB in [-1, 1]; log depth centred on the mean
    log depth of the known pixels of that view (depth scale differs between rooms; its log offset does not
    change the shape of a fill)."""
    logd = log_depth(depth_N1HW)
    offset = (logd * known_N1HW).sum((2, 3), keepdim=True) / known_N1HW.sum((2, 3), keepdim=True).clamp_min(1)
    h, w = rgb_N3HW.shape[-2:]
    rays = erp_directions(h, w, device=rgb_N3HW.device).permute(2, 0, 1).expand(rgb_N3HW.shape[0], -1, -1, -1)
    x = torch.cat([rgb_N3HW * 2 - 1, logd - offset, known_N1HW, rays.to(rgb_N3HW.dtype)], dim=1)
    return x, offset


def to_tensors(views: list[dict], device: torch.device) -> dict[str, torch.Tensor]:
    """Stack the views (uint8 / float16 on `device`: a few GB for a thousand views at 256x512)."""

    def stack(key: str, dtype) -> torch.Tensor:
        return torch.from_numpy(np.stack([v[key] for v in views])).to(device=device, dtype=dtype)

    return {"rgb": stack("rgb", torch.uint8), "gt_rgb": stack("gt_rgb", torch.uint8),
            "depth": stack("depth", torch.float32), "gt_depth": stack("gt_depth", torch.float32),
            "known": stack("known", torch.bool)}  # fmt: skip


def batch_of(data: dict[str, torch.Tensor], index: torch.Tensor, gen: torch.Generator):
    """One augmented batch: (rgb, depth, known, gt_rgb, gt_depth) as float `N,C,H,W`; a random yaw roll and a
    mirror per sample, the same for every tensor of that sample."""
    w = data["rgb"].shape[2]
    shifts = torch.randint(0, w, (len(index),), generator=gen).tolist()
    flips = torch.rand(len(index), generator=gen).lt(0.5).tolist()

    def take(key: str, rgb: bool) -> torch.Tensor:
        x = data[key][index].float()
        x = x.permute(0, 3, 1, 2) / 255 if rgb else x[:, None]
        out = [torch.roll(xi, s, dims=-1) for xi, s in zip(x, shifts)]
        return torch.stack([o.flip(-1) if f else o for o, f in zip(out, flips)])

    return (take("rgb", True), take("depth", False), take("known", False), take("gt_rgb", True),
            take("gt_depth", False))  # fmt: skip


def predict(net: ErpUNet, rgb, depth, known) -> tuple[torch.Tensor, torch.Tensor]:
    """Completed (rgb `N,3,H,W` in [0, 1], depth metres `N,1,H,W`): the fill corrected in the holes only."""
    x, offset = net_inputs(rgb, depth, known)
    y = net.body(x).float()
    hole = 1 - known
    rgb_out = ((x[:, :3] + hole * y[:, :3]).clamp(-1, 1) + 1) / 2
    depth_out = torch.exp(x[:, 3:4] + hole * y[:, 3:4] + offset)
    return rgb_out, torch.where(known.bool(), depth, depth_out)


def losses(
    net, rgb, depth, known, gt_rgb, gt_depth, per_view: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(RGB term, log-depth term). Pooled: the hole RGB's mean squared error and the hole log depth's L1, means
    over every hole pixel of the batch. `per_view`: each view's hole PSNR loss, 10 log10 of its own hole MSE, and
    its own mean L1, averaged over the views: the benchmark averages PSNR per view, which a pooled MSE does not
    follow (it is ruled by the views with the largest holes, and a view with a sliver of a hole loses dB for the
    smallest change)."""
    rgb_out, depth_out = predict(net, rgb, depth, known)
    hole = (1 - known) * (gt_depth > 0)
    sq = ((rgb_out - gt_rgb) ** 2) * hole
    l1 = (log_depth(depth_out) - log_depth(gt_depth)).abs() * hole
    if not per_view:
        n = hole.sum().clamp_min(1)
        return sq.sum() / (3 * n), l1.sum() / n
    n_view = hole.sum((1, 2, 3))
    has = n_view > 0
    mse_view = sq.sum((1, 2, 3))[has] / (3 * n_view[has])
    return 10 * torch.log10(mse_view + 1e-5).mean(), (l1.sum((1, 2, 3))[has] / n_view[has]).mean()


# ------------------------------------------------------------------------------------------------ train
def train(args: argparse.Namespace, device: torch.device) -> tuple[ErpUNet, dict]:
    start = time.perf_counter()
    # Views with no hole teach nothing; those with no known pixel have no fill to correct.
    views = [v for v in load_views(args.train_root, args.fill, args.workers) if 0 < v["known"].mean() < 1]
    data = to_tensors(views, device)
    load_s = time.perf_counter() - start
    print(f"{len(views)} training views loaded in {load_s:.0f} s", flush=True)
    torch.manual_seed(args.seed)
    net = ErpUNet(IN_CHANNELS, OUT_CHANNELS, args.width, args.levels, max_mult=args.max_mult).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(args.seed)
    curve, step, t0 = [], 0, time.perf_counter()
    while step < args.steps and time.perf_counter() - t0 < args.time_budget_s:
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, max((time.perf_counter() - t0) / args.time_budget_s,
                                                              step / args.steps))))  # fmt: skip
        for group in opt.param_groups:
            group["lr"] = lr
        index = torch.randint(0, len(views), (args.batch,), generator=gen).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            mse, l1 = losses(net, *batch_of(data, index, gen), per_view=args.loss == "per_view")
        loss = mse + args.depth_weight * l1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0 or step == 1:
            curve.append(
                {
                    "step": step,
                    "s": time.perf_counter() - t0,
                    "mse": mse.item(),
                    "l1_logd": l1.item(),
                    "lr": lr,
                }
            )
            print(json.dumps(curve[-1]), flush=True)
    record = {"views": len(views), "load_s": load_s, "train_s": time.perf_counter() - t0, "steps": step,
              "parameters": sum(p.numel() for p in net.parameters()), "curve": curve}  # fmt: skip
    return net, record


# ------------------------------------------------------------------------------------------------ complete
@torch.no_grad()
def complete(net: ErpUNet, eval_root: str, fill: str, out: Path, device: torch.device) -> int:
    """Write completions of every room under `eval_root` into `out` (infer's layout); returns the views done."""
    from panowan.data.dataset import validate_room
    from panowan.data.layout import scan_rooms
    from panowan.eval.baselines import read_reference
    from panowan.sample.pipeline import write_room

    done = 0
    net.eval()
    for room in scan_rooms(eval_root):
        info = validate_room(room)
        by_view = {int(v["view"]): v for v in room_views(str(room), fill, with_truth=False)}
        ref_rgb, ref_depth = read_reference(info)
        rgbs = [torch.from_numpy(ref_rgb).permute(2, 0, 1).float() / 255]
        depths = [torch.from_numpy(ref_depth)[None]]
        for view in info.views[1:]:
            v = by_view[view]
            rgb = torch.from_numpy(v["rgb"]).permute(2, 0, 1)[None].float().to(device) / 255
            depth = torch.from_numpy(v["depth"])[None, None].to(device)
            known = torch.from_numpy(v["known"])[None, None].float().to(device)
            rgb_out, depth_out = predict(net, rgb, depth, known)
            rgbs.append(rgb_out[0].cpu())
            depths.append(depth_out[0].cpu())
            done += 1
        write_room(out / info.paths.room_id, info.views, torch.stack(rgbs), torch.stack(depths), info.poses,
                   {"room": info.paths.room_id, "method": f"learned_fill_probe ({fill})"})  # fmt: skip
    return done


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train_root", help="prepared training rooms (omit with --weights to only complete)")
    p.add_argument("--eval_root", default=None, help="prepared held-out rooms to complete (omit: train only)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--weights", default=None, help="a probe.safetensors to load instead of training")
    p.add_argument("--fill", default="depth_steered", choices=["harmonic", "depth_steered", "room_shell"],
                   help="the classical fill the probe corrects")  # fmt: skip
    p.add_argument("--width", type=int, default=32, help="U-Net channels at full resolution")
    p.add_argument("--levels", type=int, default=5, help="U-Net levels below the full resolution")
    p.add_argument("--max_mult", type=int, default=8, help="at most this many times --width channels a level")
    p.add_argument("--batch", type=int, default=16, help="views per step")
    p.add_argument("--steps", type=int, default=100_000, help="at most this many steps")
    p.add_argument(
        "--time_budget_s", type=float, default=300.0, help="training stops after this many seconds"
    )
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (cosine over the budget)")
    p.add_argument("--loss", default="pooled", choices=["pooled", "per_view"],
                   help="pooled: hole MSE over the batch's hole pixels; per_view: the mean of each view's hole PSNR "
                        "loss (10 log10 MSE), what the benchmark averages")  # fmt: skip
    p.add_argument("--depth_weight", type=float, default=0.1, help="weight of the log-depth L1 term")
    p.add_argument("--seed", type=int, default=0, help="initialisation and batch-order seed")
    p.add_argument("--workers", type=int, default=8, help="processes that read rooms and compute fills")
    p.add_argument("--device", default="cpu", help="torch device")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import load_file, save_file

    if args.weights:
        net = ErpUNet(IN_CHANNELS, OUT_CHANNELS, args.width, args.levels, max_mult=args.max_mult).to(device)
        net.load_state_dict({k: v.float() for k, v in load_file(args.weights).items()})
        record: dict = {"weights": args.weights}
    else:
        if not args.train_root:
            p.error("--train_root is required unless --weights is given")
        net, record = train(args, device)
        # float16: half the bytes (the device returns small files only)
        save_file(
            {k: v.detach().half().cpu().contiguous() for k, v in net.state_dict().items()},
            str(out / "probe.safetensors"),
        )
    if args.eval_root:
        record["completed_views"] = complete(net.float(), args.eval_root, args.fill, out / "pred", device)
    record["args"] = vars(args)
    (out / "probe.json").write_text(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    main()
