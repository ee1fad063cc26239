"""Upper bound of a model that uses a given codec: the ground truth encoded and decoded by the codec, composited
like a completion, written in `panowan infer`'s layout so that `panowan eval` scores it.

    python benchmarks/codec_bound.py --data_root demo_out/data --pool 8 --out bound8
    panowan eval --pred_dir bound8 --data_root demo_out/data --out bound8.json

A model predicting the latents perfectly scores this; no model using the codec can do better in the holes.
With --rgb_condition_fill / --depth_condition_fill, the stream is decoded as a correction of that fill, as a model
with those fills is (`conditioning.decode_filled`): the bound of that decoding.
"""

from __future__ import annotations

import argparse

import torch

from panowan.data.dataset import RoomDataset
from panowan.models.codec import AnalyticCodec
from panowan.models.conditioning import depth_to_video, frames_to_video
from panowan.models.presets import CONDITION_FILLS, fill_fields, filled_streams
from panowan.sample.pipeline import finish_completion, write_completion


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", required=True, help="prepared rooms with ground truth")
    p.add_argument("--pool", type=int, default=8, help="analytic codec pool (the default model uses 8)")
    p.add_argument(
        "--resolution", type=int, default=256, help="panorama height (the default model works at 256)"
    )
    p.add_argument("--num_frames", type=int, default=5, help="views per room")
    p.add_argument("--rgb_condition_fill", default="zero", choices=CONDITION_FILLS, help="RGB condition fill")
    p.add_argument(
        "--depth_condition_fill", default="zero", choices=CONDITION_FILLS, help="depth condition fill"
    )
    p.add_argument("--out", required=True, help="output folder (infer layout)")
    args = p.parse_args()
    fills = {"rgb": args.rgb_condition_fill, "depth": args.depth_condition_fill}
    filled = filled_streams(fills)
    dataset = RoomDataset(args.data_root, num_frames=args.num_frames, height=args.resolution,
                          cond_fill=fills["rgb"], cond_depth_fill=fills["depth"])  # fmt: skip
    codec = AnalyticCodec(pool=args.pool)
    with torch.no_grad():
        for i in range(len(dataset)):
            sample, info = dataset[i], dataset.rooms[i]
            latents = {
                "rgb": codec.encode(frames_to_video(sample.rgb[None])),
                "depth": codec.encode(depth_to_video(frames_to_video(sample.depth[None]))),
            }
            settings = {"codec_pool": args.pool, **fill_fields(fills)}
            completion = finish_completion(
                codec, latents, sample, composite=True, settings=settings, filled=filled
            )
            poses = [info.poses[info.views.index(v)] for v in sample.view_indices]
            write_completion(args.out, completion, poses)


if __name__ == "__main__":
    main()
