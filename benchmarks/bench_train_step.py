"""Where a training step of a small preset goes (the embedded model's training on a GPU), one device.

    python benchmarks/bench_train_step.py --preset small-p4 --batch 32 --out train_step.json
    python benchmarks/bench_train_step.py --preset tiny --batch 2 --steps 2 --no-compile --out t.json  # CPU

Synthesizes and prepares a few rooms, builds the real `Trainer` (the recipe's settings: LoRA on every linear
layer, threads and file cache for data), then times, each the median of --steps after warm-up:
1. the whole optimiser step (`Trainer.optimizer_step`), as training runs it;
2. the data alone (`RoomLoader.next_batch`: read, decode or cache, Plücker maps, collate);
3. the step on one fixed batch (no data loading): model, losses, backward, optimiser;
4. with --compile, (3) again after `torch.compile` of every Wan block (regional compilation; the time the
   first compiled step took is reported).
The small models leave a GPU mostly idle, so (3) is bound by the host issuing kernels; (4) says how much
fusing them buys.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from panowan.models.lora import EVERY_LINEAR_TARGET
from wan_bench_utils import summary, time_cuda


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small-p4", help="model preset (an analytic-codec one)")
    p.add_argument("--batch", type=int, default=32, help="rooms per step")
    p.add_argument("--resolution", type=int, default=64, help="panorama height (width 2x)")
    p.add_argument(
        "--rooms", type=int, default=None, help="synthetic rooms, 9 views each (default: the batch)"
    )
    p.add_argument("--workers", type=int, default=4, help="--dataloader_workers")
    p.add_argument("--lora_rank", type=int, default=48, help="LoRA rank")
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement (after 3 warm-up)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=torch.cuda.is_available(),
                   help="also time the step with every Wan block compiled (default: on a GPU)")  # fmt: skip
    p.add_argument("--out", default="bench_train_step.json", help="JSON output path")
    return p.parse_args()


def timed(fn, warmup: int, iters: int) -> dict:
    return summary(time_cuda(fn, warmup, iters))


def make_trainer(args: argparse.Namespace, data: Path, out: Path):
    from panowan.train.config import TrainConfig
    from panowan.train.trainer import Trainer

    config = TrainConfig(data_root=str(data), output_dir=str(out), preset=args.preset, resolution=args.resolution,
                         num_frames=5, train_batch_size=args.batch, lora_rank=args.lora_rank, lora_targets=list(EVERY_LINEAR_TARGET),
                         mixed_precision="no", progress=False, tensorboard=False, learning_rate=1e-3,
                         checkpointing_steps=10**6, max_train_steps=10**6, dataloader_workers=args.workers,
                         cache_files=True)  # fmt: skip
    trainer = Trainer(config)
    trainer.setup()
    return trainer


def main() -> None:
    from panowan.data.prepare import prepare_rooms
    from panowan.data.synth import synth_rooms

    args = parse_args()
    result: dict = {"args": vars(args), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
                    "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        synth_rooms(
            data, args.rooms or args.batch, 9, args.resolution, 2 * args.resolution, seed=0, workers=4
        )
        prepare_rooms(data, workers=4, progress=False)
        trainer = make_trainer(args, data, Path(tmp) / "run")
        for _ in range(2):  # the rooms' files enter the cache
            trainer.optimizer_step()
        result["step"] = timed(trainer.optimizer_step, 1, args.steps)
        result["data"] = timed(trainer.loader.next_batch, 1, args.steps)
        fixed = trainer.loader.next_batch()
        trainer.loader.next_batch = lambda: fixed  # the step without data loading
        result["step_no_data"] = timed(trainer.optimizer_step, 1, args.steps)
        if args.compile:
            trainer.model.compile_blocks()
            t0 = time.perf_counter()
            trainer.optimizer_step()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            result["compile_first_step_s"] = time.perf_counter() - t0
            result["step_no_data_compiled"] = timed(trainer.optimizer_step, 2, args.steps)
        trainer.close()
    if torch.cuda.is_available():
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    Path(args.out).write_text(json.dumps(result, indent=1))
    for key in ("step", "data", "step_no_data", "step_no_data_compiled"):
        if key in result:
            print(f"{key:24s} {result[key]['median_s'] * 1000:9.1f} ms")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
