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

from panowan.models.erp_unet import ErpUNet

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


class DepthRefiner(ErpUNet):
    """A small U-Net (`width` channels at full resolution, 2x per level below, at most 4x)."""

    def __init__(self, width: int, levels: int = REFINER_LEVELS) -> None:
        if width < 1 or levels < 1:
            raise ValueError(f"DepthRefiner needs width >= 1 and levels >= 1, got {width}, {levels}")
        super().__init__(IN_CHANNELS, 1, width, levels)

    def forward(self, inputs_F6HW: torch.Tensor) -> torch.Tensor:
        """The refined normalised depth `F,1,H,W` of `refiner_inputs(...)` (equal to the input depth wherever
        the mask is 1)."""
        self.check_input(inputs_F6HW, "DepthRefiner (refiner_inputs(...))")
        x = inputs_F6HW.to(self.out.weight.dtype)
        hole = 1 - x[:, MASK_CHANNEL : MASK_CHANNEL + 1]
        return (x[:, :1] + hole * self.body(x)).to(inputs_F6HW.dtype)
