r"""Fit a depth refiner to an exported model and export the pair (the last stage of the default model's recipe).

    # the shipped refiner (the defaults; one GPU, 5 minutes; the training rooms of the diffusion runs, 256x512)
    panowan synth --out DATA --rooms 96 --views 9 --height 256 --width 512 --seed 0; panowan prepare --data_root DATA
    python scripts/train_depth_refiner.py --model_dir runs/dm_depth2/export --data DATA --out runs/refined \
        --eval_data VAL --device cuda

1. the exported model (--model_dir, default the package's) completes --epochs view selections of every room of
   --data with its recommended sampling, raw output, no refiner (`panowan.train.refiner.collect_examples`);
2. a `DepthRefiner` of --width is fitted to those outputs: L1 of log depth in the holes (`fit_refiner`);
3. with --eval_data, the same on other rooms measures the hole AbsRel of the fill, the model and the
   refined model (one view selection each);
4. the model with its refiner is exported to --out (default: the package's assets), the fit recorded in
   default_model.json ("train" -> "depth_refiner").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from panowan.commands import infer as infer_cmd
from panowan.train.refiner import RefinerConfig, collect_examples, evaluate_refiner, fit_refiner

ASSETS = Path(__file__).resolve().parents[1] / "src/panowan/assets"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = RefinerConfig()
    p.add_argument("--model_dir", default=None, help="exported diffusion model (default: the package's)")
    p.add_argument("--data", required=True, help="prepared training rooms (DATA/{area}/{room})")
    p.add_argument("--out", default=str(ASSETS), help="folder the model with its refiner is exported to")
    p.add_argument("--eval_data", default=None, help="prepared rooms not trained on, to measure the refiner")
    p.add_argument("--width", type=int, default=defaults.width, help="refiner channels at full resolution")
    p.add_argument("--steps", type=int, default=defaults.steps, help="optimiser steps")
    p.add_argument("--batch", type=int, default=defaults.batch, help="views per step")
    p.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate (warm-up, then cosine)")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="view selections per training room")
    p.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of the fit and of the sampling noise"
    )
    p.add_argument("--workers", type=int, default=0, help="data-loading processes")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    return p.parse_args()


def _tenths(values: list[float]) -> list[list[float]]:
    n = max(1, len(values) // 10)
    return [values[i : i + n] for i in range(0, len(values), n)]


def main() -> None:
    args = parse_args()
    config = RefinerConfig(width=args.width, steps=args.steps, batch=args.batch, lr=args.lr, epochs=args.epochs,
                           seed=args.seed)  # fmt: skip
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    source = infer_cmd.embedded_source(args.model_dir)
    if source.model_config.depth_refiner_width:
        print(f"{source.description} has a depth refiner already: it is replaced", flush=True)
    train = source.train_config
    num_frames, resolution = int(train.get("num_frames", 5)), train.get("resolution")
    steps, sampler = infer_cmd.sampling_settings(source, None, None)
    sampling = {"steps": steps, "sampler": sampler, "flow_shift": float(train.get("flow_shift", 3.0))}
    model, codec, encoder = infer_cmd.build_model(source, None, device, torch.float32)
    model.attach_depth_refiner(None)

    def examples(root: str, epochs: int):
        dataset, _ = infer_cmd.open_rooms(root, None, num_frames, resolution, args.seed,
                                          source.model_config.condition_fills())  # fmt: skip
        return collect_examples(model, codec, encoder, dataset, epochs=epochs, sampling=sampling, seed=args.seed,
                                workers=args.workers)  # fmt: skip

    t0 = time.monotonic()
    train_examples = examples(args.data, config.epochs)
    t1 = time.monotonic()
    refiner, losses = fit_refiner(train_examples, config, device)
    t2 = time.monotonic()
    record = {"config": config.to_dict(), "data": str(args.data), "views": len(train_examples),
              "sampling": sampling, "final_loss": sum(losses[-50:]) / len(losses[-50:]),
              "loss_per_tenth": [round(sum(c) / len(c), 4) for c in _tenths(losses)],
              "seconds": {"model_outputs": round(t1 - t0, 1), "fit": round(t2 - t1, 1)},
              "machine": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}  # fmt: skip
    if args.eval_data:
        record["eval"] = {"data": str(args.eval_data),
                          **evaluate_refiner(refiner, examples(args.eval_data, 1), device)}  # fmt: skip
    model.attach_depth_refiner(refiner)
    written = infer_cmd.export_embedded(model, {**train, "depth_refiner": record}, args.out,
                                        sampling=source.sampling or None)  # fmt: skip
    print("exported", [f"{w} ({w.stat().st_size / 1e6:.1f} MB)" for w in written], flush=True)
    print(json.dumps(record, indent=1), flush=True)


if __name__ == "__main__":
    main()
