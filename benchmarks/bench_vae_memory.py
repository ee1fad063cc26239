"""GPU benchmark: Wan 2.1 VAE (random weights, the published architecture) encoding and decoding 17 views of
720x1440 through panowan's `WanVAECodec`, with and without `enable_vae_memory_savers` (tiling + slicing).

    python benchmarks/bench_vae_memory.py --out vae.json

Reports peak GPU memory and time of encode and decode (no grad, as for conditions and final decoding) and of
one decode with gradient (as the SSIM loss does on a budget of latent frames). The question: does it fit in what
an 80 GB card has left next to a 14B stream (about 52 GiB peak while training, 33 GB of weights at inference)?
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import torch


def measure(fn) -> tuple[float, float]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0, (torch.cuda.max_memory_allocated() - base) / 2**30


def run_mode(codec, video: torch.Tensor) -> dict:
    """Encode, decode, and decode two latent frames with gradient; peak memory and seconds of each."""
    row: dict = {}
    out: dict = {}
    try:
        with torch.no_grad():
            row["encode_s"], row["encode_peak_gib"] = measure(lambda: out.update(lat=codec.encode(video)))
            lat = out["lat"]
            row["decode_s"], row["decode_peak_gib"] = measure(lambda: codec.decode(lat))
        two = lat[:, :, :2].detach().requires_grad_(True)  # 2 latent frames with gradient (the SSIM budget)
        row["decode_grad_2lat_s"], row["decode_grad_2lat_peak_gib"] = measure(
            lambda: codec.decode(two).float().mean().backward()
        )
    except torch.OutOfMemoryError as e:
        row["error"] = f"out of memory: {str(e)[:160]}"
    return row


def _ssim_step(codec, pred: torch.Tensor, target: torch.Tensor, crop) -> None:
    from panowan.train.losses import decoded_ssim_loss

    decoded_ssim_loss(codec, pred, target, depth=False, latent_frames=2, crop_hw=crop).backward()


def ssim_budgets(codec, video: torch.Tensor) -> dict:
    """The trainer's decoded SSIM loss (VAE checkpointing on) with and without a latent crop: peak memory of
    forward + backward through the decoder for the RGB stream."""
    with torch.no_grad():
        target = codec.encode(video)
    rows = {}
    for crop in (None, (32, 64), (16, 32)):
        pred = (target + 0.1 * torch.randn_like(target)).requires_grad_(True)
        name = "full" if crop is None else f"crop_{crop[0]}x{crop[1]}_latent"
        try:
            rows[name] = measure(partial(_ssim_step, codec, pred, target, crop))
        except torch.OutOfMemoryError:
            rows[name] = "out of memory"
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=17, help="views (4k+1)")
    p.add_argument("--height", type=int, default=720, help="panorama height; width is 2x")
    p.add_argument(
        "--dtype", default="bfloat16", choices=["float32", "bfloat16"], help="VAE weights and compute"
    )
    p.add_argument("--out", default="bench_vae_memory.json", help="JSON output path")
    args = p.parse_args()
    from diffusers import AutoencoderKLWan

    from panowan.models.codec import WanVAECodec
    from panowan.models.loading import enable_vae_memory_savers

    dtype = getattr(torch, args.dtype)
    device = torch.device("cuda")
    torch.manual_seed(0)
    vae = AutoencoderKLWan().to(device, dtype).eval()  # the default config is Wan 2.1's VAE
    g = torch.Generator(device=device).manual_seed(0)
    video = (
        torch.rand(1, 3, args.frames, args.height, 2 * args.height, generator=g, device=device, dtype=dtype)
        * 2
        - 1
    )
    result = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
              "frames": args.frames, "height": args.height, "dtype": args.dtype,
              "vae_params": sum(p.numel() for p in vae.parameters())}  # fmt: skip
    for mode in ("plain", "tiled"):
        if mode == "tiled":
            enable_vae_memory_savers(vae)
        result[mode] = run_mode(WanVAECodec(vae), video)
        torch.cuda.empty_cache()
        print(mode, json.dumps(result[mode]), flush=True)
    result["ssim_loss"] = ssim_budgets(WanVAECodec(vae), video)
    print("ssim_loss", json.dumps(result["ssim_loss"]), flush=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
