"""Dataset throughput: RoomDataset samples per second at 17 views, 720x1440, on 2 CPU cores.

Synthesises one room of 17 views at 720x1440 into a temporary folder, prepares it (reprojection of
view 0 into every view), then times `__getitem__` (PNG/NPY reading, value checks, normalisation,
Plücker maps; no resize at the native size, and with `--height 512` a resize).

    python benchmarks/bench_dataset.py [--threads 2] [--repeats 5] [--height 720]
"""

from __future__ import annotations

import argparse
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2, help="torch / OpenCV threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed __getitem__ calls")
    parser.add_argument(
        "--height", type=int, default=720, help="output height (multiple of 16; 720 = native)"
    )
    args = parser.parse_args()

    import cv2
    import torch

    from panowan.data.dataset import RoomDataset
    from panowan.data.prepare import prepare_rooms
    from panowan.data.synth import synth_rooms

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        synth_rooms(root, 1, 17, 720, 1440, seed=0, workers=1)
        t1 = time.perf_counter()
        summary = prepare_rooms(root, progress=False)
        assert not summary.failed, summary.failed
        t2 = time.perf_counter()
        ds = RoomDataset(root, num_frames=17, height=args.height)
        ds[0]  # warm-up (caches, allocator)
        start = time.perf_counter()
        for epoch in range(args.repeats):
            ds.set_epoch(epoch)
            sample = ds[0]
        per = (time.perf_counter() - start) / args.repeats
        from panowan.geometry.plucker import plucker_erp
        from panowan.geometry.pose import relative_poses, stack_poses

        poses = relative_poses(stack_poses(ds.rooms[0].poses), 0)
        start = time.perf_counter()
        plucker_erp(poses, sample.rgb.shape[-2], sample.rgb.shape[-1])
        plucker = time.perf_counter() - start
    print(f"synth 17 views 720x1440: {t1 - t0:.1f} s; prepare: {t2 - t1:.1f} s")
    print(f"RoomDataset 17 x {sample.rgb.shape[-2]}x{sample.rgb.shape[-1]} on {args.threads} threads: "
          f"{per:.2f} s/sample = {1 / per:.2f} samples/s; of which plucker_erp {plucker:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
