"""A learnt per-pixel correction of the decoded depth in the holes (`DualStreamConfig.depth_refiner_width`).

Why: with the analytic codec the depth stream speaks in 8x8-pixel blocks, while the error of a filled depth
condition sits in thin slivers beside occluders (an inpainting blends the near occluder into the far
background it uncovers). A block correction cannot reach those pixels: even a perfect pool-8 prediction
leaves most of that error (BENCHMARKS.md, "codec bound"). The refiner works at full resolution on what the
sampler has decoded, and changes the holes only.

Input (`refiner_inputs`), `F,6,H,W` in the model's normalised space (`RoomDataset`'s): the decoded depth and
RGB (clamped to [-1, 1]), the filled depth condition and the mask (1 = known). Output: the depth with
`(1 - mask) * correction` added. Its last layer starts at zero, so a fresh refiner changes nothing.
It is trained apart from the diffusion model, on that model's own outputs (`panowan.train.refiner`).
ERP: columns wrap around at the seam, rows replicate at the poles (`codec.pad_erp`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from panowan.models.codec import pad_erp

REFINER_LEVELS = 3
"""Resolution levels below the full one; H and W must be multiples of 2**levels."""
IN_CHANNELS = 6
"""decoded depth 1 + filled depth condition 1 + mask 1 + decoded RGB 3 (`refiner_inputs`)."""
MASK_CHANNEL = 2
"""Channel of the mask (1 = known) in the refiner's input."""


def refiner_inputs(
    depth_F1HW: torch.Tensor, cond_depth_F1HW: torch.Tensor, mask_F1HW: torch.Tensor, rgb_F3HW: torch.Tensor
) -> torch.Tensor:
    """The refiner's input `F,6,H,W`: the decoded depth and RGB clamped to [-1, 1] (as the sampler outputs
    them), the filled depth condition and the mask. The sampler and the fit both build it here."""
    return torch.cat([depth_F1HW.clamp(-1, 1), cond_depth_F1HW, mask_F1HW, rgb_F3HW.clamp(-1, 1)], dim=1)


class _ErpConv(nn.Module):
    """3x3 convolution with ERP padding, then SiLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.conv(pad_erp(x, 1, 1)))


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(_ErpConv(c_in, c_out), _ErpConv(c_out, c_out))


class DepthRefiner(nn.Module):
    """A small U-Net (`width` channels at full resolution, 2x per level below, at most 4x)."""

    def __init__(self, width: int, levels: int = REFINER_LEVELS) -> None:
        super().__init__()
        if width < 1 or levels < 1:
            raise ValueError(f"DepthRefiner needs width >= 1 and levels >= 1, got {width}, {levels}")
        self.width, self.levels = width, levels
        chans = [width * min(2**k, 4) for k in range(levels + 1)]
        self.down = nn.ModuleList(
            [_block(IN_CHANNELS, chans[0])] + [_block(chans[k - 1], chans[k]) for k in range(1, levels + 1)]
        )
        self.up = nn.ModuleList([_ErpConv(chans[k] + chans[k + 1], chans[k]) for k in range(levels)])
        self.out = nn.Conv2d(chans[0], 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, inputs_F6HW: torch.Tensor) -> torch.Tensor:
        """The refined normalised depth `F,1,H,W` of `refiner_inputs(...)` (equal to the input depth wherever
        the mask is 1)."""
        if inputs_F6HW.dim() != 4 or inputs_F6HW.shape[1] != IN_CHANNELS:
            raise ValueError(
                f"DepthRefiner takes refiner_inputs(...), F,{IN_CHANNELS},H,W; got {tuple(inputs_F6HW.shape)}"
            )
        h, w = inputs_F6HW.shape[-2:]
        if h % 2**self.levels or w % 2**self.levels:
            raise ValueError(f"DepthRefiner needs H and W divisible by {2**self.levels}, got {h}x{w}")
        x = inputs_F6HW.to(self.out.weight.dtype)
        # 1. encoder: full resolution, then halve per level
        skips = [self.down[0](x)]
        for block in self.down[1:]:
            skips.append(block(F.avg_pool2d(skips[-1], 2)))
        # 2. decoder: upsample, join the skip of that level
        y = skips[-1]
        for k in reversed(range(self.levels)):
            y = self.up[k](torch.cat([skips[k], F.interpolate(y, scale_factor=2, mode="nearest")], dim=1))
        # 3. a correction of the holes only
        hole = 1 - x[:, MASK_CHANNEL : MASK_CHANNEL + 1]
        return (x[:, :1] + hole * self.out(y)).to(inputs_F6HW.dtype)
