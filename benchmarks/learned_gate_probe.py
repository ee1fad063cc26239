r"""Train and evaluate the learned shell gate (`panowan.data.shell_gate`) against the room-shell fill it replaces.

    # train on TRAIN's rooms, evaluate on held-out sets, save the gate (the embedded one: BENCHMARKS.md's command)
    python benchmarks/learned_gate_probe.py --train_root TRAIN --eval_roots HARD1 HARD2 ... --json OUT.json \
        --save shell_gate.safetensors
    # evaluate a saved gate
    python benchmarks/learned_gate_probe.py --gate src/panowan/assets/shell_gate.safetensors --eval_roots HARD1 ...

Why: `hole_oracles.py` says the room-shell fill's weakest decision is per hole pixel "does it show the shell, or a
hidden side of furniture?" (its `true_gate` oracle, the fill with the true answer as its weight, is 0.9 dB above
it on seed 920001). The fill decides with two rules (`data.room_shell.shell_view`: the membrane of the known
pixels' "on the shell" indicator, zeroed where the depth-steered range is in front of the shell). The gate
replaces the rules by a small MLP per hole pixel, trained on the ground truth of other rooms (`train.shell_gate`):
out = sum_k q_k C_k over the colour candidates (`--candidates`; S the shell surface's membrane, H the harmonic
fill), and the range likewise over the shell's cast range and the depth-steered one. Loss: the colour's squared
error (what hole PSNR measures) and the range's relative error (AbsRel), each view weighing the same (the
benchmark averages per view). No scene labels are used: any prepared rooms with ground truth train it.
Reported per set: mean hole PSNR of the room-shell fill, the learned gate, the harmonic fill and the better
candidate per pixel (the most a one-hot gate can reach), and the same for the range's AbsRel. CPU; the features of
288 rooms of 9 views take about 12 minutes on 2 cores, training a minute.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import torch

from panowan.data.shell_gate import (
    CANDIDATES,
    CONTEXT_RADII,
    FEATURES,
    ShellGate,
    check_candidates,
    load_shell_gate,
)
from panowan.train.shell_gate import data_root_hole_pixels, fit_shell_gate


def load(root: str, workers: int, candidates: tuple[str, ...], context: bool, cache: str | None,
         pixels: int | None) -> list[dict]:  # fmt: skip
    """`train.shell_gate.data_root_hole_pixels` of `root`; with `cache` (a folder), kept there as a pickle named
    by the root and the settings, and read back from it by the next run."""
    if not cache:
        return data_root_hole_pixels(root, candidates, context, pixels, workers)
    settings = "".join(candidates) + ("_context" if context else "") + (f"_{pixels}px" if pixels else "")
    file = Path(cache) / f"{Path(root).resolve().name}_{settings}.pkl"
    if file.is_file():
        return pickle.loads(file.read_bytes())
    views = data_root_hole_pixels(root, candidates, context, pixels, workers)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.with_suffix(".tmp").write_bytes(pickle.dumps(views))
    file.with_suffix(".tmp").replace(file)
    return views


def psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(10 * np.log10(1 / max((((pred - gt) / 255) ** 2).mean(), 1e-10)))


def best_per_pixel(c_NKC: np.ndarray, gt_NC: np.ndarray, error) -> np.ndarray:
    """The candidate with the least `error(candidate_NKC, gt_N1C)` (summed over channels) of every pixel, `N,C`."""
    return c_NKC[np.arange(len(c_NKC)), error(c_NKC, gt_NC[:, None]).sum(-1).argmin(1)]


def absrel(pred: np.ndarray, gt: np.ndarray) -> float:
    return float((np.abs(pred - gt) / gt).mean())


def evaluate(gate: ShellGate, views: list[dict]) -> dict[str, float]:
    """Mean over the views of the hole PSNR of the room-shell fill, the learned gate, the harmonic fill and the
    best candidate per pixel (the most a one-hot gate can reach), and the same for the range's AbsRel (candidates:
    the shell's cast range, the depth-steered one)."""
    rows = []
    for v in views:
        with torch.no_grad():
            q, qr = (a.double().numpy() for a in gate(torch.from_numpy(v["f"])))
        c, cr, gt, gt_range = (v[k].astype(np.float64) for k in ("C", "C_range", "gt", "gt_range"))
        rows.append({"room_shell": psnr(v["room_shell"], gt), "learned_gate": psnr((q[..., None] * c).sum(1), gt),
                     "harmonic": psnr(c[:, 1], gt),
                     "best_candidate": psnr(best_per_pixel(c, gt, lambda a, b: (a - b) ** 2), gt),
                     "range_absrel_room_shell": absrel(v["room_shell_range"], gt_range),
                     "range_absrel_learned_gate": absrel((qr * cr).sum(1), gt_range),
                     "range_absrel_best_candidate": absrel(best_per_pixel(cr[..., None], gt_range[:, None], lambda a, b: np.abs(a - b))[:, 0], gt_range)})  # fmt: skip
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"views": len(rows)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train_root", default=None, help="prepared rooms with ground truth to train on")
    p.add_argument("--gate", default=None, help="evaluate this saved gate instead of training one")
    p.add_argument("--eval_roots", nargs="+", required=True, help="prepared held-out room sets")
    p.add_argument("--steps", type=int, default=3000, help="Adam steps of 8192 hole pixels")
    p.add_argument("--width", type=int, default=64, help="MLP hidden width")
    p.add_argument("--seed", type=int, default=0, help="initialisation and sampling seed")
    p.add_argument("--workers", type=int, default=2, help="processes that compute the features")
    p.add_argument("--candidates", nargs="+", default=["S", "H"], choices=list(CANDIDATES),
                   help="the fills the gate chooses between, S and H first: " + "; ".join(f"{k}: {v}" for k, v in CANDIDATES.items()))  # fmt: skip
    p.add_argument("--context", action="store_true",
                   help=f"add window features (known and furniture fractions within {CONTEXT_RADII} pixels)")  # fmt: skip
    p.add_argument("--train_pixels", type=int, default=None,
                   help="keep at most this many hole pixels of each training view (memory); default all")  # fmt: skip
    p.add_argument("--cache", default=None, help="a folder that keeps each set's features for the next run")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--save", default=None, help="write the trained gate here (a .safetensors file)")
    p.add_argument("--device", default="cpu", help="torch device of the training")
    args = p.parse_args(argv)
    try:
        check_candidates(tuple(args.candidates))
    except ValueError as e:
        p.error(f"--candidates: {e}")
    if (args.train_root is None) == (args.gate is None):
        raise SystemExit("give one of --train_root (train a gate) and --gate (evaluate a saved one)")
    saved, record = load_shell_gate(args.gate) if args.gate else (None, {})
    names, context = (tuple(saved.config.candidates), saved.config.context) if saved else (tuple(args.candidates), args.context)  # fmt: skip
    train_views = load(args.train_root, args.workers, names, context, args.cache, args.train_pixels) if args.train_root else []  # fmt: skip
    # every set's features before training: forking workers after torch's threads have run can hang
    held_out = {root: load(root, args.workers, names, context, args.cache, None) for root in args.eval_roots}
    gate = saved if saved is not None else fit_shell_gate(train_views, names, context, steps=args.steps, width=args.width,
                                   seed=args.seed, device=args.device)  # fmt: skip
    result = {"train": evaluate(gate, train_views) if train_views else record.get("train"),
              "held_out": {r: evaluate(gate, v) for r, v in held_out.items()},
              "features": FEATURES, "candidates": names, "context": context, "gate_record": record or None,
              "command": " ".join(["python", *sys.argv])}  # fmt: skip
    print(json.dumps({k: result[k] for k in ("train", "held_out")}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.save:
        gate.save(args.save, {k: result[k] for k in ("command", "train", "held_out")} | {"train_root": args.train_root, "train_views": len(train_views), "train_pixels": args.train_pixels, "steps": args.steps, "width": args.width, "seed": args.seed})  # fmt: skip
    return result


if __name__ == "__main__":
    main()
