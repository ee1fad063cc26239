"""Complete one room with the dual-stream model, and write completions in the output layout.

`complete_room` builds the per-stream conditions (RGB, and depth as a grey video), samples both streams
from independent seeded noise (`sample.sampler.sample_flow`), decodes (through the model's pixel decoders, if it
has them: its full-resolution stage), converts depth back to metres with the room's `DepthNorm`, and
composites the known pixels back (mask 1 = known) unless `composite=False`.

Output layout of one room (`write_room`), shared by `panowan infer` and the baselines so that one metric
code evaluates both:
```
output_dir/{area}/{room}/
  panorama_XXXX.png             RGB, uint8
  panorama_XXXX_depth.npy       float32 radial range, metres (0 = no depth)
  panorama_XXXX_depth.png       uint16 millimetres (clipped at 65.535 m)
  panorama_XXXX_depth_color.png colour-mapped inverse depth (OpenCV TURBO), for people
  room.ply                      fused coloured point cloud of all views, in view 0's camera frame
  completion.json               views, settings, depth normalisation
```
Every file is written atomically; the same inputs and seed write byte-identical files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from panowan.geometry.pose import Pose, relative_poses, stack_poses
from panowan.models.conditioning import frames_to_video
from panowan.models.presets import fill_fields
from panowan.models.step_cache import StepCache
from panowan.parallel.exchange import STREAMS, other_stream
from panowan.sample.sampler import guided_velocity, roll_w, sample_flow, stream_noise
from panowan.utils.timing import PhaseTimer, disabled_timer

DEPTH_PNG_SCALE = 1000.0  # metres -> millimetres in the 16-bit PNG
SPATIAL = 8  # pixels per latent cell (Wan's VAE and the analytic codec)


@dataclass
class Completion:
    """One completed room. rgb_F3HW in [0, 1]; depth_m_F1HW radial metres (0 = none); raw_* without
    compositing; mask_F1HW 1 = known from the input; view_indices original view numbers (model order)."""

    room_id: str
    view_indices: list[int]
    rgb_F3HW: torch.Tensor
    depth_m_F1HW: torch.Tensor
    raw_rgb_F3HW: torch.Tensor
    raw_depth_m_F1HW: torch.Tensor
    mask_F1HW: torch.Tensor
    settings: dict[str, Any] = field(default_factory=dict)


def build_conditions(
    codec, sample, device, dtype, *, filled: frozenset[str] = frozenset()
) -> dict[str, torch.Tensor]:
    """Condition latents per stream, `1,4+z,T,h,w`: mask + encode(known content); the streams in `filled` keep
    the fill in the holes of their condition (a model with `condition_fills`, whose dataset filled them)."""
    from panowan.models.conditioning import build_condition, condition_video

    batch = _batched(sample)
    mask = frames_to_video(batch.mask).to(device, dtype)
    with torch.no_grad():
        return {
            s: build_condition(codec, condition_video(batch, s).to(device, dtype), mask, filled=s in filled)
            for s in STREAMS
        }


def _batched(sample):
    """One `Sample` as a `Batch` of 1 (what `condition_video` takes)."""
    from panowan.data.dataset import collate

    return collate([sample])


def model_velocity(
    model, conditions, plucker_B6FHW, text, image, step_cache: StepCache | None = None,
    negative_text: torch.Tensor | None = None, guidance: float = 1.0,
) -> Callable[..., dict[str, torch.Tensor]]:  # fmt: skip
    """The sampler's `velocity_fn` for one text / image context: the model's forward at `sigma`.

    With seam rolling, conditions roll by `shift` latent columns and the Plücker maps by `8 shift` pixels,
    so every token keeps its own condition and ray; a `step_cache` learns the roll in token columns.
    With `negative_text`, classifier-free guidance in one forward: the batch holds the conditional and the
    unconditional input side by side (batch 2B) and the function returns the guided velocity.
    """
    patch_w = model.config.wan["patch_size"][2]
    both = negative_text is not None
    if both:
        text = torch.cat([text, negative_text])
        image = None if image is None else torch.cat([image, image])
        plucker_B6FHW = torch.cat([plucker_B6FHW, plucker_B6FHW])
        conditions = {k: torch.cat([v, v]) for k, v in conditions.items()}

    def fn(latents: dict[str, torch.Tensor], sigma: float, shift: int = 0) -> dict[str, torch.Tensor]:
        if both:
            latents = {k: torch.cat([v, v]) for k, v in latents.items()}
        cond = roll_w({k: conditions[k] for k in latents}, shift)
        plucker = torch.roll(plucker_B6FHW, SPATIAL * shift, dims=-1) if shift else plucker_B6FHW
        b = next(iter(latents.values())).shape[0]
        timestep = torch.full((b,), sigma * 1000.0, device=plucker.device, dtype=torch.float32)
        if step_cache is not None:
            assert shift % patch_w == 0, "seam offsets are whole token columns (seam_granularity)"
            step_cache.shift_columns = shift // patch_w
        with torch.no_grad():
            out = model(noisy=latents, condition=cond, timestep=timestep, plucker=plucker, text=text,
                        image=image, step_cache=step_cache)  # fmt: skip
        if not both:
            return out
        halves = {k: v.chunk(2) for k, v in out.items()}
        return guided_velocity({k: c for k, (c, _) in halves.items()}, {k: u for k, (_, u) in halves.items()},
                               guidance)  # fmt: skip

    return fn


def _encode(encoder, prompt: str, first_frame_13HW: torch.Tensor, device, dtype):
    """`ConditioningEncoder.encode` of one prompt -> (text 1,512,D, image 1,N,D or None) on the model's device.

    Text is zero-padded to Wan's 512 tokens exactly as the trainer does (diffusers splits the I2V context
    into image and text at that length).
    """
    from panowan.models.dual_stream import WAN_TEXT_TOKENS

    with torch.no_grad():
        text, image = encoder.encode([prompt], first_frame_13HW.float().cpu())
    if text.shape[1] < WAN_TEXT_TOKENS:
        text = torch.nn.functional.pad(text, (0, 0, 0, WAN_TEXT_TOKENS - text.shape[1]))
    return text.to(device, dtype), None if image is None else image.to(device, dtype)


def complete_room(
    model,
    codec,
    encoder,
    sample,
    *,
    steps: int = 50,
    guidance: float = 1.0,
    seed: int = 0,
    sampler: str = "unipc",
    flow_shift: float = 3.0,
    composite: bool = True,
    seam_roll: bool = True,
    negative_prompt: str = "",
    progress: bool = True,
    timer: PhaseTimer | None = None,
    step_cache: float = 0.0,
    batch_guidance: bool = True,
) -> Completion:
    """Complete every view of one `Sample` (one room). See the module docstring.

    `encoder` is a `ConditioningEncoder` (`encode(prompts, first_frames_B3HW in [-1, 1])`); guidance > 1
    adds an unconditional pass with `negative_prompt`. The model must hold both streams. `timer` (optional,
    `panowan.utils.timing.PhaseTimer`) receives the seconds of the phases "vae_encode", "encoders" (text +
    image), "denoise" and "vae_decode"; nothing of it goes into the `Completion`. `step_cache` > 0 skips the
    blocks after the first at steps where the first block's residual changed by less than that (relative L1;
    `models.step_cache`); the steps it skipped are recorded in the settings. `batch_guidance` (guidance > 1)
    runs the conditional and the unconditional pass as one forward of batch 2 (fewer, larger kernels; the
    activations of two passes in memory at once); False runs them one after the other.
    """
    timer = timer or disabled_timer()
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    filled = model.config.filled_streams
    with timer.phase("vae_encode"):
        conditions = build_conditions(codec, sample, device, dtype, filled=filled)
    first_frame = sample.cond_rgb[:1]  # 1,3,H,W in [-1, 1]: view 0, complete
    with timer.phase("encoders"):
        text, image = _encode(encoder, sample.prompt, first_frame, device, dtype)
    plucker = frames_to_video(sample.plucker[None]).to(device, dtype)
    local = tuple(getattr(model, "local_streams", STREAMS))
    shape = tuple(conditions["rgb"].shape)
    shape = (shape[0], shape[1] - 4, *shape[2:])
    noise = stream_noise(dict.fromkeys(local, shape), seed, dtype=dtype, device=device)
    caches = [StepCache(step_cache) for _ in range(2)] if step_cache > 0 else [None, None]  # cond, uncond
    cond_fn, uncond_fn, sampler_guidance = (
        model_velocity(model, conditions, plucker, text, image, caches[0]),
        None,
        1.0,
    )
    if guidance > 1:
        with timer.phase("encoders"):
            neg_text, _ = _encode(encoder, negative_prompt, first_frame, device, dtype)
        if batch_guidance:  # one forward of batch 2 returns the guided velocity
            cond_fn = model_velocity(model, conditions, plucker, text, image, caches[0], neg_text, guidance)
        else:
            uncond_fn = model_velocity(model, conditions, plucker, neg_text, image, caches[1])
            sampler_guidance = guidance
    with timer.phase("denoise"):
        latents = sample_flow(
            cond_fn, noise, steps=steps, sampler=sampler, flow_shift=flow_shift, guidance=sampler_guidance,
            uncond_fn=uncond_fn, seam_roll=seam_roll, progress=progress, desc=sample.room_id,
        )  # fmt: skip
        if set(latents) != set(STREAMS):  # one stream per rank: the peer's final latents complete the pair
            flat = {s: x.reshape(x.shape[0], 1, -1) for s, x in latents.items()}  # the exchange moves B,S,D
            with torch.no_grad():
                others = model.exchange.swap(flat)
            latents = {**latents, **{other_stream(s): x.reshape(latents[s].shape) for s, x in others.items()}}
    with timer.phase("vae_decode"):  # decoding dominates; compositing is a few element-wise ops
        completion = finish_completion(codec, latents, sample, composite=composite, filled=filled,
                                       model=model, settings={
            "steps": steps, "guidance": guidance, "seed": seed, "sampler": sampler, "flow_shift": flow_shift,
            "composite": composite, "seam_roll": seam_roll, **fill_fields(model.config.condition_fills()),
            "pixel_decoder": getattr(model, "pixel_decoders", None) is not None,
            **({"step_cache": step_cache, "step_cache_skipped": sum(c.skipped for c in caches if c)}
               if step_cache > 0 else {}),
        })  # fmt: skip
    return completion


def finish_completion(
    codec,
    latents: dict[str, torch.Tensor],
    sample,
    *,
    composite: bool,
    settings: dict,
    filled: frozenset[str] = frozenset(),
    model=None,
) -> Completion:
    """Decode both streams, depth back to metres, composite the known pixels (mask 1) unless told not to.
    `filled`: these streams are decoded as a correction of their filled condition (`conditioning.decode_filled`).
    `model` (optional): its pixel decoders (`DualStreamWan.decode_pixels`), if it has them, turn the codec's
    decoding into the output."""
    from panowan.models.conditioning import coarse_pixels, condition_video

    lat = latents["rgb"]
    batch = _batched(sample)
    cond = {s: condition_video(batch, s).to(lat.device, lat.dtype) for s in filled}
    with torch.no_grad():
        pixels = coarse_pixels(codec, latents, cond, filled)  # rgb B,3,F,H,W; depth B,1,F,H,W
        if getattr(model, "pixel_decoders", None) is not None:
            pixels = decode_pixels(model, pixels, batch)
        rgb = pixels["rgb"][0].transpose(0, 1).float()  # F,3,H,W in [-1,1]
        depth_n = pixels["depth"][0].transpose(0, 1).float()  # F,1,H,W
        rgb, depth_n = rgb.cpu(), depth_n.cpu()
    raw_rgb = ((rgb.clamp(-1, 1) + 1) / 2).contiguous()
    raw_depth = sample.depth_norm.denormalize(depth_n.clamp(-1, 1)).float()
    known = sample.mask > 0.5
    rgb_out, depth_out = raw_rgb, raw_depth
    if composite:
        cond_rgb = (sample.cond_rgb.clamp(-1, 1) + 1) / 2
        # Known depth in metres as read (Sample.cond_depth_m), not through the clamped normalised condition.
        cond_depth = sample.cond_depth_m.float()
        rgb_out = torch.where(known, cond_rgb, raw_rgb)
        depth_out = torch.where(known & (cond_depth > 0), cond_depth, raw_depth)
    return Completion(
        room_id=sample.room_id, view_indices=list(sample.view_indices), rgb_F3HW=rgb_out, depth_m_F1HW=depth_out,
        raw_rgb_F3HW=raw_rgb, raw_depth_m_F1HW=raw_depth, mask_F1HW=sample.mask.clone(),
        settings={**settings, "depth_norm": [float(sample.depth_norm.center), float(sample.depth_norm.half_range)]},
    )  # fmt: skip


def decode_pixels(model, coarse: dict[str, torch.Tensor], batch) -> dict[str, torch.Tensor]:
    """Both streams' pixel videos through the model's pixel decoders (`DualStreamWan.decode_pixels`). With one
    stream per rank each rank decodes its own stream and the pair swaps the results (as 3-channel videos, so both
    directions move one shape)."""
    from panowan.models.conditioning import condition_pixels, frames_to_video

    like = coarse["rgb"]
    conditions = {s: x.to(like.device, like.dtype) for s, x in condition_pixels(batch).items()}
    mask = frames_to_video(batch.mask).to(like.device, like.dtype)
    out = model.decode_pixels(coarse, conditions, mask)
    if set(out) != set(STREAMS):
        flat = {s: x.expand(-1, 3, -1, -1, -1).reshape(x.shape[0], 1, -1) for s, x in out.items()}
        others = model.exchange.swap(flat)
        for s, x in others.items():
            peer = other_stream(s)
            out[peer] = x.reshape(coarse[peer].shape[0], 3, *coarse[peer].shape[2:])[
                :, : coarse[peer].shape[1]
            ]
    return out


# ------------------------------------------------------------------------------------------- writing
def depth_to_color(depth_HW: np.ndarray) -> np.ndarray:
    """Colour picture of a range map (RGB uint8): inverse depth scaled by its 2/98 percentiles, TURBO map.

    Holes (0 / non-finite) are black.
    """
    import cv2

    valid = np.isfinite(depth_HW) & (depth_HW > 0)
    out = np.zeros((*depth_HW.shape, 3), np.uint8)
    if not valid.any():
        return out
    inv = np.zeros_like(depth_HW, dtype=np.float64)
    inv[valid] = 1.0 / depth_HW[valid]
    lo, hi = np.percentile(inv[valid], [2, 98])
    scaled = np.clip((inv - lo) / max(hi - lo, 1e-12), 0, 1)
    bgr = cv2.applyColorMap((scaled * 255).round().astype(np.uint8), cv2.COLORMAP_TURBO)
    out[valid] = bgr[..., ::-1][valid]
    return out


def fused_point_cloud(
    rgb_F3HW: torch.Tensor, depth_m_F1HW: torch.Tensor, poses: Sequence[Pose], stride: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """All views back-projected into view 0's camera frame: (points_N3 float32, colors_N3 uint8).

    `stride` keeps every stride-th row and column (stride 1: every pixel with a valid depth).
    """
    from panowan.geometry.pointcloud import backproject_erp

    rel = relative_poses(stack_poses(list(poses)), 0)
    points, colors = [], []
    for i in range(rgb_F3HW.shape[0]):
        depth = depth_m_F1HW[i, 0].double()
        keep = torch.zeros_like(depth, dtype=torch.bool)
        keep[::stride, ::stride] = True
        pose = Pose(rel.rotation[i], rel.position[i])
        p, c = backproject_erp(depth, pose, rgb_F3HW[i], keep)
        points.append(p.float())
        colors.append((c.clamp(0, 1) * 255).round().to(torch.uint8))
    return torch.cat(points), torch.cat(colors)


VIEW_SUFFIXES = (".png", "_depth.npy", "_depth.png", "_depth_color.png")  # after panorama_XXXX, per view
ROOM_FILES = ("room.ply", "completion.json")  # completion.json is written last


def room_output_files(room_dir: str | os.PathLike, view_indices: Sequence[int]) -> list[Path]:
    """Every file `write_room` writes for `view_indices` (`panowan infer` skips a room whose files all exist)."""
    room_dir = Path(room_dir)
    views = [room_dir / f"panorama_{v:04d}{suffix}" for v in view_indices for suffix in VIEW_SUFFIXES]
    return views + [room_dir / name for name in ROOM_FILES]


def write_room(
    room_dir: str | os.PathLike,
    view_indices: Sequence[int],
    rgb_F3HW: torch.Tensor,
    depth_m_F1HW: torch.Tensor,
    poses: Sequence[Pose],
    meta: dict[str, Any] | None = None,
    *,
    point_stride: int = 1,
) -> Path:
    """Write one room's completion files (module docstring). rgb in [0, 1]; depth radial metres."""
    from panowan.utils.atomic import atomic_save_npy, atomic_write_image, atomic_write_json
    from panowan.utils.ply import write_ply

    room_dir = Path(room_dir)
    assert rgb_F3HW.shape[0] == depth_m_F1HW.shape[0] == len(view_indices) == len(poses)
    for i, view in enumerate(view_indices):
        stem = room_dir / f"panorama_{view:04d}"
        rgb = (rgb_F3HW[i].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        depth = depth_m_F1HW[i, 0].float().numpy()
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
        atomic_write_image(stem.with_suffix(".png"), rgb)
        atomic_save_npy(f"{stem}_depth.npy", depth)
        atomic_write_image(
            f"{stem}_depth.png", np.clip(np.round(depth * DEPTH_PNG_SCALE), 0, 65535).astype(np.uint16)
        )
        atomic_write_image(f"{stem}_depth_color.png", depth_to_color(depth))
    points, colors = fused_point_cloud(rgb_F3HW, depth_m_F1HW, poses, point_stride)
    write_ply(room_dir / "room.ply", points, colors)
    atomic_write_json(room_dir / "completion.json", {"views": list(view_indices), **(meta or {})})
    return room_dir


def write_completion(
    output_dir: str | os.PathLike, completion: Completion, poses: Sequence[Pose], **kw
) -> Path:
    """`write_room` for a `Completion` into `output_dir/{area}/{room}/`."""
    return write_room(
        Path(output_dir) / completion.room_id, completion.view_indices, completion.rgb_F3HW,
        completion.depth_m_F1HW, poses, {"room": completion.room_id, **completion.settings}, **kw,
    )  # fmt: skip
