"""Flow matching for training: sigma sampling, Wan's shift, SD3 loss weightings, noising.

Conventions (rectified flow, as Wan and SD3 train):
- `x_t = (1 - sigma) * x0 + sigma * noise`, sigma in [0, 1] (0 = data, 1 = pure noise);
- the model predicts the velocity `v = noise - x0` (what `DualStreamWan` returns);
- hence `x0 = x_t - sigma * v` and `noise = x_t + (1 - sigma) * v`;
- the model's timestep is `sigma * 1000`.

`--weighting_scheme` keeps SD3's meaning (diffusers' `train_dreambooth_lora_sd3.py`): it names either a
sigma *density* (`logit_normal`, `mode`, `uniform`; loss weight 1) or a loss *weighting* with uniform
sigma (`sigma_sqrt`, `cosmap`, `none`). Unlike the published implementation (NOTES pitfall 6),
`logit_normal` really samples sigma = sigmoid(N(mean, std)).

Randomness is explicit: every draw takes a `torch.Generator`. `sample_generator(seed, step, index,
stream)` derives one from the run seed, the micro-step and the sample's position in the *global* batch
(and the stream for the noise), so the noise is independent per stream and per rank (ranks hold different
global positions), and a given sample gets the same noise whatever the number of data-parallel pairs.
"""

from __future__ import annotations

import math

import numpy as np
import torch

DENSITIES = ("uniform", "logit_normal", "mode")
LOSS_WEIGHTINGS = ("sigma_sqrt", "cosmap", "none")
WEIGHTING_SCHEMES = ("logit_normal", "mode", "uniform", "sigma_sqrt", "cosmap", "none")
_STREAM_CODES = {"rgb": 1, "depth": 2, "yaw": 3, "ssim": 4, "pixel": 5}


def scheme_parts(weighting_scheme: str) -> tuple[str, str]:
    """`--weighting_scheme` -> (sigma density, loss weighting), SD3's pairing."""
    if weighting_scheme not in WEIGHTING_SCHEMES:
        raise ValueError(f"weighting_scheme must be one of {WEIGHTING_SCHEMES}, got {weighting_scheme!r}")
    if weighting_scheme in DENSITIES:
        return weighting_scheme, "none"
    return "uniform", weighting_scheme


def sample_generator(seed: int, step: int, index: int, stream: str | None = None) -> torch.Generator:
    """A CPU generator for (run seed, micro-step, global sample index[, purpose: a stream, "yaw", "ssim"]); stable across runs,
    platforms and processes (numpy's SeedSequence hashes the tuple)."""
    code = 0 if stream is None else _STREAM_CODES[stream]
    words = [int(seed) & 0xFFFFFFFF, int(step), int(index), code]
    assert min(words) >= 0, words
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """Wan / SD3 timestep shift: `sigma' = shift * s / (1 + (shift - 1) * s)` (shift > 1 favours noise)."""
    if shift <= 0:
        raise ValueError(f"the flow shift must be positive, got {shift}")
    return shift * sigma / (1 + (shift - 1) * sigma)


def sample_density(
    density: str,
    n: int,
    generator: torch.Generator,
    *,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    mode_scale: float = 1.29,
) -> torch.Tensor:
    """`n` unshifted sigmas in (0, 1), float64 on the CPU.

    - uniform: U(0, 1);
    - logit_normal: sigmoid(N(logit_mean, logit_std));
    - mode: SD3's mode sampling `1 - u - mode_scale * (cos(pi u / 2)^2 - 1 + u)`, u ~ U(0, 1).
    """
    if density == "uniform":
        return torch.rand(n, generator=generator, dtype=torch.float64)
    if density == "logit_normal":
        return torch.sigmoid(
            logit_mean + logit_std * torch.randn(n, generator=generator, dtype=torch.float64)
        )
    if density == "mode":
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return 1 - u - mode_scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)
    raise ValueError(f"sigma density must be one of {DENSITIES}, got {density!r}")


def loss_weighting(weighting: str, sigma: torch.Tensor) -> torch.Tensor:
    """SD3's per-sample loss weights (diffusers' `compute_loss_weighting_for_sd3`): `sigma_sqrt` =
    sigma^-2, `cosmap` = 2 / (pi (1 - 2 sigma + 2 sigma^2)), `none` = 1."""
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    if weighting not in LOSS_WEIGHTINGS:
        raise ValueError(f"loss weighting must be one of {LOSS_WEIGHTINGS}, got {weighting!r}")
    return compute_loss_weighting_for_sd3(weighting, sigma)


def add_noise(
    x0: torch.Tensor, noise: torch.Tensor, sigma_B: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, target velocity): `x_t = (1 - sigma) x0 + sigma noise`, `target = noise - x0`.

    `sigma_B` has one value per batch element and broadcasts over the remaining dims of `x0`.
    """
    assert x0.shape == noise.shape, (x0.shape, noise.shape)
    s = sigma_B.to(x0.dtype).reshape(-1, *([1] * (x0.dim() - 1)))
    return (1 - s) * x0 + s * noise, noise - x0


def x0_from_velocity(x_t: torch.Tensor, velocity: torch.Tensor, sigma_B: torch.Tensor) -> torch.Tensor:
    """The clean-sample estimate `x0 = x_t - sigma * v` implied by a velocity prediction."""
    s = sigma_B.to(x_t.dtype).reshape(-1, *([1] * (x_t.dim() - 1)))
    return x_t - s * velocity


def sample_sigmas(
    global_indices: list[int],
    step: int,
    seed: int,
    weighting_scheme: str,
    *,
    shift: float = 1.0,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    mode_scale: float = 1.29,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma_B, loss weight_B), float32, one per sample; each sample's sigma comes from its own
    generator (seed, step, global index), so both streams of a pair and every placement agree."""
    density, weighting = scheme_parts(weighting_scheme)
    raw = torch.cat(
        [
            sample_density(
                density,
                1,
                sample_generator(seed, step, i),
                logit_mean=logit_mean,
                logit_std=logit_std,
                mode_scale=mode_scale,
            )
            for i in global_indices
        ]
    )
    # Keep sigma away from 0: sigma_sqrt weighting divides by it and x0 = x_t - sigma v is trivial there.
    sigma = shift_sigma(raw, shift).clamp(1e-4, 1.0)
    return sigma.float(), loss_weighting(weighting, sigma).float()


def sample_noise(
    shape_zThw: tuple[int, ...], global_indices: list[int], step: int, seed: int, stream: str
) -> torch.Tensor:
    """Gaussian noise `B,z,T,h,w` (CPU float32), sample b drawn from generator (seed, step, index_b, stream)."""
    return torch.stack(
        [torch.randn(shape_zThw, generator=sample_generator(seed, step, i, stream)) for i in global_indices]
    )
