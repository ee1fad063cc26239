"""Latent codecs: video `B,3,F,H,W` in [-1, 1] <-> latents `B,z,T,h,w`, packed like Wan's VAE.

Temporal packing (4x): latent frame 0 holds pixel frame 0 alone; latent frame t >= 1 holds pixel
frames 4t-3 .. 4t, so F = 4(T - 1) + 1. Spatial packing: 8x (h = H / 8, w = W / 8).

- `WanVAECodec` wraps diffusers' `AutoencoderKLWan` and normalises with the VAE config's
  `latents_mean` / `latents_std`, exactly as `WanImageToVideoPipeline` does.
- `AnalyticCodec` needs no weights (tests, embedded default model): area-pool, pixel-unshuffle,
  and stack the 4 frames of a latent frame in the channels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from panowan.models.presets import ANALYTIC_POOLS, DualStreamConfig, analytic_z_dim

if TYPE_CHECKING:
    from diffusers import AutoencoderKLWan

TEMPORAL_FACTOR = 4
SPATIAL_FACTOR = 8


def latent_frames(num_frames: int) -> int:
    """T = (F - 1) / 4 + 1."""
    return (num_frames - 1) // TEMPORAL_FACTOR + 1


def check_video(
    video: torch.Tensor, name: str = "video", channels: int | None = 3, multiple: int = 16
) -> None:
    """Raise ValueError unless `video` is `B,C,F,H,W` with F = 4k + 1 and H, W multiples of `multiple`."""
    if video.dim() != 5:
        raise ValueError(f"{name} must be B,C,F,H,W; got shape {tuple(video.shape)}")
    _, c, f, h, w = video.shape
    if channels is not None and c != channels:
        raise ValueError(f"{name} must have {channels} channels (B,C,F,H,W); got shape {tuple(video.shape)}")
    if f % TEMPORAL_FACTOR != 1:
        raise ValueError(
            f"{name}: the frame count must be 4k + 1 (5, 9, 13, ...); got F={f} in {tuple(video.shape)}"
        )
    if h % multiple or w % multiple:
        raise ValueError(
            f"{name}: H and W must be multiples of {multiple}; got H={h}, W={w} in {tuple(video.shape)}"
        )


def pack_frames(x_BCFHW: torch.Tensor) -> torch.Tensor:
    """`B,C,F,H,W` -> `B,C,T,4,H,W`: frame 0 repeated into the 4 slots of latent frame 0, then frames
    4t-3 .. 4t in the slots of latent frame t (the layout of Wan's VAE and of the I2V mask)."""
    first = x_BCFHW[:, :, :1].expand(-1, -1, TEMPORAL_FACTOR, -1, -1)
    seq = torch.cat([first, x_BCFHW[:, :, 1:]], dim=2)  # B,C,4T,H,W
    b, c, n, h, w = seq.shape
    return seq.reshape(b, c, n // TEMPORAL_FACTOR, TEMPORAL_FACTOR, h, w)


def unpack_frames(x_BCT4HW: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_frames`: frame 0 is the mean of latent frame 0's 4 slots (the least-squares
    inverse of repeating it). `B,C,T,4,H,W` -> `B,C,F,H,W`."""
    b, c, t, _, h, w = x_BCT4HW.shape
    first = x_BCT4HW[:, :, 0].mean(dim=2, keepdim=True)  # B,C,1,H,W
    rest = x_BCT4HW[:, :, 1:].reshape(b, c, (t - 1) * TEMPORAL_FACTOR, h, w)
    return torch.cat([first, rest], dim=2)


def pad_erp(x: torch.Tensor, horizontal: int, vertical: int) -> torch.Tensor:
    """Pad the last two dims (rows, columns) of an ERP tensor: columns wrap around (the seam),
    rows replicate (the poles)."""
    if horizontal:
        x = torch.cat([x[..., -horizontal:], x, x[..., :horizontal]], dim=-1)
    if vertical:
        x = torch.cat(
            [
                x[..., :1, :].expand(*x.shape[:-2], vertical, -1),
                x,
                x[..., -1:, :].expand(*x.shape[:-2], vertical, -1),
            ],
            dim=-2,
        )
    return x


@runtime_checkable
class LatentCodec(Protocol):
    """Video `B,3,F,H,W` in [-1, 1] <-> latents `B,z,T,h,w` (T = (F-1)/4 + 1, h = H/8, w = W/8)."""

    z_dim: int

    def encode(self, video: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


class WanVAECodec:
    """diffusers' `AutoencoderKLWan`, latents normalised `(mu - latents_mean) / latents_std`.

    `encode` takes the posterior mode without gradient (conditioning and targets); `decode` is
    differentiable (a loss may decode x0 predictions).
    """

    def __init__(self, vae: AutoencoderKLWan, *, tiling: bool = False, slicing: bool = False) -> None:
        self.vae = vae
        self.z_dim = int(vae.config.z_dim)
        if tiling:
            vae.enable_tiling()
        if slicing:
            vae.enable_slicing()

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.z_dim, 1, 1, 1)
        mean = torch.tensor(self.vae.config.latents_mean, device=like.device, dtype=torch.float32).view(shape)
        std = torch.tensor(self.vae.config.latents_std, device=like.device, dtype=torch.float32).view(shape)
        return mean, std

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        check_video(video, "video", multiple=SPATIAL_FACTOR)
        vae_dtype = next(self.vae.parameters()).dtype
        mu = self.vae.encode(video.to(vae_dtype)).latent_dist.mode()
        mean, std = self._stats(mu)
        return ((mu.float() - mean) / std).to(video.dtype)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.dim() != 5 or latents.shape[1] != self.z_dim:
            raise ValueError(f"latents must be B,{self.z_dim},T,h,w; got shape {tuple(latents.shape)}")
        mean, std = self._stats(latents)
        vae_dtype = next(self.vae.parameters()).dtype
        raw = (latents.float() * std + mean).to(vae_dtype)
        return self.vae.decode(raw, return_dict=False)[0].to(latents.dtype)


class AnalyticCodec:
    """A weight-free codec with Wan's packing: z = 3 * 4 * (8 / pool)^2 (48 for pool 4).

    encode: area-pool by `pool`, pixel-unshuffle by r = 8 / pool, stack the 4 frames of each latent
    frame. Channel order (colour, frame slot, sub-row, sub-column). decode: the exact inverse of the
    packing, then bilinear upsampling by `pool` with circular horizontal padding (the ERP seam).
    With pool = 1 decode(encode(x)) == x.
    """

    def __init__(self, pool: int = 4) -> None:
        if pool not in ANALYTIC_POOLS:
            raise ValueError(f"AnalyticCodec pool must be one of {ANALYTIC_POOLS}, got {pool}")
        self.pool = pool
        self.unshuffle = SPATIAL_FACTOR // pool
        self.z_dim = analytic_z_dim(pool)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        check_video(video, "video", multiple=SPATIAL_FACTOR)
        b, c, f, h, w = video.shape
        frames = video.transpose(1, 2).reshape(b * f, c, h, w)
        pooled = F.avg_pool2d(frames, self.pool) if self.pool > 1 else frames
        sub = F.pixel_unshuffle(pooled, self.unshuffle)  # B*F, c*r*r, h/8, w/8
        sub = sub.reshape(b, f, c * self.unshuffle**2, h // 8, w // 8).transpose(1, 2)  # B, c*r*r, F, h, w
        packed = pack_frames(sub)  # B, c*r*r, T, 4, h, w
        _, _, t, s, hh, ww = packed.shape
        # Channel order (colour, slot, sub-row, sub-column).
        packed = packed.reshape(b, c, self.unshuffle**2, t, s, hh, ww).permute(0, 1, 4, 2, 3, 5, 6)
        return packed.reshape(b, self.z_dim, t, hh, ww).contiguous()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.dim() != 5 or latents.shape[1] != self.z_dim:
            raise ValueError(f"latents must be B,{self.z_dim},T,h,w; got shape {tuple(latents.shape)}")
        b, _, t, hh, ww = latents.shape
        r2 = self.unshuffle**2
        x = latents.reshape(b, 3, TEMPORAL_FACTOR, r2, t, hh, ww).permute(
            0, 1, 3, 4, 2, 5, 6
        )  # B,3,rr,T,4,h,w
        x = unpack_frames(x.reshape(b, 3 * r2, t, TEMPORAL_FACTOR, hh, ww))  # B, 3*rr, F, h, w
        f = x.shape[2]
        x = x.transpose(1, 2).reshape(b * f, 3 * r2, hh, ww)
        x = F.pixel_shuffle(x, self.unshuffle)  # B*F, 3, H/pool, W/pool
        if self.pool > 1:
            p = self.pool
            # One pooled pixel of context each side; align_corners=False maps the crop exactly onto
            # bilinear interpolation with wrapped columns and clamped rows.
            up = F.interpolate(pad_erp(x, 1, 1), scale_factor=p, mode="bilinear", align_corners=False)
            x = up[..., p:-p, p:-p]
        return x.reshape(b, f, 3, *x.shape[-2:]).transpose(1, 2).contiguous()


def build_codec(
    config: DualStreamConfig, vae: AutoencoderKLWan | None = None, **vae_options: bool
) -> LatentCodec:
    """The codec named by `config.codec`; "wan_vae" needs the loaded `vae` (options: tiling, slicing)."""
    if config.codec == "analytic":
        if vae is not None:
            raise ValueError(
                "config.codec is 'analytic' but a VAE was passed; pass vae=None or use codec='wan_vae'"
            )
        return AnalyticCodec(config.analytic_pool)
    if vae is None:
        raise ValueError("config.codec is 'wan_vae': pass the loaded AutoencoderKLWan as vae")
    codec = WanVAECodec(vae, **vae_options)
    if codec.z_dim != config.z_dim:
        raise ValueError(f"the VAE has z_dim {codec.z_dim} but the model config expects {config.z_dim}")
    return codec
