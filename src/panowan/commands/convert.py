"""Convert an original Wan2.1-I2V folder (Wan2.1-I2V-14B-720P: sharded transformer, Wan2.1_VAE.pth, UMT5 and
CLIP .pth files) into the diffusers layout (model_index.json, transformer/, vae/, text_encoder/, tokenizer/,
image_encoder/, image_processor/, scheduler/), once, offline. The destination is written in a temporary
folder beside it and renamed when complete, so a folder at DST is always whole."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

HELP = "convert an original Wan2.1-I2V folder into the diffusers layout"

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--src", required=True, help="original-layout folder (e.g. Wan2.1-I2V-14B-720P)")
    parser.add_argument("--dst", required=True, help="diffusers-layout folder to create (must not exist)")
    parser.add_argument(
        "--dtype",
        default="bf16",
        choices=sorted(DTYPES),
        help="storage precision of the transformer and encoders (fp32-kept modules stay fp32)",
    )
    parser.add_argument(
        "--vae_dtype", default="fp32", choices=sorted(DTYPES), help="storage precision of the VAE"
    )
    parser.add_argument(
        "--flow_shift",
        type=float,
        default=5.0,
        help="UniPC flow shift written to scheduler/ (5.0 for 720P, 3.0 for 480P, as diffusers)",
    )
    parser.add_argument("--max_shard_size", default="5GB", help="largest safetensors shard written")


def model_index(diffusers_version: str) -> dict:
    """model_index.json of Wan-AI/Wan2.1-I2V-14B-720P-Diffusers."""
    return {
        "_class_name": "WanImageToVideoPipeline",
        "_diffusers_version": diffusers_version,
        "image_encoder": ["transformers", "CLIPVisionModel"],
        "image_processor": ["transformers", "CLIPImageProcessor"],
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"],
    }


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    dtype: str = "bf16",
    vae_dtype: str = "fp32",
    flow_shift: float = 5.0,
    max_shard_size: str = "5GB",
) -> Path:
    """Write `dst` (diffusers layout) from the original folder `src`; returns `dst`."""
    import diffusers
    import torch
    from diffusers import UniPCMultistepScheduler

    from panowan.models.loading import detect_layout, load_base_model
    from panowan.utils.atomic import atomic_write_json

    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise ValueError(f"{dst}: already exists; give a new folder")
    if detect_layout(src) != "original":
        raise ValueError(f"{src}: already in the diffusers layout; nothing to convert")
    base = load_base_model(
        src, dtype=getattr(torch, DTYPES[dtype]), vae_dtype=getattr(torch, DTYPES[vae_dtype])
    )
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        base.transformer.save_pretrained(tmp / "transformer", max_shard_size=max_shard_size)
        base.vae.save_pretrained(tmp / "vae")
        base.text_encoder.save_pretrained(tmp / "text_encoder", max_shard_size=max_shard_size)
        base.image_encoder.save_pretrained(tmp / "image_encoder", max_shard_size=max_shard_size)
        base.tokenizer.save_pretrained(tmp / "tokenizer")
        base.image_processor.save_pretrained(tmp / "image_processor")
        scheduler = UniPCMultistepScheduler(
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            num_train_timesteps=1000,
            flow_shift=flow_shift,
        )
        scheduler.save_config(tmp / "scheduler")
        # model_index.json last: it is what marks a folder as the diffusers layout
        atomic_write_json(tmp / "model_index.json", model_index(diffusers.__version__))
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def run(args: argparse.Namespace) -> int:
    dst = convert(
        args.src,
        args.dst,
        dtype=args.dtype,
        vae_dtype=args.vae_dtype,
        flow_shift=args.flow_shift,
        max_shard_size=args.max_shard_size,
    )
    print(f"wrote {dst}")
    return 0
