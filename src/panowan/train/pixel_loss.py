"""The loss of the model's pixel decoders (`models.pixel_decoder`), trained with the transformer.

From the transformer's x0 prediction at the training noise level (`x0 = x_t - sigma v`), each stream is decoded as
the sampler decodes it (the codec's decoding, as a correction of a filled condition where the model has one,
then the pixel decoders), and compared with the ground truth in the holes (pixels view 0 does not see), where
the decoders act: RGB by L1 + MSE in [-1, 1] (MSE is what PSNR measures, L1 keeps edges), depth by L1 of the
normalised log depth (to first order the AbsRel the metrics report), over valid depth only. Gradients reach the
transformer through x0, so it learns to give the decoders what they need.

Budget: the decoders run at full resolution, so the loss takes `frames` target views per sample (seeded, never
view 0, which has no holes), not all of them.
"""

from __future__ import annotations

import torch

from panowan.geometry.erp import latitude_weights
from panowan.parallel.exchange import STREAMS, other_stream
from panowan.train.flow import sample_generator


def pick_frames(num_frames: int, frames: int, seed: int, step: int, indices: list[int]) -> torch.Tensor:
    """`B,k` target frame numbers (1 .. F-1, distinct per row), seeded per run, micro-step and sample."""
    k = min(frames, num_frames - 1)
    rows = [
        torch.randperm(num_frames - 1, generator=sample_generator(seed, step, i, "pixel"))[:k] + 1
        for i in indices
    ]
    return torch.stack(rows).sort(dim=1).values


def _take(x_BCFHW: torch.Tensor, frames_Bk: torch.Tensor) -> torch.Tensor:
    """The frames `frames_Bk` of each sample: `B,C,F,H,W` -> `B,C,k,H,W`."""
    index = frames_Bk.to(x_BCFHW.device).view(x_BCFHW.shape[0], 1, -1, 1, 1)
    return torch.gather(x_BCFHW, 2, index.expand(-1, x_BCFHW.shape[1], -1, *x_BCFHW.shape[-2:]))


def masked_error(
    pred_BCFHW: torch.Tensor, target_BCFHW: torch.Tensor, weight_B1FHW: torch.Tensor, *, squared: bool
) -> torch.Tensor:
    """`sum w |pred - target|^p / sum w` over every element (channels share the pixel's weight); 0 with no weight."""
    err = (pred_BCFHW.float() - target_BCFHW.float()).abs()
    if squared:
        err = err * err
    w = weight_B1FHW.float()
    total = (w * err).sum() / pred_BCFHW.shape[1]
    return total / w.sum().clamp_min(1e-6)


def pixel_decoder_losses(
    model,
    codec,
    batch,
    x0_pred: dict[str, torch.Tensor],
    filled: frozenset[str],
    frames_Bk: torch.Tensor,
    *,
    latitude: bool = False,
) -> dict[str, torch.Tensor]:
    """The "pixel" loss term of each local stream (scalar), for the frames `frames_Bk` of each sample.

    `x0_pred[s]`: the local streams' x0 latents `B,z,T,h,w` (with gradient). The other stream's arrives through the
    model's exchange when the model reads it (cross-stream exchange, one stream per rank)."""
    from panowan.models.conditioning import coarse_pixels, condition_pixels, condition_video, frames_to_video

    local = tuple(x0_pred)
    latents = dict(x0_pred)
    if model.config.cross_stream and set(local) != set(STREAMS):
        shapes = {s: x.shape for s, x in latents.items()}
        swapped = model.exchange.swap({s: x.reshape(x.shape[0], 1, -1) for s, x in latents.items()})
        latents.update({other_stream(s): x.reshape(shapes[s]) for s, x in swapped.items()})
    cond_videos = {s: condition_video(batch, s) for s in filled}
    coarse = coarse_pixels(codec, latents, cond_videos, filled)
    conditions = condition_pixels(batch)
    mask = frames_to_video(batch.mask)
    pick = {s: _take(x, frames_Bk) for s, x in coarse.items()}
    out = model.decode_pixels(
        pick, {s: _take(x, frames_Bk) for s, x in conditions.items()}, _take(mask, frames_Bk)
    )
    hole = 1 - _take(mask, frames_Bk)
    if latitude:
        rows = latitude_weights(hole.shape[-2], dtype=hole.dtype, device=hole.device)
        hole = hole * rows.view(1, 1, 1, -1, 1)
    losses = {}
    for s in local:
        if s == "rgb":
            target = _take(frames_to_video(batch.rgb), frames_Bk)
            losses[s] = masked_error(out[s], target, hole, squared=False) + masked_error(
                out[s], target, hole, squared=True
            )
        else:
            target = _take(frames_to_video(batch.depth), frames_Bk)
            valid = _take(frames_to_video(batch.depth_valid.float()), frames_Bk)
            losses[s] = masked_error(out[s], target, hole * valid, squared=False)
    return losses
