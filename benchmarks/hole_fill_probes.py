"""How much does a model's completion tell about the holes, beyond interpolating their borders?

Hole RGB PSNR (mean over rooms of the mean over views, as `panowan eval` averages) of fills that combine the
known pixels with a raw model output, against plain border interpolation:

- model: the raw output with the known pixels pasted back (what `panowan infer` writes);
- harmonic: the Laplace (membrane) fill of the holes from their borders, columns wrapping (classical, no model);
- seamless: the model output plus the harmonic fill of its residual on the known pixels (Poisson blending);
- steered-model / steered-truth: a harmonic fill whose neighbour weights exp(-(d log depth / sigma)^2) come from
  the model's completed depth, or from the ground-truth depth (an oracle: what sharp depth would give);
- telea: OpenCV Telea (the baseline); codec(telea) / codec(harmonic): those fills through the pool-8 analytic
  codec (what a model that predicts them perfectly could give with plain decoding);
- residual(telea, truth): the residual decoding of `rgb_condition_fill="telea"`, `fill + decode(encode(truth) -
  encode(fill))`, with a perfect prediction (its bound).

Hole depth AbsRel of: ns (OpenCV Navier-Stokes), ns x 1.105 (that fill 10% farther: what a global correction of
its bias gives), model, residual(ns, model) and residual(ns, truth) (the same decoding in log depth onto the
Navier-Stokes fill, with the model's or a perfect prediction); and the mean log bias, log(prediction / truth), of
ns and of the model (negative: too near).

    panowan demo --rooms 8 --seed 800001 --out val                  # validation rooms with ground truth
    panowan infer --data_root val/data --output_dir val/raw --no_composite --num_frames 5 --resolution 256
    python benchmarks/hole_fill_probes.py --data_root val/data --pred_dir val/raw

Needs scipy (installed with the test extra). Session 3 (BENCHMARKS.md, issue 5) used these fills to show that
the trained models' hole predictions add nothing beyond border interpolation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def neighbour_pairs(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (p, q) of every 4-neighbour pair of an ERP grid: columns wrap (the seam), rows do not."""
    idx = np.arange(height * width).reshape(height, width)
    horizontal = (idx.ravel(), np.roll(idx, -1, axis=1).ravel())
    vertical = (idx[:-1].ravel(), idx[1:].ravel())
    return np.concatenate([horizontal[0], vertical[0]]), np.concatenate([horizontal[1], vertical[1]])


