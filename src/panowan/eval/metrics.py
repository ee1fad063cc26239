"""Metrics of completed RGB-D panoramas, per view and per room, split into hole and known regions.

Conventions: RGB `image_3HW` float in [0, 1]; depth `range_HW` radial metres; `region_HW` bool (True = the
pixel counts). Everything is computed in float64. A metric over an empty region is `None`.

- PSNR: 10 log10(1 / MSE) over the region's pixels and channels (data range 1), capped at `PSNR_CAP` dB.
- WS-PSNR: the same with the MSE weighted by cos(latitude) per row (solid angle of an ERP pixel).
- SSIM: Wang et al. 2004 (Gaussian window sigma 1.5, truncated at 3.5 sigma, population covariance,
  K1 = 0.01, K2 = 0.03), the SSIM map averaged over channels and then over the region. Rows are padded
  symmetrically (as scikit-image does), columns wrap around (the ERP seam is not an image border).
- Depth (only where the ground truth is finite and > 0): AbsRel mean |p - g| / g, RMSE, delta < 1.25
  (fraction with max(p / g, g / p) < 1.25). A non-finite prediction counts as 0.
- Cross-view consistency: each generated view is reprojected into every other view (z-buffered,
  `reproject_erp`); where the reprojection is valid and the other view's depth is valid, the depth AbsRel
  between them; colour L1 only where the depths agree within 10% (the surface both see is the same one).
- Hole consistency (`consistency.hole_consistency`): where two target views both had to invent a surface
  (a hole of both that the ground truth says they both see), one completion reprojected into the other
  against the other's completion: RGB L1 / PSNR and depth relative error.
- Seam continuity: mean |column 0 - column W-1| against the mean |column u - column u+1| over the
  ordinary neighbours; a seamless panorama has a ratio near 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

# The summaries of several methods' results live in `summary`; re-exported for this module's callers.
from panowan.eval.summary import (  # noqa: F401
    INPAINTING_BASELINES,
    TABLE_COLUMNS,
    VERDICT_METRICS,
    _fmt,
    best_classical,
    markdown_table,
    table_rows,
    verdict_lines,
)
from panowan.geometry.erp import latitude_weights
from panowan.geometry.pose import Pose

PSNR_CAP = 100.0
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
DELTA_THRESHOLD = 1.25
CONSISTENCY_AGREE = 0.1

REGIONS = ("hole", "known", "all")


def _f64(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to("cpu", torch.float64)


def _region(region_HW: torch.Tensor | None, like_HW: torch.Tensor) -> torch.Tensor:
    if region_HW is None:
        return torch.ones_like(like_HW, dtype=torch.bool)
    assert tuple(region_HW.shape) == tuple(like_HW.shape), (region_HW.shape, like_HW.shape)
    return region_HW.to("cpu", torch.bool)


def _psnr_from_mse(mse: float) -> float:
    if mse <= 0:
        return PSNR_CAP
    return min(PSNR_CAP, 10.0 * math.log10(1.0 / mse))


def psnr(pred_3HW: torch.Tensor, gt_3HW: torch.Tensor, region_HW: torch.Tensor | None = None) -> float | None:
    """PSNR in dB (data range 1) over the region's pixels and all channels; None for an empty region."""
    p, g = _f64(pred_3HW), _f64(gt_3HW)
    r = _region(region_HW, g[0])
    if not r.any():
        return None
    return _psnr_from_mse(((p - g) ** 2)[:, r].mean().item())


def ws_psnr(
    pred_3HW: torch.Tensor, gt_3HW: torch.Tensor, region_HW: torch.Tensor | None = None
) -> float | None:
    """Latitude-weighted PSNR: MSE weighted by cos(latitude) of each pixel's row."""
    p, g = _f64(pred_3HW), _f64(gt_3HW)
    r = _region(region_HW, g[0])
    weight_HW = latitude_weights(g.shape[-2], dtype=torch.float64)[:, None].expand_as(r) * r
    total = weight_HW.sum().item()
    if total <= 0:
        return None
    mse = (((p - g) ** 2).mean(0) * weight_HW).sum().item() / total
    return _psnr_from_mse(mse)


