"""GPU benchmark: a 14B-config Wan I2V transformer with random weights saved in the diffusers layout
and loaded back through panowan's loader (`panowan.models.loading.load_base_model`), on one GPU.

    python benchmarks/bench_load_14b.py --workdir /tmp/wan14b --out load.json

Reports save time, load time (to the GPU, bf16 with diffusers' fp32-kept modules), peak GPU memory
during the load, and checks that the loaded weights equal the saved ones (a sample of tensors) and
that one forward of the loaded model equals the in-memory model's on the same inputs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from panowan.models.loading import cast_keep_fp32, load_base_model
from panowan.models.presets import get_preset
from wan_bench_utils import Shape, build_random_wan, random_inputs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="wan2.1-i2v-14b", help="model preset (random weights)")
    p.add_argument(
        "--workdir", default="/tmp/wan14b", help="folder for the diffusers-layout copy (deleted after)"
    )
    p.add_argument(
        "--frames", type=int, default=5, help="views for the forward check (small: a check, not a timing)"
    )
    p.add_argument("--height", type=int, default=256, help="panorama height for the forward check")
    p.add_argument("--out", default="bench_load_14b.json", help="JSON output path")
    args = p.parse_args()
    device = torch.device("cuda")
    config = get_preset(args.preset)
    root = Path(args.workdir)
    shutil.rmtree(root, ignore_errors=True)
    (root / "transformer").mkdir(parents=True)

    model = cast_keep_fp32(build_random_wan(config.wan, device), torch.bfloat16)
    t0 = time.perf_counter()
    model.save_pretrained(root / "transformer", max_shard_size="10GB")
    save_s = time.perf_counter() - t0
    (root / "model_index.json").write_text(
        json.dumps(
            {"_class_name": "WanImageToVideoPipeline", "transformer": ["diffusers", "WanTransformer3DModel"]}
        )
    )
    size_gb = sum(f.stat().st_size for f in (root / "transformer").iterdir()) / 1e9
    shape = Shape(args.frames, args.height, 2 * args.height)
    x, ts, text, image = random_inputs(config.wan, shape, device)
    with torch.no_grad():
        ref = model(x, ts, text, image, return_dict=False)[0].float()
    sample = {
        n: t.detach().clone().cpu() for i, (n, t) in enumerate(model.state_dict().items()) if i % 97 == 0
    }
    del model
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base_mem = torch.cuda.memory_allocated()

    t0 = time.perf_counter()
    base = load_base_model(root, components=("transformer",), device=device, preset=config)
    torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    loaded = base.transformer
    peak_gib = (torch.cuda.max_memory_allocated() - base_mem) / 2**30
    resident_gib = (torch.cuda.memory_allocated() - base_mem) / 2**30
    state = loaded.state_dict()
    weights_equal = all(torch.equal(state[n].cpu(), t) for n, t in sample.items())
    fp32_kept = sorted({n.split(".")[0] for n, t in state.items() if t.dtype == torch.float32})
    with torch.no_grad():
        out = loaded(x, ts, text, image, return_dict=False)[0].float()
    max_diff = (out - ref).abs().max().item()
    result = {
        "device": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "params": sum(t.numel() for t in state.values()),
        "files_gb": size_gb,
        "save_s": save_s,
        "load_s": load_s,
        "load_peak_gib": peak_gib,
        "resident_gib": resident_gib,
        "sampled_weights_equal": weights_equal,
        "forward_max_abs_diff": max_diff,
        "fp32_modules": fp32_kept,
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
