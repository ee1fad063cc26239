"""Validation of a training run: the held-out room (`validation_room`) and sampling a completion of it
every --validation_steps (`validate`), written as PNGs under output_dir/validation/step-STEP/."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from panowan.train.config import TrainConfig
from panowan.train.device import _autocast, _to
from panowan.train.objective import stream_targets

if TYPE_CHECKING:
    from panowan.train.trainer import Trainer


def validation_room(dataset, config: TrainConfig) -> int:
    """Index of the held-out validation room: --validation_room, else the last room."""
    ids = [r.paths.room_id for r in dataset.rooms]
    if config.validation_room is None:
        if len(ids) < 2:
            raise ValueError(
                f"{config.data_root}: validation needs a held-out room and a training room; found {len(ids)}"
            )
        return len(ids) - 1
    if config.validation_room not in ids:
        raise ValueError(
            f"--validation_room {config.validation_room!r} is not a usable room of {config.data_root}"
        )
    return ids.index(config.validation_room)


@torch.no_grad()
def validate(trainer: Trainer) -> None:
    """Sample a completion of the held-out room and write each view as PNG (RGB; depth as 16-bit
    PNG of the normalised depth) under `output_dir/validation/step-STEP/` (pair 0's ranks)."""
    from panowan.data.dataset import collate
    from panowan.models.conditioning import (
        condition_video,
        decode_filled,
        frames_to_video,
        video_to_depth,
    )
    from panowan.sample.sampler import sample_flow, stream_noise
    from panowan.utils.atomic import atomic_write_image

    c = trainer.config
    trainer.model.eval()
    batch = _to(collate([trainer.dataset[trainer.validation_index]]), trainer.device)
    text, image = trainer.embeddings.batch(batch, trainer.device)
    cond = {
        s: stream_targets(trainer.codec, batch, s, filled=s in trainer.filled)[1]
        for s in trainer.groups.local_streams
    }
    shapes = {s: (1, trainer.codec.z_dim, *cond[s].shape[2:]) for s in trainer.groups.local_streams}
    plucker = frames_to_video(batch.plucker)

    def velocity_fn(latents, sigma):
        t = torch.full((1,), float(sigma) * 1000, device=trainer.device)
        with _autocast(c, trainer.device):
            out = trainer.model(latents, cond, t, plucker, text, image)
        return {k: v.float() for k, v in out.items()}

    noise = {k: v.to(trainer.device) for k, v in stream_noise(shapes, c.seed).items()}
    latents = sample_flow(velocity_fn, noise, steps=c.validation_sampling_steps, sampler="euler",
                          flow_shift=c.flow_shift, progress=False)  # fmt: skip
    if trainer.groups.pair_index == 0:
        folder = trainer.output_dir / "validation" / f"step-{trainer.step:06d}"
        for s, lat in latents.items():
            cond_video = condition_video(batch, s) if s in trainer.filled else None
            video = decode_filled(trainer.codec, lat, cond_video)
            video = video.float().clamp(-1, 1)  # 1,3,F,H,W
            if s == "depth":
                frames = ((video_to_depth(video)[0, 0] + 1) * 32767.5).round().to(torch.uint16)
            else:
                frames = ((video[0].permute(1, 2, 3, 0) + 1) * 127.5).round().to(torch.uint8)
            for f, view in enumerate(batch.view_indices[0]):
                atomic_write_image(folder / f"{s}_{view:04d}.png", frames[f].cpu().numpy())
    trainer.model.train()
