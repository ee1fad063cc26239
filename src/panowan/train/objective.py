"""The training objective of one stream: its targets (`stream_targets`: codec-encoded ground truth,
condition, depth validity), its enabled loss terms (`stream_losses`, terms named in `LOSS_TERMS`) and their
weighted sum (`total_loss`). The terms themselves live in `losses.py` (and `pixel_loss.py`)."""

from __future__ import annotations

import torch

from panowan.train.config import TrainConfig
from panowan.train.flow import x0_from_velocity

LOSS_TERMS = ("mse", "structural", "global", "ssim", "pixel")


# ------------------------------------------------------------------------------------------ losses
def stream_targets(
    codec, batch, stream: str, *, filled: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(x0 latents `B,z,T,h,w`, condition `B,4+z,T,h,w`, packed GT validity `B,4,T,h,w` or None), no grad.

    `filled`: the batch's condition of this stream holds a fill in its holes that the model takes as is."""
    from panowan.models.conditioning import (
        build_condition,
        condition_video,
        depth_to_video,
        frames_to_video,
        pack_mask,
    )

    mask = frames_to_video(batch.mask)
    with torch.no_grad():
        cond = build_condition(codec, condition_video(batch, stream), mask, filled=filled)
        if stream == "rgb":
            return codec.encode(frames_to_video(batch.rgb)), cond, None
        x0 = codec.encode(depth_to_video(frames_to_video(batch.depth)))
        return x0, cond, pack_mask(frames_to_video(batch.depth_valid.float()))


def stream_losses(
    config: TrainConfig,
    codec,
    stream: str,
    *,
    velocity: torch.Tensor,
    target: torch.Tensor,
    x_t: torch.Tensor,
    x0: torch.Tensor,
    sigma: torch.Tensor,
    weight: torch.Tensor,
    known: torch.Tensor,
    valid: torch.Tensor | None,
    ssim_generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Every enabled loss term of one stream (unweighted); `velocity` etc. `B,z,T,h,w`."""
    from panowan.train import losses as L

    v = velocity.float()
    lat = config.latitude_weighting
    out = {}
    if config.mse_weight:
        out["mse"] = L.flow_matching_loss(v, target, weight, known_B4Thw=known, hole_weight=config.hole_weight,
                                          valid_B4Thw=valid, latitude=lat)  # fmt: skip
    if config.structural_weight or config.global_weight or config.ssim_weight:
        x0_pred = x0_from_velocity(x_t, v, sigma)
        if config.structural_weight:
            out["structural"] = L.structural_consistency_loss(
                x0_pred, x0, pool=config.structural_patch, latitude=lat
            )
        if config.global_weight:
            out["global"] = L.global_consistency_loss(x0_pred, x0, latitude=lat)
        if config.ssim_weight:
            crop = None if config.ssim_crop is None else tuple(config.ssim_crop)
            out["ssim"] = L.decoded_ssim_loss(codec, x0_pred, x0, depth=stream == "depth",
                                              latent_frames=config.ssim_latent_frames, crop_hw=crop,
                                              generator=ssim_generator, latitude=lat, checkpoint=True)  # fmt: skip
    return out


def total_loss(config: TrainConfig, terms: dict[str, torch.Tensor]) -> torch.Tensor:
    weights = {"mse": config.mse_weight, "structural": config.structural_weight, "global": config.global_weight,
               "ssim": config.ssim_weight, "pixel": config.pixel_weight}  # fmt: skip
    return sum(weights[k] * v for k, v in terms.items())
