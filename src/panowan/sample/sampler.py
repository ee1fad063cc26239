"""Flow-matching sampling loops (k-diffusion style: small pure functions around one model contract).

Flow-matching convention (as Wan and diffusers use it): `x_sigma = (1 - sigma) x0 + sigma noise`,
sigma from 1 (pure noise) to 0 (data), and the model predicts the velocity `noise - x0`.

Model contract: `velocity_fn(latents: dict[str, Tensor], sigma: float) -> dict[str, Tensor]`, one entry per
stream ("rgb", "depth"; any names work), each `B z T h w` (any shape whose last axis is the ERP width).
With `seam_roll=True` the function is also given the keyword `shift` (int): the latents it receives were
rolled by `shift` columns along the last axis, so a model with fixed per-pixel conditioning (condition latents,
Plücker maps) must roll that conditioning by the same amount. The sampler rolls the velocity back, so the
solver's own state (UniPC keeps a history of past predictions) always lives in the un-rolled frame; rolling
the model input instead of the solver state is what makes the roll exact for a multistep solver.

Each stream gets its own scheduler instance (multistep solvers keep per-sample history) and its own noise.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

SAMPLERS = ("unipc", "euler")
VelocityFn = Callable[..., dict[str, Tensor]]


def make_scheduler(sampler: str, flow_shift: float, num_train_timesteps: int = 1000):
    """A fresh diffusers scheduler in flow mode: UniPC as Wan configures it, or flow-matching Euler."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    if flow_shift <= 0:
        raise ValueError(f"flow_shift must be > 0, got {flow_shift}")
    if sampler == "unipc":
        return UniPCMultistepScheduler(
            num_train_timesteps=num_train_timesteps,
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=flow_shift,
        )
    if sampler == "euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps, shift=flow_shift)
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")


def stream_seed(seed: int, stream: str) -> int:
    """A per-stream seed derived from the run's seed (stable across processes and Python runs)."""
    return (int(seed) * 1_000_003 + zlib.crc32(stream.encode())) % (2**63)


def stream_noise(
    shapes: Mapping[str, tuple[int, ...]],
    seed: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> dict[str, Tensor]:
    """Independent standard-normal noise per stream, each from its own seeded CPU generator.

    Drawn on the CPU so that a seed gives the same noise on every device, and per stream so that a process
    that owns only one stream (torchrun, one stream per GPU) draws exactly what a single process would.
    """
    out = {}
    for name, shape in shapes.items():
        gen = torch.Generator(device="cpu").manual_seed(stream_seed(seed, name))
        out[name] = torch.randn(tuple(shape), generator=gen, dtype=torch.float32).to(
            device=device, dtype=dtype
        )
    return out


def seam_offsets(steps: int, width: int, granularity: int = 2) -> list[int]:
    """Horizontal roll (columns) used at each step: 0 first, then a low-discrepancy walk over the width.

    Offsets are multiples of `granularity` (Wan patchifies 2 x 2 latents, so even offsets keep patches whole),
    spread by the golden ratio so that no column stays next to the seam for long.
    """
    assert steps >= 0 and width > 0 and granularity > 0
    slots = max(1, width // granularity)
    golden = (math.sqrt(5) - 1) / 2
    return [(round((i * golden) % 1.0 * slots) % slots) * granularity for i in range(steps)]


def roll_w(latents: Mapping[str, Tensor], shift: int) -> dict[str, Tensor]:
    """Roll every tensor by `shift` along its last (width) axis; `roll_w(roll_w(x, k), -k) == x`."""
    if shift == 0:
        return dict(latents)
    return {k: torch.roll(v, shifts=shift, dims=-1) for k, v in latents.items()}


def guided_velocity(
    cond: Mapping[str, Tensor], uncond: Mapping[str, Tensor], scale: float
) -> dict[str, Tensor]:
    """Classifier-free guidance: `uncond + scale (cond - uncond)` per stream."""
    return {k: uncond[k] + scale * (cond[k] - uncond[k]) for k in cond}


def _call(fn: VelocityFn, latents: dict[str, Tensor], sigma: float, shift: int | None) -> dict[str, Tensor]:
    """One model call; with seam rolling the input is rolled by `shift` and the output rolled back."""
    if shift is None:
        return fn(latents, sigma)
    out = fn(roll_w(latents, shift), sigma, shift=shift)
    return roll_w(out, -shift)


def sample_flow(
    velocity_fn: VelocityFn,
    noise: Mapping[str, Tensor],
    *,
    steps: int,
    sampler: str = "unipc",
    flow_shift: float = 3.0,
    guidance: float = 1.0,
    uncond_fn: VelocityFn | None = None,
    seam_roll: bool = False,
    seam_granularity: int = 2,
    progress: bool = True,
    desc: str = "sampling",
) -> dict[str, Tensor]:
    """Integrate the flow from `noise` (sigma = 1) to data (sigma = 0); returns the final latents per stream.

    guidance == 1 calls `velocity_fn` once per step; guidance > 1 also calls `uncond_fn` (the model with
    the negative prompt) and combines them. With `seam_roll`, each step's model call sees the latents rolled
    horizontally by `seam_offsets(...)[step]`, so the ERP's left and right edges sit side by side in most steps.
    """
    from tqdm.auto import tqdm

    if steps < 1:
        raise ValueError(f"the number of sampling steps must be >= 1, got {steps}")
    if guidance < 1:
        raise ValueError(f"guidance_scale must be >= 1 (1 = no guidance), got {guidance}")
    if guidance > 1 and uncond_fn is None:
        raise ValueError("guidance_scale > 1 needs an unconditional model pass (uncond_fn)")
    if not noise:
        raise ValueError("sample_flow needs at least one stream of noise")
    schedulers = {}
    for name in noise:
        schedulers[name] = make_scheduler(sampler, flow_shift)
        schedulers[name].set_timesteps(steps, device=next(iter(noise.values())).device)
        # Integer timesteps repeat near sigma = 1 for many steps / large shifts; diffusers would then start at
        # the second copy. Fix the start explicitly.
        schedulers[name].set_begin_index(0)
    first = next(iter(schedulers.values()))
    sigmas, timesteps = first.sigmas, first.timesteps
    width = next(iter(noise.values())).shape[-1]
    offsets = seam_offsets(steps, width, seam_granularity) if seam_roll else [None] * steps

    latents = {k: v.clone() for k, v in noise.items()}
    for i in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        sigma = float(sigmas[i])
        velocity = _call(velocity_fn, latents, sigma, offsets[i])
        if guidance > 1:
            assert uncond_fn is not None
            velocity = guided_velocity(velocity, _call(uncond_fn, latents, sigma, offsets[i]), guidance)
        missing = set(latents) - set(velocity)
        if missing:
            raise ValueError(f"velocity_fn returned no velocity for streams {sorted(missing)}")
        for name, sched in schedulers.items():
            assert torch.equal(sched.sigmas, sigmas)  # one schedule for all streams
            v = velocity[name].to(latents[name].dtype)
            latents[name] = sched.step(v, timesteps[i], latents[name], return_dict=False)[0]
    return latents
