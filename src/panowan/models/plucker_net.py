"""PluckerNet: Plücker ray maps -> pose features aligned one-to-one with the stream tokens.

Input `plucker_B6FHW` (channels d, o x d; poses relative to view 0). The frames are packed like the
I2V mask (frame 0 in the 4 slots of latent frame 0, frames 4t-3 .. 4t in latent frame t): 6 x 4 = 24
channels per latent frame. Four stride-2 3D convolutions (kernel 1x3x3) bring H x W to the token grid
H/16 x W/16; one 3x3x3 convolution mixes neighbouring latent frames; a 1x1x1 projection gives
`pose_dim`. Padding: columns wrap (ERP seam), rows and latent frames replicate. The output
`B,S,pose_dim` uses Wan's token order (latent frame, then rows, then columns), so feature s
belongs to token s (NOTES pitfall 5).

Receptive field in tokens: a Plücker change inside one token's 16 x 16 pixel patch of latent frame t
reaches at most tokens within +-2 rows / columns (columns wrapping) and +-1 latent frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from panowan.models.codec import TEMPORAL_FACTOR, check_video, pack_frames, pad_erp

PLUCKER_CHANNELS = 6
DOWNSAMPLINGS = 4  # 2^4 = 16 pixels per token (VAE 8 x patch 2)


class _ErpConv3d(nn.Module):
    """Conv3d with ERP padding: circular columns, replicated rows and frames."""

    def __init__(
        self, cin: int, cout: int, kernel: tuple[int, int, int], stride: tuple[int, int, int]
    ) -> None:
        super().__init__()
        self.pad = tuple(k // 2 for k in kernel)
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pt, ph, pw = self.pad
        x = pad_erp(x, pw, ph)
        if pt:
            x = F.pad(x, (0, 0, 0, 0, pt, pt), mode="replicate")
        return self.conv(x)


class PluckerNet(nn.Module):
    """`plucker_B6FHW` -> pose features `B,S,pose_dim` (S = T * H/16 * W/16, Wan token order)."""

    def __init__(self, pose_dim: int, hidden: int) -> None:
        super().__init__()
        self.pose_dim = pose_dim
        cin = PLUCKER_CHANNELS * TEMPORAL_FACTOR
        layers: list[nn.Module] = []
        for i in range(DOWNSAMPLINGS):
            layers += [_ErpConv3d(cin if i == 0 else hidden, hidden, (1, 3, 3), (1, 2, 2)), nn.SiLU()]
        layers += [_ErpConv3d(hidden, hidden, (3, 3, 3), (1, 1, 1)), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.proj = nn.Conv3d(hidden, pose_dim, 1)

    def forward(self, plucker_B6FHW: torch.Tensor) -> torch.Tensor:
        check_video(plucker_B6FHW, "plucker", channels=PLUCKER_CHANNELS)
        b = plucker_B6FHW.shape[0]
        x = pack_frames(plucker_B6FHW)  # B,6,T,4,H,W
        _, c, t, slots, h, w = x.shape
        x = x.transpose(2, 3).reshape(b, c * slots, t, h, w)  # B,24,T,H,W (channel = colour, slot)
        x = self.proj(self.body(x))  # B,pose_dim,T,H/16,W/16
        return x.flatten(2).transpose(1, 2)  # B,S,pose_dim
