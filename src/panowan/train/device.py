"""Small helpers the training and validation forward passes share: a batch moved onto the device (`_to`)
and the mixed-precision autocast context of a run (`_autocast`)."""

from __future__ import annotations

import contextlib
import dataclasses

import torch

from panowan.train.config import TrainConfig


def _to(batch, device: torch.device):
    return dataclasses.replace(
        batch,
        **{
            f.name: getattr(batch, f.name).to(device)
            for f in dataclasses.fields(batch)
            if isinstance(getattr(batch, f.name), torch.Tensor)
        },
    )


def _autocast(config: TrainConfig, device: torch.device):
    if config.mixed_precision == "no":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if config.mixed_precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
