"""Hole consistency: do two target views agree where neither could copy from view 0?

Pixels that view 0 does not see (the holes, mask 0) must be invented by the completion. Where two target
views i and j both have to invent the same surface, a per-view inpainting has no reason to agree with
itself across views; a multi-view completion should. For every ordered pair (i, j), i != j:

1. The counted pixels S_ij of view j: a hole of view j whose ground-truth surface point is seen by view i
   (ground-truth depth of j back-projected and projected into view i, where every pixel of i with a bilinear
   weight at that point must show it: its ground-truth range within `VISIBLE_TOL` of the point's distance,
   which also rejects points at an occluding edge of i) and lands on a hole of view i (the nearest pixel).
   The decision uses the **ground truth only**, so the set is the same for every method: a completion's bad
   depth cannot shrink (or grow) its own evaluation set.
2. View i's completion is reprojected into view j with view i's *completed* depth (z-buffered,
   `panowan.geometry.reproject.reproject_erp`, as `metrics.cross_view_consistency` does) and compared with
   view j's completion on S_ij: colour L1 and PSNR (data range 1, over pixels and channels) and the depth
   relative error |r_ij - r_j| / r_j. A counted pixel that the completed depth does not carry to view j (a
   miss) compares reproject_erp's unknown value (colour 0, range 0): it costs, as it should, and `coverage`
   says how many were carried. Where view j's completed depth is 0 or not finite the depth error is 1. (So
   the copied input, holes black at depth 0, agrees in colour, black with black, but carries nothing:
   coverage 0, depth error 1.)

Sums are pixel-weighted over all ordered pairs (and over rooms in `pool`); `pixels` is the size of the
counted set. With no counted pixel every value is None (and `pixels` 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from panowan.eval.metrics import _f64, _psnr_from_mse
from panowan.geometry.erp import directions_to_pixels, erp_directions
from panowan.geometry.pose import Pose, stack_poses

VISIBLE_TOL = 0.05
"""Relative range difference under which the ground truth of two views is taken to see the same surface."""

KEYS = ("rgb_l1", "psnr", "depth_rel", "coverage", "pixels", "rgb_mse")


def shared_holes(
    gt_range_i: torch.Tensor,
    known_i: torch.Tensor,
    pose_i: Pose,
    gt_range_j: torch.Tensor,
    known_j: torch.Tensor,
    pose_j: Pose,
    tol: float = VISIBLE_TOL,
) -> torch.Tensor:
    """S_ij as a bool [H, W] mask of view j: holes of j whose true surface view i sees in one of its holes."""
    h, w = gt_range_j.shape
    g_j, g_i = _f64(gt_range_j), _f64(gt_range_i)
    valid_j = torch.isfinite(g_j) & (g_j > 0)
    rays = erp_directions(h, w, dtype=torch.float64).reshape(-1, 3)
    rot_j, rot_i = pose_j.rotation.to("cpu", torch.float64), pose_i.rotation.to("cpu", torch.float64)
    pos_j, pos_i = pose_j.position.to("cpu", torch.float64), pose_i.position.to("cpu", torch.float64)
    points = pos_j + (rays * torch.where(valid_j, g_j, 0).reshape(-1, 1)) @ rot_j  # world, R^T d r
    in_i = (points - pos_i) @ rot_i.T
    hi, wi = g_i.shape
    uv = directions_to_pixels(in_i, hi, wi)
    dist = in_i.norm(dim=1)
    corner = torch.floor(uv)
    frac = uv - corner
    u0, v0 = corner[:, 0].long(), corner[:, 1].long()
    visible = torch.ones_like(dist, dtype=torch.bool)
    for du, dv in ((0, 0), (0, 1), (1, 0), (1, 1)):  # every pixel with a bilinear weight must see the point
        weight = (frac[:, 0] if du else 1 - frac[:, 0]) * (frac[:, 1] if dv else 1 - frac[:, 1])
        seen = g_i[(v0 + dv).clamp(0, hi - 1), (u0 + du) % wi]
        sees = torch.isfinite(seen) & (seen > 0) & ((dist - seen).abs() <= tol * seen)
        visible &= sees | (weight < 1e-6)
    near_u, near_v = torch.round(uv[:, 0]).long() % wi, torch.round(uv[:, 1]).long().clamp(0, hi - 1)
    hole_i = ~known_i.to("cpu", torch.bool)[near_v, near_u]
    return (visible & hole_i).reshape(h, w) & valid_j & ~known_j.to("cpu", torch.bool)


def _empty() -> dict:
    return {"rgb_l1": None, "psnr": None, "depth_rel": None, "coverage": None, "pixels": 0, "rgb_mse": None}


def _finish(l1: float, sq: float, rel: float, carried: float, n: int) -> dict:
    if n == 0:
        return _empty()
    return {"rgb_l1": l1 / n, "psnr": _psnr_from_mse(sq / n), "depth_rel": rel / n, "coverage": carried / n,
            "pixels": int(n), "rgb_mse": sq / n}  # fmt: skip


def hole_consistency(
    rgb_F3HW: torch.Tensor,
    range_F1HW: torch.Tensor,
    gt_range_F1HW: torch.Tensor,
    known_FHW: torch.Tensor,
    poses: Sequence[Pose],
    reprojections: dict | None = None,
) -> dict[str, float | int | None]:
    """Agreement of the completions of the views with each other in the holes both had to fill (module doc).

    rgb_F3HW in [0, 1] and range_F1HW metres: the completions; gt_range_F1HW the true ranges (0 / non-finite
    = unknown) and known_FHW the pixels each view could copy from view 0 (True = known), all of one size.
    Returns {rgb_l1, psnr, depth_rel, coverage, pixels, rgb_mse}, pixel-weighted over the ordered pairs.
    `reprojections`: `metrics.pair_reprojections(rgb_F3HW, range_F1HW, poses)`, if already computed (its
    reprojection of i into j is the one this metric needs).
    """
    from panowan.geometry.reproject import reproject_erp

    n = rgb_F3HW.shape[0]
    if not (range_F1HW.shape[0] == gt_range_F1HW.shape[0] == known_FHW.shape[0] == len(poses) == n):
        raise ValueError(
            f"hole_consistency: {n} views, {range_F1HW.shape[0]} depths, {gt_range_F1HW.shape[0]} true depths, "
            f"{known_FHW.shape[0]} masks, {len(poses)} poses"
        )
    known = known_FHW.to("cpu", torch.bool)
    ranges = torch.where(torch.isfinite(range_F1HW), range_F1HW, torch.zeros_like(range_F1HW)).float()
    with_holes = [i for i in range(n) if not known[i].all()]
    l1 = sq = rel = carried = 0.0
    count = 0
    for i in with_holes:
        targets = [j for j in with_holes if j != i]
        sets = {j: shared_holes(gt_range_F1HW[i, 0], known[i], poses[i], gt_range_F1HW[j, 0], known[j], poses[j])
                for j in targets}  # fmt: skip
        targets = [j for j in targets if sets[j].any()]
        if not targets:
            continue
        if reprojections is not None:
            everyone, rep = reprojections[i]
            index = {j: everyone.index(j) for j in targets}
        else:
            rep = reproject_erp(
                rgb_F3HW[i].float(), ranges[i, 0], poses[i], stack_poses([poses[j] for j in targets])
            )
            index = {j: k for k, j in enumerate(targets)}
        for j in targets:
            k = index[j]
            s = sets[j]
            diff = _f64(rep.image[k])[:, s] - _f64(rgb_F3HW[j])[:, s]
            l1 += diff.abs().mean(0).sum().item()
            sq += (diff**2).mean(0).sum().item()
            r_ij, r_j = _f64(rep.range[k])[s], _f64(ranges[j, 0])[s]
            err = torch.where(r_j > 0, (r_ij - r_j).abs() / r_j.clamp_min(1e-12), torch.ones_like(r_j))
            rel += err.sum().item()
            carried += rep.valid[k].cpu()[s].sum().item()
            count += int(s.sum())
    return _finish(l1, sq, rel, carried, count)


def pool(results: Sequence[dict]) -> dict:
    """Several `hole_consistency` results (rooms) pooled pixel-weighted, as if their pairs were one set."""
    n = sum(r["pixels"] for r in results)
    if n == 0:
        return _empty()
    kept = [r for r in results if r["pixels"]]
    total = {k: sum(r[k] * r["pixels"] for r in kept) for k in ("rgb_l1", "rgb_mse", "depth_rel", "coverage")}
    return _finish(total["rgb_l1"], total["rgb_mse"], total["depth_rel"], total["coverage"], n)
