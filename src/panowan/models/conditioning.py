"""I2V conditioning: the 4-channel packed mask and the condition latents of one stream.

Convention (NOTES pitfalls 2 and 3): the mask is 1 where content is known; unknown pixels are
zeroed before encoding (unless the model fills them: `DualStreamConfig.condition_fills`); the mask
is area-averaged onto the latent grid and packed in time exactly as diffusers'
`WanImageToVideoPipeline.prepare_latents` does: frame 0 fills the 4 channels of latent frame 0,
frames 4t-3 .. 4t fill channels 0 .. 3 of latent frame t.

Our samples are frame-first (`B,F,C,H,W`); the models take channel-first video (`B,C,F,H,W`):
`frames_to_video` / `video_to_frames` convert.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from panowan.models.codec import SPATIAL_FACTOR, LatentCodec, check_video, pack_frames

MASK_CHANNELS = 4


def frames_to_video(x_BFCHW: torch.Tensor) -> torch.Tensor:
    """`B,F,C,H,W` (our samples) -> `B,C,F,H,W` (the models)."""
    if x_BFCHW.dim() != 5:
        raise ValueError(f"expected B,F,C,H,W; got shape {tuple(x_BFCHW.shape)}")
    return x_BFCHW.transpose(1, 2)


def video_to_frames(x_BCFHW: torch.Tensor) -> torch.Tensor:
    """`B,C,F,H,W` -> `B,F,C,H,W`."""
    if x_BCFHW.dim() != 5:
        raise ValueError(f"expected B,C,F,H,W; got shape {tuple(x_BCFHW.shape)}")
    return x_BCFHW.transpose(1, 2)


def depth_to_video(depth_B1FHW: torch.Tensor) -> torch.Tensor:
    """Normalised depth `B,1,F,H,W` -> a grey 3-channel video `B,3,F,H,W` for the RGB codec."""
    if depth_B1FHW.dim() != 5 or depth_B1FHW.shape[1] != 1:
        raise ValueError(f"depth must be B,1,F,H,W; got shape {tuple(depth_B1FHW.shape)}")
    return depth_B1FHW.expand(-1, 3, -1, -1, -1)


def video_to_depth(video_B3FHW: torch.Tensor) -> torch.Tensor:
    """A decoded depth video `B,3,F,H,W` -> `B,1,F,H,W` (channel mean: the codec may tint it)."""
    if video_B3FHW.dim() != 5 or video_B3FHW.shape[1] != 3:
        raise ValueError(f"video must be B,3,F,H,W; got shape {tuple(video_B3FHW.shape)}")
    return video_B3FHW.mean(dim=1, keepdim=True)


def condition_video(batch, stream: str) -> torch.Tensor:
    """The condition of `stream` in a `Batch` (or a `Sample`'s fields with a leading B) as the codec's video
    `B,3,F,H,W`: `cond_rgb` as is, `cond_depth` grey (`depth_to_video`)."""
    if stream == "rgb":
        return frames_to_video(batch.cond_rgb)
    return depth_to_video(frames_to_video(batch.cond_depth))


def pack_mask(mask_B1FHW: torch.Tensor) -> torch.Tensor:
    """Pixel mask `B,1,F,H,W` (1 = known) -> `B,4,T,h,w` (h = H/8, area average; temporal layout above)."""
    check_video(mask_B1FHW, "mask", channels=1)
    b, _, f, h, w = mask_B1FHW.shape
    frames = mask_B1FHW.reshape(b * f, 1, h, w).to(torch.float32)
    small = F.avg_pool2d(frames, SPATIAL_FACTOR).reshape(b, 1, f, h // SPATIAL_FACTOR, w // SPATIAL_FACTOR)
    packed = pack_frames(small)[:, 0]  # B,T,4,h,w: slot c of latent frame t
    return packed.transpose(1, 2).contiguous().to(mask_B1FHW.dtype)


def build_condition(
    codec: LatentCodec, video_B3FHW: torch.Tensor, mask_B1FHW: torch.Tensor, *, filled: bool = False
) -> torch.Tensor:
    """Condition latents `B,4+z,T,h,w` = cat([pack_mask(mask), codec.encode(video * mask)]).

    `video_B3FHW` in [-1, 1]; `mask_B1FHW` in [0, 1], 1 = known. Unknown pixels are zeroed here, so
    the caller may pass a video with anything in the holes; `filled` keeps them instead (the video's holes
    hold a fill the model was trained with, and the mask still tells the model where they are).
    """
    check_video(video_B3FHW, "condition video")
    check_video(mask_B1FHW, "mask", channels=1)
    if video_B3FHW.shape[0] != mask_B1FHW.shape[0] or video_B3FHW.shape[2:] != mask_B1FHW.shape[2:]:
        raise ValueError(
            f"mask {tuple(mask_B1FHW.shape)} does not match the condition video {tuple(video_B3FHW.shape)} "
            "(need B,1,F,H,W with the video's B, F, H, W)"
        )
    mask = mask_B1FHW.to(video_B3FHW.dtype)
    latents = codec.encode(video_B3FHW if filled else video_B3FHW * mask)
    return torch.cat([pack_mask(mask).to(latents.dtype), latents], dim=1)


def decode_filled(
    codec: LatentCodec, latents: torch.Tensor, filled_condition_B3FHW: torch.Tensor | None
) -> torch.Tensor:
    """Video `B,3,F,H,W` of one stream's latents. With the filled condition video of a model trained on one
    (its `condition_fills()` not "zero"), the residual decoding `cond + decode(z) - decode(encode(cond))`:
    where the model keeps the condition's latents the fill comes back at full resolution, and elsewhere the
    model's change is added to it (exact for a linear codec such as the analytic one). Depth passes its
    grey video (`depth_to_video`)."""
    video = codec.decode(latents)
    if filled_condition_B3FHW is None:
        return video
    cond = filled_condition_B3FHW.to(video.dtype)
    return cond + video - codec.decode(codec.encode(cond))


def condition_pixels(batch) -> dict[str, torch.Tensor]:
    """Each stream's condition as a pixel video in its own channels: rgb `B,3,F,H,W`, depth `B,1,F,H,W` (the
    inputs of the pixel decoders, `models.pixel_decoder`)."""
    return {"rgb": frames_to_video(batch.cond_rgb), "depth": frames_to_video(batch.cond_depth)}


def coarse_pixels(
    codec: LatentCodec,
    latents: dict[str, torch.Tensor],
    cond_videos: dict[str, torch.Tensor],
    filled: frozenset[str] = frozenset(),
) -> dict[str, torch.Tensor]:
    """The codec's decoding of each stream's latents as a pixel video: rgb `B,3,F,H,W`, depth `B,1,F,H,W`
    (`video_to_depth`). The streams in `filled` are decoded as a correction of their filled condition video
    (`cond_videos[s]`, the codec's `B,3,F,H,W`, needed for those streams only; `decode_filled`)."""
    out = {}
    for s, z in latents.items():
        video = decode_filled(codec, z, cond_videos[s] if s in filled else None)
        out[s] = video if s == "rgb" else video_to_depth(video)
    return out
