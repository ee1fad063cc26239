"""A small U-Net on ERP frames: 3x3 convolutions with ERP padding (columns wrap at the seam, rows replicate
at the poles, `codec.pad_erp`), average-pool down, nearest-neighbour up, skip connections.

The body of the model's full-resolution stage, the per-stream pixel decoders
(`models.pixel_decoder.PixelDecoder`). Its 1x1 output layer starts at zero, so a fresh U-Net outputs zeros and a
stage that adds its output as a correction starts as the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from panowan.models.codec import pad_erp


class _ErpConv(nn.Module):
    """3x3 convolution with ERP padding, then SiLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.conv(pad_erp(x, 1, 1)))


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(_ErpConv(c_in, c_out), _ErpConv(c_out, c_out))


class ErpUNet(nn.Module):
    """`N,in_channels,H,W` -> `N,out_channels,H,W`; `width` channels at full resolution, twice as many per level
    below, at most `max_mult` times. H and W must be multiples of 2**levels."""

    def __init__(
        self, in_channels: int, out_channels: int, width: int, levels: int, max_mult: int = 4
    ) -> None:
        super().__init__()
        if min(in_channels, out_channels, width, levels, max_mult) < 1:
            raise ValueError(
                f"ErpUNet needs positive channels, width, levels and max_mult; got in={in_channels}, "
                f"out={out_channels}, width={width}, levels={levels}, max_mult={max_mult}"
            )
        self.in_channels, self.width, self.levels = in_channels, width, levels
        chans = [width * min(2**k, max_mult) for k in range(levels + 1)]
        self.down = nn.ModuleList(
            [_block(in_channels, chans[0])] + [_block(chans[k - 1], chans[k]) for k in range(1, levels + 1)]
        )
        self.up = nn.ModuleList([_ErpConv(chans[k] + chans[k + 1], chans[k]) for k in range(levels)])
        self.out = nn.Conv2d(chans[0], out_channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def check_input(self, x_NCHW: torch.Tensor, name: str) -> None:
        """ValueError naming `name` unless `x_NCHW` is `N,in_channels,H,W` with H, W multiples of 2**levels."""
        if x_NCHW.dim() != 4 or x_NCHW.shape[1] != self.in_channels:
            raise ValueError(f"{name} takes N,{self.in_channels},H,W; got {tuple(x_NCHW.shape)}")
        h, w = x_NCHW.shape[-2:]
        if h % 2**self.levels or w % 2**self.levels:
            raise ValueError(f"{name} needs H and W divisible by {2**self.levels}, got {h}x{w}")

    def body(self, x_NCHW: torch.Tensor) -> torch.Tensor:
        """The U-Net's output `N,out_channels,H,W` (zeros while the output layer is at its initialisation)."""
        # 1. encoder: full resolution, then halve per level
        skips = [self.down[0](x_NCHW)]
        for block in self.down[1:]:
            skips.append(block(F.avg_pool2d(skips[-1], 2)))
        # 2. decoder: upsample, join the skip of that level
        y = skips[-1]
        for k in reversed(range(self.levels)):
            y = self.up[k](torch.cat([skips[k], F.interpolate(y, scale_factor=2, mode="nearest")], dim=1))
        # 3. per-pixel output
        return self.out(y)
