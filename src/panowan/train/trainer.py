"""The training loop of `panowan train`: `Trainer` (setup, micro-step, optimiser step, checkpoints) and
`train()`. The rest of a run lives beside it: `loader.py` (the room sampler), `build.py` (model, codec,
conditioning encoder, embedding cache), `objective.py` (targets and loss assembly), `run_log.py`
(metrics.jsonl / TensorBoard / config.json), `validation.py` (held-out room sampling), `device.py`.
Those names stay importable from here.

Placement by world size (panowan.parallel.groups): one process holds both streams; `torchrun` with 2N
ranks runs N data-parallel pairs, rank 2p holding pair p's RGB stream and rank 2p+1 its depth stream.

Data: `RoomLoader` (`loader.py`), seeded and resumable, sharded by pair, skipping bad rooms on every
rank alike.

Per micro-step: codec-encode ground truth and condition (no grad), draw sigma and noise from generators
seeded by (seed, micro-step, global slot[, stream]) (`flow.py`), predict the velocity, compute the
stream's losses (`losses.py`), backward. Per optimiser step: `sync_gradients`, one global gradient norm,
a joint finiteness decision (`all_ranks_finite`: skip or abort together), clipping, AdamW, LR schedule,
metrics (rank 0), checkpoints, validation.

Stopping (`train()` installs `panowan.utils.signals.StopRequest` once set-up is done): SIGTERM or SIGINT
lets the current optimiser step finish; after it the ranks agree (an all-reduce MAX of the signal number,
one scalar per step, only when distributed, so a signal seen by any rank stops every rank at the same
step), write checkpoint-STEP whatever the interval, skip validation and return `TrainResult.stopped_by`; `panowan train`
then exits 0 and the same command resumes. A second signal kills the process at once (the OS default).
During start-up (process group, model, data) the signals keep their default action: nothing is trained
yet, and a worker blocked connecting to a dead peer ends at once when torchrun's agent stops it (with the
handler it would sit out the agent's 30 s before SIGKILL, measured).
A collective that fails (a dead or stuck peer: gloo reports a closed connection at once, NCCL and a stuck
peer take `--nccl_timeout_s`) is re-raised as `PeerFailure` naming the rank, the step and the timeout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from panowan.data.layout import RoomError
from panowan.models.presets import filled_streams
from panowan.parallel.groups import max_over_ranks
from panowan.train import checkpoint as ckpt
from panowan.train.build import Built as Built
from panowan.train.build import EmbeddingCache, build_model
from panowan.train.build import build_conditioning_encoder as build_conditioning_encoder
from panowan.train.config import TrainConfig
from panowan.train.device import _autocast, _to
from panowan.train.flow import add_noise, sample_generator, sample_noise, sample_sigmas
from panowan.train.loader import RoomLoader
from panowan.train.objective import LOSS_TERMS, stream_losses, stream_targets, total_loss
from panowan.train.run_log import Metrics, _peak_memory_mb, record_config
from panowan.train.validation import validate, validation_room
from panowan.utils.signals import StopRequest

log = logging.getLogger(__name__)

STREAMS = ("rgb", "depth")
MIN_STEPS_FOR_SKIP_FRACTION = 10

LossHook = Callable[[int, int, torch.Tensor], torch.Tensor]
"""(optimiser step, rank, loss) -> loss: lets tests inject faults (e.g. a NaN on one rank)."""


# ------------------------------------------------------------------------------------------- steps
def global_grad_norm(groups, stream_params: list, shared_params: list) -> torch.Tensor:
    """L2 norm of the whole model's gradient: per-stream parameters of both ranks of a pair plus the
    shared ones once (they are identical on both ranks after `sync_gradients`)."""

    def sq(params):
        grads = [p.grad.float().pow(2).sum() for p in params if p.grad is not None]
        return torch.stack(grads).sum() if grads else torch.zeros(())

    device = (stream_params or shared_params)[0].device
    total = sq(stream_params).to(device)
    if not groups.distributed or groups.rank % 2 == 0:
        total = total + sq(shared_params).to(device)
    if groups.distributed:
        dist.all_reduce(total, group=groups.pair_group)
    return total.sqrt()


def _is_collective_error(error: RuntimeError) -> bool:
    """A failed collective: torch's `DistError` family (NCCL, the store), or gloo's plain RuntimeError, whose
    message names its source file under gloo/ ("Connection reset by peer", "Timed out waiting ...")."""
    return isinstance(error, dist.DistError) or "gloo/" in str(error)


# ------------------------------------------------------------------------------------------- train
@dataclasses.dataclass
class TrainResult:
    """How a run ended: its last step, fault counters, and `stopped_by` ("SIGTERM", "SIGINT", None for a run
    that reached --max_train_steps; a rank that did not see the signal itself gets its peer's)."""

    step: int
    skipped_steps: int
    skipped_rooms: int
    output_dir: Path
    stopped_by: str | None = None


class PeerFailure(RuntimeError):
    """A collective with the other ranks failed: a rank died, hung, or was stopped."""


class Trainer:
    """One process's part of a training run (see the module docstring)."""

    def __init__(
        self, config: TrainConfig, loss_hook: LossHook | None = None, stop: StopRequest | None = None
    ) -> None:
        from panowan.parallel.groups import StreamGroups, init_distributed

        self.config, self.loss_hook = config, loss_hook
        self.stop = stop if stop is not None else StopRequest()  # not entered: a flag nobody sets
        self.owns_process_group = not dist.is_initialized()
        self.device = init_distributed(timeout_s=config.nccl_timeout_s)
        self.groups = StreamGroups.from_world()
        self.rank = self.groups.rank
        self.output_dir = Path(config.output_dir)
        torch.manual_seed(config.seed)
        np.random.seed(config.seed % 2**32)

    # -- setup
    def setup(self) -> None:
        from diffusers.optimization import get_scheduler

        from panowan.data.dataset import RoomDataset
        from panowan.models.lora import trainable_parameter_groups
        from panowan.parallel.grad_sync import broadcast_parameters

        c = self.config
        resume = ckpt.resolve_resume(self.output_dir, c.resume_from_checkpoint, verify=c.verify_checkpoints)
        if (
            resume is None
            and c.resume_from_checkpoint == "none"
            and ckpt.complete_checkpoints(self.output_dir)
        ):
            raise ValueError(
                f"{self.output_dir} already holds checkpoints; use --resume_from_checkpoint latest or another --output_dir"
            )
        self._record_config(resume)
        fills = c.condition_fills()  # reads the --init_from export: once
        self.filled = filled_streams(fills)
        self.dataset = RoomDataset(
            c.data_root,
            num_frames=c.num_frames,
            height=c.resolution,
            skip_bad_rooms=True,
            seed=c.seed,
            cache_files=c.cache_files,
            cond_fill=fills["rgb"],
            cond_depth_fill=fills["depth"],
        )
        rooms = list(range(len(self.dataset)))
        self.validation_index = self._validation_room() if c.validation_steps else None
        if self.validation_index is not None:
            rooms.remove(self.validation_index)
        self.loader = RoomLoader(self.dataset, rooms, batch_size=c.train_batch_size, num_pairs=self.groups.num_pairs,
                                 pair_index=self.groups.pair_index, seed=c.seed, max_skip_fraction=c.max_skip_fraction,
                                 workers=c.dataloader_workers)  # fmt: skip
        built = build_model(c, self.groups, self.device)
        self.model, self.codec, self.model_config = built.model, built.codec, built.model_config
        self.embeddings = EmbeddingCache(built.encoder)
        if c.needs_pretrained():
            self._encode_all_rooms(rooms)
        param_groups = trainable_parameter_groups(self.model)
        self.stream_params = param_groups["streams"] + param_groups["interaction"] + param_groups["pixel"]
        self.shared_params = param_groups["plucker"]
        broadcast_parameters(self.groups, self.stream_params, self.shared_params)
        self.params = self.stream_params + self.shared_params
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=c.learning_rate,
            betas=(c.adam_beta1, c.adam_beta2),
            eps=c.adam_epsilon,
            weight_decay=c.adam_weight_decay,
        )
        self.scheduler = get_scheduler(c.lr_scheduler, self.optimizer, num_warmup_steps=c.lr_warmup_steps,
                                       num_training_steps=c.max_train_steps)  # fmt: skip
        self.scaler = torch.amp.GradScaler(self.device.type) if c.mixed_precision == "fp16" else None
        self.step, self.skipped_steps = 0, 0
        if resume is not None:
            state = ckpt.load_checkpoint(resume, load_weights=self._load_weights, local_streams=self.groups.local_streams,
                                         optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler)  # fmt: skip
            self.step, self.skipped_steps = int(state["step"]), int(state["skipped_steps"])
            self.loader.load_state(state["loader"])
            log.info("resumed from %s at step %d", resume, self.step)
            if self.step >= c.max_train_steps:
                log.warning("%s is at step %d, not before --max_train_steps %d: this run trains nothing "
                            "(raise --max_train_steps, or start another --output_dir)", resume, self.step, c.max_train_steps)  # fmt: skip
        self.metrics = Metrics(self.output_dir, self.step, c.tensorboard) if self.rank == 0 else None

    def _encode_all_rooms(self, rooms: list[int]) -> None:
        """Encode every room's prompt and view 0 once, then release the large encoders."""
        for index in [*rooms, *([] if self.validation_index is None else [self.validation_index])]:
            info = self.dataset.rooms[index]
            try:
                sample = self.dataset[index]
            except RoomError:
                continue  # the loader meets it again, names it and counts it
            self.embeddings.get(info.paths.room_id, sample.prompt, sample.cond_rgb[0])
        self.embeddings.drop_encoder()

    def _record_config(self, resume: Path | None) -> None:
        record_config(self.output_dir, self.config, self.rank, resume)

    def _validation_room(self) -> int:
        return validation_room(self.dataset, self.config)

    def _save_weights(self, folder: Path) -> None:
        from panowan.models.lora import save_trainable

        save_trainable(self.model, folder)

    def _load_weights(self, folder: Path) -> None:
        from panowan.models.lora import load_trainable

        load_trainable(self.model, folder)

    # -- one micro-step
    def micro_step(self, micro_index: int) -> tuple[torch.Tensor, dict[str, float], int]:
        """Forward and backward of one micro-batch; returns (summed loss, logged terms, samples)."""
        from panowan.models.conditioning import frames_to_video
        from panowan.train.augment import random_shifts, yaw_roll

        c = self.config
        batch, slots = self.loader.next_batch()
        # Conditioning from the un-rotated view 0, the input a user gives at inference (and the same
        # embedding whichever micro-step meets the room first, so a resumed run replays exactly).
        text, image = self.embeddings.batch(batch, self.device)
        if c.yaw_augment:
            shifts = torch.cat([random_shifts(1, batch.rgb.shape[1], c.width, sample_generator(c.seed, micro_index, s, "yaw"),
                                              c.yaw_step_px) for s in slots])  # fmt: skip
            batch = yaw_roll(batch, shifts)
        batch = _to(batch, self.device)
        sigma, weight = sample_sigmas(slots, micro_index, c.seed, c.weighting_scheme, shift=c.flow_shift,
                                      logit_mean=c.logit_mean, logit_std=c.logit_std, mode_scale=c.mode_scale)  # fmt: skip
        sigma, weight = sigma.to(self.device), weight.to(self.device)
        noisy, cond, ctx = {}, {}, {}
        for s in self.groups.local_streams:
            x0, cond[s], valid = stream_targets(self.codec, batch, s, filled=s in self.filled)
            noise = sample_noise(tuple(x0.shape[1:]), slots, micro_index, c.seed, s).to(self.device)
            noisy[s], target = add_noise(x0, noise, sigma)
            ctx[s] = {"x0": x0, "target": target, "valid": valid, "known": cond[s][:, :4]}
        with _autocast(c, self.device):
            velocity = self.model(noisy, cond, sigma * 1000, frames_to_video(batch.plucker), text, image)
        loss = torch.zeros((), device=self.device)
        logged: dict[str, float] = {}
        pixel = self._pixel_losses(batch, noisy, velocity, sigma, slots, micro_index)
        for s in self.groups.local_streams:
            gen = sample_generator(c.seed, micro_index, 0, "ssim")
            terms = stream_losses(c, self.codec, s, velocity=velocity[s], target=ctx[s]["target"], x_t=noisy[s],
                                  x0=ctx[s]["x0"], sigma=sigma, weight=weight, known=ctx[s]["known"],
                                  valid=ctx[s]["valid"], ssim_generator=gen)  # fmt: skip
            if s in pixel:
                terms["pixel"] = pixel[s]
            stream_total = total_loss(c, terms)
            loss = loss + stream_total
            logged[f"loss/{s}"] = float(stream_total.detach())
            logged.update({f"loss/{s}/{k}": float(v.detach()) for k, v in terms.items()})
        if self.loss_hook is not None:
            loss = self.loss_hook(self.step, self.rank, loss)
        scaled = loss / c.gradient_accumulation_steps
        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        return loss.detach(), logged, len(slots)

    # -- one optimiser step
    def _pixel_losses(self, batch, noisy, velocity, sigma, slots: list[int], micro_index: int) -> dict:
        """The pixel decoders' loss per local stream (`train.pixel_loss`); empty for a model without them."""
        c = self.config
        if self.model.pixel_decoders is None or not c.pixel_weight:
            return {}
        from panowan.train.flow import x0_from_velocity
        from panowan.train.pixel_loss import pick_frames, pixel_decoder_losses

        x0_pred = {s: x0_from_velocity(noisy[s], velocity[s].float(), sigma) for s in velocity}
        frames = pick_frames(batch.rgb.shape[1], c.pixel_frames, c.seed, micro_index, slots)
        with _autocast(c, self.device):
            return pixel_decoder_losses(self.model, self.codec, batch, x0_pred, self.filled, frames,
                                        latitude=c.latitude_weighting)  # fmt: skip

    def optimizer_step(self) -> dict[str, Any]:
        from panowan.parallel.grad_sync import all_ranks_finite, sync_gradients

        c = self.config
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.device)
        sums: dict[str, float] = {}
        samples = 0
        for micro in range(c.gradient_accumulation_steps):
            loss, logged, n = self.micro_step(self.step * c.gradient_accumulation_steps + micro)
            loss_sum += loss
            samples += n
            for k, v in logged.items():
                sums[k] = sums.get(k, 0.0) + v / c.gradient_accumulation_steps
        sync_gradients(self.groups, self.stream_params, self.shared_params)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = global_grad_norm(self.groups, self.stream_params, self.shared_params)
        finite = all_ranks_finite(torch.stack([loss_sum.float(), grad_norm.float().to(loss_sum.device)]))
        lr = self.scheduler.get_last_lr()[0]
        if finite:
            if c.max_grad_norm > 0:
                torch.nn.utils.clip_grads_with_norm_(self.params, c.max_grad_norm, grad_norm)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.scheduler.step()
        else:
            self._nonfinite(float(loss_sum))
        self.step += 1
        record = {"step": self.step, **self._reduce_logged(sums), "lr": lr, "grad_norm": float(grad_norm),
                  "skipped": not finite, "seconds_per_step": time.perf_counter() - start,
                  "samples_per_second": samples * self.groups.num_pairs / max(time.perf_counter() - start, 1e-9),
                  "peak_memory_mb": _peak_memory_mb(self.device), "skipped_rooms": self.loader.skipped_rooms,
                  "skipped_steps": self.skipped_steps, "epoch": self.loader.epoch}  # fmt: skip
        return record

    def _nonfinite(self, local_loss: float) -> None:
        c = self.config
        if self.scaler is not None:  # fp16 overflow: back off the scale on every rank alike
            self.scaler.update(self.scaler.get_scale() * self.scaler.get_backoff_factor())
        if c.on_nonfinite == "abort":
            raise RuntimeError(
                f"non-finite loss or gradient norm at step {self.step + 1} (this rank's loss {local_loss}); "
                "aborting on every rank (--on_nonfinite abort)"
            )
        self.skipped_steps += 1
        log.warning("step %d: non-finite loss or gradient norm on some rank; all ranks skip it (%d skipped)",
                    self.step + 1, self.skipped_steps)  # fmt: skip
        if (
            self.step + 1 >= MIN_STEPS_FOR_SKIP_FRACTION
            and self.skipped_steps / (self.step + 1) > c.max_skip_fraction
        ):
            raise RuntimeError(
                f"{self.skipped_steps} of {self.step + 1} steps were skipped for non-finite values "
                f"(> --max_skip_fraction {c.max_skip_fraction}); stopping"
            )

    def _reduce_logged(self, sums: dict[str, float]) -> dict[str, float]:
        """Per-stream loss terms averaged over the pairs (every rank fills its own streams' slots)."""
        keys = [f"loss/{s}" for s in STREAMS] + [f"loss/{s}/{k}" for s in STREAMS for k in LOSS_TERMS]
        vec = torch.tensor([sums.get(k, 0.0) for k in keys], dtype=torch.float64)
        present = torch.tensor([float(k in sums) for k in keys], dtype=torch.float64)
        if self.groups.distributed:
            both = torch.stack([vec, present]).to(self.device)
            dist.all_reduce(both)
            vec, present = both[0].cpu(), both[1].cpu()
        out = {k: float(v / p) for k, v, p in zip(keys, vec, present) if p > 0}
        out["loss"] = sum(out[f"loss/{s}"] for s in STREAMS if f"loss/{s}" in out)
        return out

    # -- the loop
    def run(self) -> TrainResult:
        from tqdm.auto import tqdm

        c = self.config
        self.model.train()
        bar = tqdm(
            total=c.max_train_steps,
            initial=self.step,
            disable=not (c.progress and self.rank == 0),
            desc="train",
        )
        try:
            with self._peer_failures():
                stopped = self._train_steps(bar)
        finally:
            bar.close()
            if self.metrics is not None:
                self.metrics.close()
        return TrainResult(self.step, self.skipped_steps, self.loader.skipped_rooms, self.output_dir, stopped)

    def _train_steps(self, bar) -> str | None:
        """Optimiser steps up to --max_train_steps or an agreed stop; returns the stopping signal's name."""
        c = self.config
        stopped = None
        while stopped is None and self.step < c.max_train_steps:
            record = self.optimizer_step()
            if self.metrics is not None:
                self.metrics.write(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{record['samples_per_second']:.2f}")
            stopped = self._agreed_stop()
            due = self.step % c.checkpointing_steps == 0 or self.step == c.max_train_steps
            if stopped is not None or due:
                saved = self.save()
            if stopped is not None:  # no validation: a preempted job has seconds, not minutes
                if self.rank == 0:
                    log.warning("received %s: saved %s, exiting; rerun the same command to resume",
                                stopped, saved.name)  # fmt: skip
                break
            if c.validation_steps and self.step % c.validation_steps == 0:
                self.validate()
        return stopped

    def _agreed_stop(self) -> str | None:
        """The signal that stops the run after this step, the same on every rank (module docstring)."""
        import signal

        signum = self.stop.signum or 0
        if self.groups.distributed:
            signum = max_over_ranks(signum, self.device)
        return signal.Signals(signum).name if signum else None

    @contextlib.contextmanager
    def _peer_failures(self) -> Iterator[None]:
        """Re-raise a failed collective as `PeerFailure` with what a user needs (a world of one has none)."""
        try:
            yield
        except RuntimeError as e:
            if not (self.groups.distributed and _is_collective_error(e)):
                raise
            raise PeerFailure(
                f"rank {self.rank} of {self.groups.world_size}: a collective with the other ranks failed at "
                f"step {self.step + 1} (a rank died, hung or was stopped; a silent peer is waited for at most "
                f"--nccl_timeout_s {self.config.nccl_timeout_s:g} s). Checkpoints up to "
                f"{self._newest_checkpoint()} are complete: rerun the same command (or use torchrun "
                f"--max-restarts) to resume. Cause: {type(e).__name__}: {e}"
            ) from e

    def _newest_checkpoint(self) -> str:
        done = ckpt.complete_checkpoints(self.output_dir)
        return done[-1][1].name if done else "none (none written yet)"

    def save(self) -> Path:
        state = {"skipped_steps": self.skipped_steps, "loader": self.loader.state()}
        return ckpt.save_checkpoint(
            self.output_dir,
            self.step,
            save_weights=self._save_weights,
            local_streams=self.groups.local_streams,
            pair_index=self.groups.pair_index,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            trainer_state=state,
            config=self.config.to_dict(),
            total_limit=self.config.checkpoints_total_limit,
        )

    def validate(self) -> None:
        """Sample a completion of the held-out room and write each view as PNG (`validation.validate`)."""
        validate(self)

    def close(self) -> None:
        if getattr(self, "loader", None) is not None:
            self.loader.close()
        if self.owns_process_group and dist.is_initialized():
            dist.destroy_process_group()


def train(
    config: TrainConfig, *, loss_hook: LossHook | None = None, stop: StopRequest | None = None
) -> TrainResult:
    """Run (or resume) a training run in this process; under torchrun every rank calls this.

    Without `stop`, SIGTERM / SIGINT handlers are installed for the training steps (module docstring) and
    the previous ones restored after them; with `stop`, the caller's `StopRequest` is polled as it is."""
    trainer = Trainer(config, loss_hook)
    try:
        trainer.setup()
        with contextlib.nullcontext(stop) if stop is not None else StopRequest() as request:
            trainer.stop = request
            return trainer.run()
    finally:
        trainer.close()


__all__ = [
    "EmbeddingCache",
    "PeerFailure",
    "RoomLoader",
    "TrainResult",
    "Trainer",
    "global_grad_norm",
    "train",
]