def membrane_fill(image_HWC: np.ndarray, hole_HW: np.ndarray, weight_fn=None) -> np.ndarray:
    """Minimise sum_pairs w_pq (x_p - x_q)^2 over the hole pixels, the others fixed (w = 1 without weight_fn,
    else weight_fn(p, q) on flat indices)."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    h, w, c = image_HWC.shape
    flat, hole = image_HWC.reshape(-1, c), hole_HW.ravel()
    p, q = neighbour_pairs(h, w)
    keep = hole[p] | hole[q]
    p, q = p[keep], q[keep]
    weight = np.ones(len(p)) if weight_fn is None else weight_fn(p, q)
    unknown = np.flatnonzero(hole)
    col = -np.ones(h * w, dtype=np.int64)
    col[unknown] = np.arange(len(unknown))
    n = len(unknown)
    diag = np.zeros(n)
    rhs = np.zeros((n, c))
    rows, cols, vals = [], [], []
    for a, b in ((p, q), (q, p)):  # each pair contributes to the equation of each of its hole pixels
        at = hole[a]
        np.add.at(diag, col[a[at]], weight[at])
        inner = at & hole[b]
        rows.append(col[a[inner]])
        cols.append(col[b[inner]])
        vals.append(-weight[inner])
        border = at & ~hole[b]
        np.add.at(rhs, col[a[border]], weight[border, None] * flat[b[border]])
    matrix = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    matrix = matrix + sp.diags(diag)
    out = flat.copy()
    out[unknown] = np.asarray(spsolve(matrix.tocsc(), rhs)).reshape(n, c)
    return out.reshape(h, w, c)


def depth_weights(depth_HW: np.ndarray, sigma: float):
    log_depth = np.log(np.maximum(depth_HW, 1e-3)).ravel()
    return lambda p, q: np.exp(-(((log_depth[p] - log_depth[q]) / sigma) ** 2)) + 1e-4


def through_codec(image_HWC: np.ndarray) -> np.ndarray:
    """encode then decode with the default model's codec (`AnalyticCodec(8)`), one frame, values as given; one
    channel (depth) goes as grey, as the depth stream sends it."""
    from panowan.models.codec import AnalyticCodec

    codec = AnalyticCodec(8)
    video = torch.from_numpy(image_HWC).double().permute(2, 0, 1)[None, :, None]  # 1,C,1,H,W
    out = codec.decode(codec.encode(video.expand(1, 3, 1, *image_HWC.shape[:2])))
    return out[0, : image_HWC.shape[2], 0].permute(1, 2, 0).numpy()


def residual(fill_HWC: np.ndarray, target_HWC: np.ndarray) -> np.ndarray:
    """`fill + decode(encode(target) - encode(fill))`: the decoding of `conditioning.decode_filled` (linear codec)."""
    return fill_HWC + through_codec(target_HWC) - through_codec(fill_HWC)


def hole_psnr(pred_HWC: np.ndarray, truth_HWC: np.ndarray, hole_HW: np.ndarray) -> float:
    mse = float(((np.clip(pred_HWC, 0, 1) - truth_HWC) ** 2)[hole_HW].mean())
    return 10 * np.log10(1 / mse)


def probe_view(room: Path, pred: Path, view: int, sigma: float) -> dict[str, float] | None:
    from panowan.data.inpaint import inpaint_erp
    from panowan.data.io import read_depth, read_mask, read_rgb

    stem = f"pano0000_to_pano{view:04d}"
    known = read_mask(room / "input" / f"{stem}_mask.png") > 0.5
    hole = ~known
    if not hole.any():
        return None
    truth = read_rgb(room / "output" / f"panorama_{view:04d}.png") / 255.0
    cond = np.where(known[..., None], read_rgb(room / "input" / f"{stem}_rgb.png") / 255.0, 0.0)
    model = read_rgb(pred / f"panorama_{view:04d}.png") / 255.0
    known_depth = read_depth(room / "input" / f"{stem}_depth_range.npy")
    model_depth = np.where(known, known_depth, np.load(pred / f"panorama_{view:04d}_depth.npy"))
    true_depth = read_depth(room / "output" / f"panorama_{view:04d}_depth.npy")
    harmonic = membrane_fill(cond, hole)
    telea = inpaint_erp(np.rint(cond * 255).astype(np.uint8), hole, "telea") / 255.0
    fills = {
        "model": model,
        "harmonic": harmonic,
        "seamless": model + membrane_fill(np.where(known[..., None], cond - model, 0.0), hole),
        "steered-model": membrane_fill(cond, hole, depth_weights(model_depth, sigma)),
        "steered-truth": membrane_fill(cond, hole, depth_weights(true_depth, sigma)),
        "telea": telea,
        "codec(telea)": through_codec(telea),
        "codec(harmonic)": through_codec(harmonic),
        "residual(telea, truth)": residual(telea, truth),
    }
    out = {
        name: hole_psnr(np.where(known[..., None], cond, fill), truth, hole) for name, fill in fills.items()
    }
    valid = hole & (true_depth > 0)
    ns = inpaint_erp(np.where(known, known_depth, 0).astype(np.float32), hole, "ns")
    log_ns = np.log(np.maximum(ns, 1e-3))[..., None]
    depths = {
        "ns": ns,
        "ns x 1.105": ns * np.exp(0.1),
        "model": model_depth,
        "residual(ns, model)": np.exp(residual(log_ns, np.log(np.maximum(model_depth, 1e-3))[..., None]))[
            ..., 0
        ],
        "residual(ns, truth)": np.exp(residual(log_ns, np.log(np.maximum(true_depth, 1e-3))[..., None]))[
            ..., 0
        ],
    }
    for name, depth in depths.items():
        out[f"depth AbsRel {name}"] = float((np.abs(depth - true_depth)[valid] / true_depth[valid]).mean())
    for name in ("ns", "model"):
        out[f"depth log bias {name}"] = float(
            np.log(np.maximum(depths[name], 1e-3) / true_depth)[valid].mean()
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data_root", required=True, help="prepared rooms with output/ ground truth")
    parser.add_argument(
        "--pred_dir", required=True, help="`panowan infer --no_composite` output of those rooms"
    )
    parser.add_argument("--sigma", type=float, default=0.1, help="log-depth scale of the steered fills")
    parser.add_argument("--out", default=None, help="write the means as JSON here")
    args = parser.parse_args()
    per_room: dict[str, list[dict[str, float]]] = {}
    for room in sorted(Path(args.data_root).glob("*/*/output")):
        room = room.parent
        room_id = f"{room.parent.name}/{room.name}"
        pred = Path(args.pred_dir) / room_id
        if not pred.is_dir():
            raise SystemExit(f"{pred}: no prediction for room {room_id}")
        views = sorted(int(p.stem.split("_")[1]) for p in (room / "output").glob("panorama_*.png"))
        rows = [r for v in views if v and (r := probe_view(room, pred, v, args.sigma)) is not None]
        if rows:
            per_room[room_id] = rows
    if not per_room:
        raise SystemExit(f"{args.data_root}: no room with holes and ground truth")
    names = list(next(iter(per_room.values()))[0])
    means = {n: float(np.mean([np.mean([r[n] for r in rows]) for rows in per_room.values()])) for n in names}
    for name, value in means.items():
        print(f"{name:32s} {value:6.3f}" if name.startswith("depth") else f"{name:32s} {value:6.2f} dB")
    if args.out:
        Path(args.out).write_text(json.dumps({"rooms": len(per_room), "hole": means}, indent=1))


if __name__ == "__main__":
    main()