def _gaussian_kernel(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> torch.Tensor:
    """The 1-D kernel of scipy.ndimage.gaussian_filter (radius int(truncate sigma + 0.5))."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _symmetric_rows(x_NHW: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad rows by mirroring with the edge repeated (numpy 'symmetric' = ndimage 'reflect')."""
    h = x_NHW.shape[-2]
    idx = torch.arange(-pad, h + pad)
    idx = torch.where(idx < 0, -idx - 1, idx)
    idx = torch.where(idx >= h, 2 * h - idx - 1, idx)
    return x_NHW[:, idx, :]


def _blur(x_NHW: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur: rows symmetric-padded, columns wrapped (the ERP seam)."""
    pad = kernel.numel() // 2
    if pad >= x_NHW.shape[-2]:
        raise ValueError(f"SSIM needs images taller than {pad} rows; got shape {tuple(x_NHW.shape)}")
    x = _symmetric_rows(x_NHW, pad)
    x = torch.cat([x[..., -pad:], x, x[..., :pad]], dim=-1)
    x = x[:, None]
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    return x[:, 0]


def ssim_map(pred_CHW: torch.Tensor, gt_CHW: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-pixel SSIM averaged over channels, `ssim_HW` (float64)."""
    x, y = _f64(pred_CHW), _f64(gt_CHW)
    if x.shape != y.shape or x.dim() != 3:
        raise ValueError(
            f"ssim_map needs two C,H,W images of one shape; got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    k = _gaussian_kernel()
    ux, uy = _blur(x, k), _blur(y, k)
    vx = _blur(x * x, k) - ux * ux
    vy = _blur(y * y, k) - uy * uy
    vxy = _blur(x * y, k) - ux * uy
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(0)


def ssim(pred_CHW: torch.Tensor, gt_CHW: torch.Tensor, region_HW: torch.Tensor | None = None) -> float | None:
    """Mean SSIM over the region (data range 1); None for an empty region."""
    s = ssim_map(pred_CHW, gt_CHW)
    r = _region(region_HW, s)
    return s[r].mean().item() if r.any() else None


def depth_metrics(
    pred_HW: torch.Tensor, gt_HW: torch.Tensor, region_HW: torch.Tensor | None = None
) -> dict[str, float | None]:
    """AbsRel, RMSE (metres) and delta < 1.25 where the region holds and the ground truth is valid."""
    p, g = _f64(pred_HW), _f64(gt_HW)
    p = torch.where(torch.isfinite(p), p, torch.zeros_like(p))
    r = _region(region_HW, g) & torch.isfinite(g) & (g > 0)
    if not r.any():
        return {"absrel": None, "rmse": None, "delta1": None}
    p, g = p[r], g[r]
    ratio = torch.maximum(p / g, g / p.clamp_min(1e-12))
    return {
        "absrel": ((p - g).abs() / g).mean().item(),
        "rmse": ((p - g) ** 2).mean().sqrt().item(),
        "delta1": (ratio < DELTA_THRESHOLD).double().mean().item(),
    }


def seam_continuity(image_CHW: torch.Tensor) -> dict[str, float]:
    """Mean |left - right column| at the seam vs between ordinary neighbouring columns, and their ratio."""
    x = _f64(image_CHW)
    x = torch.where(torch.isfinite(x), x, torch.zeros_like(x))
    seam = (x[..., 0] - x[..., -1]).abs().mean().item()
    neighbour = (x[..., 1:] - x[..., :-1]).abs().mean().item()
    return {"seam": seam, "neighbour": neighbour, "ratio": seam / neighbour if neighbour > 0 else None}


def view_metrics(
    pred_rgb_3HW: torch.Tensor,
    pred_range_HW: torch.Tensor,
    gt_rgb_3HW: torch.Tensor,
    gt_range_HW: torch.Tensor,
    known_HW: torch.Tensor,
) -> dict[str, dict[str, float | None]]:
    """All per-view metrics: {region: {psnr, ws_psnr, ssim, absrel, rmse, delta1}} plus seam continuity."""
    known = known_HW.to("cpu", torch.bool)
    regions = {"hole": ~known, "known": known, "all": None}
    s_map = ssim_map(pred_rgb_3HW, gt_rgb_3HW)
    out: dict[str, dict[str, float | None]] = {}
    for name, region in regions.items():
        r = _region(region, s_map)
        out[name] = {
            "psnr": psnr(pred_rgb_3HW, gt_rgb_3HW, r),
            "ws_psnr": ws_psnr(pred_rgb_3HW, gt_rgb_3HW, r),
            "ssim": s_map[r].mean().item() if r.any() else None,
            **depth_metrics(pred_range_HW, gt_range_HW, r),
        }
    rgb_seam = seam_continuity(pred_rgb_3HW)
    depth_seam = seam_continuity(pred_range_HW[None])
    out["seam"] = {"rgb_ratio": rgb_seam["ratio"], "depth_ratio": depth_seam["ratio"]}
    return out


def pair_reprojections(rgb_F3HW: torch.Tensor, range_F1HW: torch.Tensor, poses: Sequence[Pose]) -> dict:
    """{i: (targets, Reprojection)}: each view reprojected with its own (completed) range into every other view,
    one stacked `reproject_erp` per source view; the shared work of `cross_view_consistency` and
    `consistency.hole_consistency` (reprojection dominates evaluation time). Non-finite ranges count as unknown."""
    from panowan.geometry.pose import stack_poses
    from panowan.geometry.reproject import reproject_erp

    n = rgb_F3HW.shape[0]
    ranges = torch.where(torch.isfinite(range_F1HW), range_F1HW, torch.zeros_like(range_F1HW)).float()
    out = {}
    for i in range(n):
        targets = [j for j in range(n) if j != i]
        if targets:
            dst = stack_poses([poses[j] for j in targets])
            out[i] = (targets, reproject_erp(rgb_F3HW[i].float(), ranges[i, 0], poses[i], dst))
    return out


def cross_view_consistency(
    rgb_F3HW: torch.Tensor, range_F1HW: torch.Tensor, poses: Sequence[Pose], reprojections: dict | None = None
) -> dict[str, float | None]:
    """Agreement of the generated views with each other, through z-buffered reprojection.

    For every ordered pair (i, j), i != j: view i reprojected into view j. Over pixels where the
    reprojection and view j's depth are valid: `depth_absrel` = mean |r_ij - r_j| / r_j; `rgb_l1` =
    mean colour |c_ij - c_j| over those pixels whose depths agree within 10%; `overlap` = the valid fraction.
    `reprojections`: `pair_reprojections` of the same inputs, if already computed.
    """
    n = rgb_F3HW.shape[0]
    if n != len(poses) or range_F1HW.shape[0] != n:
        raise ValueError(
            f"cross_view_consistency: {n} views, {range_F1HW.shape[0]} depths, {len(poses)} poses"
        )
    err_sum = err_n = rgb_sum = rgb_n = 0.0
    overlap = []
    ranges = torch.where(torch.isfinite(range_F1HW), range_F1HW, torch.zeros_like(range_F1HW)).float()
    if reprojections is None:
        reprojections = pair_reprojections(rgb_F3HW, range_F1HW, poses)
    for targets, reps in reprojections.values():
        for k, j in enumerate(targets):
            valid, rep_range, rep_image = reps.valid[k], reps.range[k], reps.image[k]
            target = _f64(ranges[j, 0])
            both = valid.cpu() & (target > 0)
            overlap.append(both.double().mean().item())
            if not both.any():
                continue
            r_ij = _f64(rep_range)[both]
            rel = (r_ij - target[both]).abs() / target[both]
            err_sum += rel.sum().item()
            err_n += rel.numel()
            agree = both.clone()
            agree[both] = rel < CONSISTENCY_AGREE
            if agree.any():
                diff = (_f64(rep_image) - _f64(rgb_F3HW[j])).abs()[:, agree]
                rgb_sum += diff.mean(0).sum().item()
                rgb_n += int(agree.sum())
    return {
        "depth_absrel": err_sum / err_n if err_n else None,
        "rgb_l1": rgb_sum / rgb_n if rgb_n else None,
        "overlap": sum(overlap) / len(overlap) if overlap else None,
    }


def mean_of(values: Sequence[float | None]) -> float | None:
    """Mean of the non-None values (None if there are none)."""
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def average_views(
    per_view: Sequence[dict[str, dict[str, float | None]]],
) -> dict[str, dict[str, float | None]]:
    """Per-room summary: each metric averaged over the views where it is defined."""
    if not per_view:
        return {}
    return {
        group: {key: mean_of([v[group][key] for v in per_view]) for key in per_view[0][group]}
        for group in per_view[0]
    }


# ------------------------------------------------------------------------------------ files on disk
def _read_prediction(room_dir, view: int, size: tuple[int, int] | None):
    """(rgb_3HW in [0,1], range_HW metres) of one predicted view; ValueError names a missing file."""
    import numpy as np

    from panowan.data.io import read_depth, read_rgb

    rgb = read_rgb(room_dir / f"panorama_{view:04d}.png", size)
    depth = read_depth(room_dir / f"panorama_{view:04d}_depth.npy", rgb.shape[:2])
    return torch.from_numpy(rgb.astype(np.float64) / 255).permute(2, 0, 1), torch.from_numpy(depth)


def _ground_truth(info, view: int, height: int, width: int):
    """(rgb_3HW [0,1], range_HW metres, 0 = invalid, known_HW) of one view at the prediction's size."""
    import numpy as np

    from panowan.data.dataset import known_mask, resize_masked, resize_rgb
    from panowan.data.io import read_depth, read_mask, read_rgb

    paths, size, room = info.paths, info.size, info.paths.root
    rgb = resize_rgb(read_rgb(paths.gt_rgb(view), size, room), height, width) / 255.0
    depth = read_depth(paths.gt_depth(view), size, room)
    depth, _ = resize_masked(depth[..., None], np.isfinite(depth) & (depth > 0), height, width)
    if view == 0:
        known = np.ones((height, width), bool)
    else:
        cond = read_depth(paths.cond_depth(view), size, room)
        mask_file = read_mask(paths.cond_mask(view), size, room) if info.has_mask.get(view) else None
        _, known = resize_masked(
            cond[..., None], known_mask(cond, mask_file, "known", paths, view), height, width
        )
    to_t = torch.from_numpy
    return (
        to_t(np.ascontiguousarray(rgb.transpose(2, 0, 1))).double(),
        to_t(depth[..., 0]).double(),
        to_t(known),
    )


def predicted_views(room_dir) -> list[int]:
    """View numbers with a `panorama_XXXX.png` in a prediction folder, sorted."""
    import re

    found = [re.fullmatch(r"panorama_(\d{4})\.png", p.name) for p in room_dir.iterdir()]
    return sorted(int(m.group(1)) for m in found if m)


def evaluate_room(pred_room_dir, data_room, *, consistency: bool = True) -> dict:
    """Metrics of one predicted room against its ground truth: per view, the room mean and (unless
    `consistency` is False) the cross-view and hole consistency."""
    from pathlib import Path

    from panowan.data.dataset import validate_room

    pred_room_dir, info = Path(pred_room_dir), validate_room(data_room)
    if not pred_room_dir.is_dir():
        raise ValueError(f"{pred_room_dir}: no prediction folder for room {info.paths.room_id}")
    views = predicted_views(pred_room_dir)
    if not views:
        raise ValueError(f"{pred_room_dir}: no panorama_XXXX.png predictions")
    unknown = sorted(set(views) - set(info.views))
    if unknown:
        raise ValueError(f"{pred_room_dir}: predicted views {unknown} do not exist in {info.paths.root}")
    per_view, rgbs, ranges, gt_ranges, knowns = {}, [], [], [], []
    for view in views:
        rgb, rng = _read_prediction(pred_room_dir, view, None)
        gt_rgb, gt_rng, known = _ground_truth(info, view, *rng.shape)
        per_view[view] = view_metrics(rgb, rng, gt_rgb, gt_rng, known)
        rgbs.append(rgb.float())
        ranges.append(rng[None].float())
        gt_ranges.append(gt_rng[None])
        knowns.append(known)
    room = {
        "views": {f"{v:04d}": m for v, m in per_view.items()},
        "mean": average_views(list(per_view.values())),
    }
    if consistency and len(views) > 1:
        poses = [info.poses[info.views.index(v)] for v in views]
        from panowan.eval.consistency import hole_consistency

        rgb_F3HW, range_F1HW = torch.stack(rgbs), torch.stack(ranges)
        reps = pair_reprojections(rgb_F3HW, range_F1HW, poses)  # shared by both metrics
        room["consistency"] = cross_view_consistency(rgb_F3HW, range_F1HW, poses, reps)
        room["hole_consistency"] = hole_consistency(
            rgb_F3HW, range_F1HW, torch.stack(gt_ranges), torch.stack(knowns), poses, reps
        )
    return room


def predicted_rooms(pred_dir, rooms: Sequence[str] | None = None) -> list[str]:
    """The room ids ('area/room') with a prediction folder in `pred_dir`, all or those of `rooms` (ValueError
    naming the folder if one is missing, or if there is none)."""
    from pathlib import Path

    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise ValueError(f"{pred_dir}: prediction folder does not exist")
    ids = sorted(
        f"{a.name}/{r.name}" for a in pred_dir.iterdir() if a.is_dir() for r in a.iterdir() if r.is_dir()
    )
    if rooms is not None:
        missing = sorted(set(rooms) - set(ids))
        if missing:
            raise ValueError(f"{pred_dir}: no predictions for rooms {missing}")
        ids = [i for i in ids if i in rooms]
    if not ids:
        raise ValueError(f"{pred_dir}: no predicted rooms ({{area}}/{{room}}/ folders)")
    return ids


def evaluate_dir(
    pred_dir, data_root, rooms: Sequence[str] | None = None, *, consistency: bool = True
) -> dict:
    """Evaluate every room of `pred_dir` ({area}/{room}/ as infer writes) against `data_root`.

    Returns {"rooms": {room_id: evaluate_room(...)}, "mean": room-averaged summary}.
    """
    from pathlib import Path

    pred_dir, data_root = Path(pred_dir), Path(data_root)
    ids = predicted_rooms(pred_dir, rooms)
    results = {}
    for room_id in ids:
        if not (data_root / room_id).is_dir():
            raise ValueError(f"{data_root / room_id}: ground truth of predicted room {room_id} is missing")
        results[room_id] = evaluate_room(pred_dir / room_id, data_root / room_id, consistency=consistency)
    return {"rooms": results, "mean": summarise(results)}


def summarise(rooms: dict) -> dict:
    """Room-averaged metrics: every per-room mean (and consistency value) averaged over rooms; the hole
    consistency pooled over the rooms' pixels."""
    from panowan.eval.consistency import pool

    means = [r["mean"] for r in rooms.values()]
    out = average_views(means) if means else {}
    cons = [r["consistency"] for r in rooms.values() if "consistency" in r]
    if cons:
        out["consistency"] = {k: mean_of([c[k] for c in cons]) for k in cons[0]}
    holes = [r["hole_consistency"] for r in rooms.values() if "hole_consistency" in r]
    if holes:
        out["hole_consistency"] = pool(holes)
    return out
