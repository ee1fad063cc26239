"""The model's learnt full-resolution decoding stage (`DualStreamConfig.pixel_decoder_width`).

Why: the analytic codec speaks in 8x8-pixel blocks. A block prediction cannot follow a hole a few pixels wide,
cannot draw an edge inside a block, and decoded alone it blurs what the transformer knows (BENCHMARKS.md,
"codec bound"). Wan's own VAE decoder is a learnt network for the same reason. Here each stream gets a small
ERP U-Net (`erp_unet.ErpUNet`) in the role of that decoder: it reads the codec's decoding of the stream's
latents and, at full resolution, the stream's own condition (known pixels, fill in the holes) and the mask,
and writes a correction of the holes. With cross-stream exchange on (`DualStreamConfig.cross_stream`) it also
reads the other stream's decoding and condition, so the RGB decoder sees where the depth stream puts surfaces
(a disocclusion is background, not the occluder beside it) and the depth decoder sees colour edges.

It is trained with the transformer, through its x0 prediction (`panowan.train` term "pixel"), so it is a stage of
the model, not a separate fit. Its output layer starts at zero: a fresh decoder is the codec's decoding.

Per frame, channels (`decoder_channels`): own coarse decoding (3 RGB / 1 depth), own condition (3 / 1), mask (1),
then with cross-stream exchange the other stream's coarse decoding and condition, then with `rays` the pixel's
unit ray direction in the camera frame (`geometry.erp.erp_directions`, x y z; added by the decoder itself). Values are in the model's
normalised spaces: RGB in [-1, 1], depth `RoomDataset`'s normalised log depth; the decoded inputs are clamped to
[-1, 1] as the sampler clamps its outputs.
"""

from __future__ import annotations

import torch
from torch import nn

from panowan.geometry.erp import erp_directions
from panowan.models.erp_unet import ErpUNet

STREAM_CHANNELS = {"rgb": 3, "depth": 1}
"""Channels of each stream's pixel video: RGB 3, normalised depth 1."""
DECODER_LEVELS = 4
"""Resolution levels below the full one (256x512 -> 16x32 at the bottom); H and W multiples of 16."""


def decoder_channels(stream: str, cross_stream: bool) -> int:
    """Channels of `stream`'s `decoder_inputs`: own coarse + own condition + mask (+ the other stream's two)."""
    own = 2 * STREAM_CHANNELS[stream] + 1
    other = 2 * STREAM_CHANNELS["depth" if stream == "rgb" else "rgb"]
    return own + (other if cross_stream else 0)


RAY_CHANNELS = 3
"""Channels a decoder with `rays` appends to its input: the unit ray direction (camera frame) of each pixel."""


class PixelDecoder(ErpUNet):
    """One stream's decoder: `N,C_in,H,W` (`decoder_inputs`) -> `N,C_s,H,W`, the coarse decoding plus a
    correction of the hole pixels (mask 0) only."""

    def __init__(
        self, stream: str, width: int, cross_stream: bool, levels: int = DECODER_LEVELS, rays: bool = False
    ) -> None:
        if stream not in STREAM_CHANNELS:
            raise ValueError(f"PixelDecoder stream must be one of {tuple(STREAM_CHANNELS)}, got {stream!r}")
        if width < 1:
            raise ValueError(f"PixelDecoder width must be >= 1, got {width}")
        self.stream, self.cross_stream, self.rays = stream, cross_stream, rays
        self.stream_channels = STREAM_CHANNELS[stream]
        self.input_channels = decoder_channels(stream, cross_stream)
        extra = RAY_CHANNELS if rays else 0
        super().__init__(self.input_channels + extra, self.stream_channels, width, levels)

    def forward(self, inputs_NCHW: torch.Tensor) -> torch.Tensor:
        """`inputs_NCHW`: `decoder_inputs(...)`, `N,decoder_channels(stream, cross_stream),H,W`."""
        x = inputs_NCHW.to(self.out.weight.dtype)
        if self.rays:
            if x.dim() != 4 or x.shape[1] != self.input_channels:
                raise ValueError(
                    f"PixelDecoder[{self.stream}] takes N,{self.input_channels},H,W; got {tuple(x.shape)}"
                )
            x = torch.cat([x, _rays_NCHW(x)], dim=1)
        self.check_input(x, f"PixelDecoder[{self.stream}] (decoder_inputs(...))")
        c = self.stream_channels
        coarse, hole = x[:, :c], 1 - x[:, 2 * c : 2 * c + 1]
        return (coarse + hole * self.body(x)).to(inputs_NCHW.dtype)


def _rays_NCHW(like_NCHW: torch.Tensor) -> torch.Tensor:
    """Unit ray directions of the ERP pixels, `N,3,H,W` in the camera frame, dtype and device of `like_NCHW`."""
    n, _, h, w = like_NCHW.shape
    dirs_HW3 = erp_directions(h, w, device=like_NCHW.device)
    return dirs_HW3.permute(2, 0, 1).to(like_NCHW.dtype).expand(n, -1, -1, -1)


def _frames(x_BCFHW: torch.Tensor) -> torch.Tensor:
    """`B,C,F,H,W` -> `B*F,C,H,W`."""
    b, c, f, h, w = x_BCFHW.shape
    return x_BCFHW.transpose(1, 2).reshape(b * f, c, h, w)


def _video(x_NCHW: torch.Tensor, batch: int) -> torch.Tensor:
    """`B*F,C,H,W` -> `B,C,F,H,W`."""
    n, c, h, w = x_NCHW.shape
    return x_NCHW.reshape(batch, n // batch, c, h, w).transpose(1, 2)


def decoder_inputs(
    stream: str,
    coarse: dict[str, torch.Tensor],
    conditions: dict[str, torch.Tensor],
    mask_B1FHW: torch.Tensor,
    cross_stream: bool,
) -> torch.Tensor:
    """`stream`'s decoder input `B*F,C_in,H,W` from the coarse decodings and conditions of the streams
    (`B,C_s,F,H,W` each: rgb 3, depth 1) and the mask `B,1,F,H,W` (1 = known)."""
    other = "depth" if stream == "rgb" else "rgb"
    parts = [coarse[stream].clamp(-1, 1), conditions[stream], mask_B1FHW]
    if cross_stream:
        parts += [coarse[other].clamp(-1, 1), conditions[other]]
    return _frames(torch.cat([p.to(coarse[stream].dtype) for p in parts], dim=1))


def apply_decoders(
    decoders: nn.ModuleDict,
    coarse: dict[str, torch.Tensor],
    conditions: dict[str, torch.Tensor],
    mask_B1FHW: torch.Tensor,
    cross_stream: bool,
) -> dict[str, torch.Tensor]:
    """The decoded pixel videos `B,C_s,F,H,W` of the streams in `decoders` (a stream with no decoder is not in
    the result). `coarse` must hold both streams when `cross_stream` is on."""
    batch = mask_B1FHW.shape[0]
    return {
        s: _video(decoder(decoder_inputs(s, coarse, conditions, mask_B1FHW, cross_stream)), batch)
        for s, decoder in decoders.items()
    }
