"""The training loop of `panowan train`.

Placement by world size (panowan.parallel.groups): one process holds both streams; `torchrun` with 2N
ranks runs N data-parallel pairs, rank 2p holding pair p's RGB stream and rank 2p+1 its depth stream.

Data (`RoomLoader`): every epoch a seeded permutation of the training rooms; each micro-step takes the
next G = train_batch_size * N usable rooms of it, pair p gets slots [p*B, (p+1)*B) (both ranks of a pair
load the same rooms). A room that fails to load (`RoomError`) is reported on every rank, remembered as
bad and the micro-batch is re-drawn, so all ranks keep one position (epoch, index), which checkpoints
store for an exact resume.

Per micro-step: codec-encode ground truth and condition (no grad), draw sigma and noise from generators
seeded by (seed, micro-step, global slot[, stream]) (`flow.py`), predict the velocity, compute the
stream's losses (`losses.py`), backward. Per optimiser step: `sync_gradients`, one global gradient norm,
a joint finiteness decision (`all_ranks_finite`: skip or abort together), clipping, AdamW, LR schedule,
metrics (rank 0), checkpoints, validation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from panowan.data.layout import RoomError
from panowan.models.presets import fill_fields, filled_streams
from panowan.train import checkpoint as ckpt
from panowan.train.config import TrainConfig, changed_settings
from panowan.train.flow import add_noise, sample_generator, sample_noise, sample_sigmas, x0_from_velocity
from panowan.utils.atomic import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

LOSS_TERMS = ("mse", "structural", "global", "ssim", "pixel")
STREAMS = ("rgb", "depth")
MIN_STEPS_FOR_SKIP_FRACTION = 10

LossHook = Callable[[int, int, torch.Tensor], torch.Tensor]
"""(optimiser step, rank, loss) -> loss: lets tests inject faults (e.g. a NaN on one rank)."""


# ------------------------------------------------------------------------------------------- data
class RoomLoader:
    """Deterministic, resumable sampler over rooms, sharded by pair; skips and remembers bad rooms."""

    def __init__(
        self,
        dataset,
        room_indices: list[int],
        *,
        batch_size: int,
        num_pairs: int,
        pair_index: int,
        seed: int,
        max_skip_fraction: float,
        on_bad: Callable[[int, RoomError], None] | None = None,
        workers: int = 0,
    ) -> None:
        self.dataset = dataset
        # Threads, not processes: decoding (OpenCV, numpy) releases the GIL, nothing is pickled, and a
        # batch is assembled in room order whatever finishes first.
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="rooms") if workers > 0 else None
        self._pending: dict[tuple[int, int], Future] = {}  # (epoch, room) -> sample being read ahead
        self.rooms = list(room_indices)
        self.batch_size, self.num_pairs, self.pair_index = batch_size, num_pairs, pair_index
        self.seed, self.max_skip_fraction = seed, max_skip_fraction
        self.epoch, self.position = 0, 0
        self.bad: set[int] = set()
        self.global_batch = batch_size * num_pairs
        self.scan_bad = int(getattr(dataset, "summary", {}).get("bad_rooms", 0))
        self.rooms_found = int(getattr(dataset, "summary", {}).get("rooms_found", len(self.rooms)))
        self.errors: list[str] = [str(e) for _, e in getattr(dataset, "summary", {}).get("bad", [])]
        self._check_fraction()
        dataset.set_epoch(self.epoch)

    # -- state
    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "bad_rooms": sorted(self.dataset.rooms[i].paths.room_id for i in self.bad),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self._pending.clear()
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        ids = {self.dataset.rooms[i].paths.room_id: i for i in self.rooms}
        self.bad = {ids[r] for r in state.get("bad_rooms", []) if r in ids}
        self.dataset.set_epoch(self.epoch)

    @property
    def skipped_rooms(self) -> int:
        """Rooms skipped so far: refused when scanning plus failed when loading."""
        return self.scan_bad + len(self.bad)

    def order(self, epoch: int) -> list[int]:
        rng = np.random.default_rng([self.seed, 7919, epoch])
        return [self.rooms[i] for i in rng.permutation(len(self.rooms))]

    # -- drawing
    def _plan(self, epoch: int, position: int) -> tuple[list[int], int, int, int]:
        """The next G usable rooms from (epoch, position): (rooms, their epoch, the position they start
        at, the position after them). Reads the state, changes nothing (the prefetch plans ahead with it)."""
        for _ in range(2):
            order = self.order(epoch)
            taken, pos = [], position
            while pos < len(order) and len(taken) < self.global_batch:
                if order[pos] not in self.bad:
                    taken.append(order[pos])
                pos += 1
            if len(taken) == self.global_batch:
                return taken, epoch, position, pos
            epoch, position = epoch + 1, 0
        usable = len(self.rooms) - len(self.bad)
        raise ValueError(
            f"{self.dataset.data_root}: only {usable} usable training rooms, fewer than one global batch of "
            f"{self.global_batch} (train_batch_size x pairs)"
        )

    def _mine(self, taken: list[int]) -> list[int]:
        return taken[self.pair_index * self.batch_size : (self.pair_index + 1) * self.batch_size]

    def next_batch(self):
        """(Batch of this pair's rooms, their global slots [p*B, (p+1)*B))."""
        from panowan.data.dataset import collate

        while True:
            taken, epoch, start, after = self._plan(self.epoch, self.position)
            if epoch != self.epoch:
                self.epoch, self.position = epoch, start
                self.dataset.set_epoch(epoch)
            mine = self._mine(taken)
            samples, failed = [], []
            for index, sample in zip(mine, self._load_all(epoch, mine)):
                if isinstance(sample, RoomError):
                    failed.append(index)
                    self.errors.append(str(sample))
                    log.warning(
                        "skipping corrupt room %s: %s", self.dataset.rooms[index].paths.room_id, sample
                    )
                else:
                    samples.append(sample)
            failed = self._agree(failed)
            if not failed:
                self.position = after
                self._prefetch()
                slots = list(
                    range(self.pair_index * self.batch_size, (self.pair_index + 1) * self.batch_size)
                )
                return collate(samples), slots
            self.bad.update(failed)
            self._check_fraction()

    def _load(self, index: int, epoch: int):
        """The sample of room `index` in `epoch`, or the RoomError that reading it raised."""
        try:
            return self.dataset.sample(index, epoch)
        except RoomError as e:
            return e

    def _load_all(self, epoch: int, indices: list[int]) -> list:
        """Samples (or RoomErrors) in order: prefetched ones, the rest read now on the threads."""
        if self.pool is None:
            return [self._load(i, epoch) for i in indices]
        futures = [
            self._pending.pop((epoch, i), None) or self.pool.submit(self._load, i, epoch) for i in indices
        ]
        return [f.result() for f in futures]

    def _prefetch(self) -> None:
        """Start reading the next micro-batch while this one trains (threads only). A guess that a later
        failure or resume invalidates is simply never collected: samples are keyed by (epoch, room)."""
        if self.pool is None:
            return
        try:
            taken, epoch, _, _ = self._plan(self.epoch, self.position)
        except ValueError:
            return
        wanted = {(epoch, i) for i in self._mine(taken)}
        self._pending = {k: f for k, f in self._pending.items() if k in wanted}
        for key in sorted(wanted - set(self._pending)):
            self._pending[key] = self.pool.submit(self._load, key[1], key[0])

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    def _agree(self, failed: list[int]) -> list[int]:
        """Every rank learns every rank's failures (so all re-draw the same micro-batch)."""
        if not (dist.is_initialized() and dist.get_world_size() > 1):
            return failed
        flags = torch.zeros(len(self.dataset), dtype=torch.int32)
        flags[failed] = 1
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return flags.nonzero().flatten().tolist()

    def _check_fraction(self) -> None:
        usable = len(self.rooms) - len(self.bad)
        if usable == 0:
            shown = "; ".join(self.errors[:3])
            raise ValueError(
                f"{self.dataset.data_root}: every training room is corrupt ({self.skipped_rooms} skipped): {shown}"
            )
        fraction = self.skipped_rooms / max(self.rooms_found, 1)
        if fraction > self.max_skip_fraction:
            raise ValueError(
                f"{self.dataset.data_root}: {self.skipped_rooms} of {self.rooms_found} rooms are corrupt "
                f"({fraction:.0%} > --max_skip_fraction {self.max_skip_fraction:.0%}); first: {self.errors[:1]}"
            )


# ------------------------------------------------------------------------------------ conditioning
class EmbeddingCache:
    """Text / image conditioning per room, encoded once and kept in memory (the pretrained encoder also
    keeps a disk cache), so the encoders need not stay loaded while training: `drop_encoder` frees them
    once every room is encoded. Text is zero-padded to Wan's 512 tokens, as Wan pads its prompts."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self.memory: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def get(
        self, room_id: str, prompt: str, first_frame_3HW: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        from panowan.models.dual_stream import WAN_TEXT_TOKENS

        if room_id not in self.memory:
            if self.encoder is None:
                raise ValueError(
                    f"room {room_id}: no cached conditioning and the encoder was already released"
                )
            with torch.no_grad():
                text, image = self.encoder.encode([prompt], first_frame_3HW[None].float().cpu())
            text = text[0].float().cpu()
            if text.shape[0] < WAN_TEXT_TOKENS:
                text = torch.nn.functional.pad(text, (0, 0, 0, WAN_TEXT_TOKENS - text.shape[0]))
            self.memory[room_id] = (text, None if image is None else image[0].float().cpu())
        return self.memory[room_id]

    def drop_encoder(self) -> None:
        self.encoder = None

    def batch(self, batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(text `B,512,D`, image `B,N,D` or None) of a Batch; the first frame is view 0's input panorama."""
        pairs = [
            self.get(r, p, batch.cond_rgb[i, 0]) for i, (r, p) in enumerate(zip(batch.room_id, batch.prompt))
        ]
        text = torch.stack([t for t, _ in pairs]).to(device)
        image = None if pairs[0][1] is None else torch.stack([i for _, i in pairs]).to(device)
        return text, image


# ------------------------------------------------------------------------------------------- model
@dataclasses.dataclass
class Built:
    model: Any
    codec: Any
    encoder: Any
    model_config: Any


def build_model(config: TrainConfig, groups, device: torch.device) -> Built:
    """Base model (pretrained or, for presets without pretrained files, seeded random), both/one stream
    with LoRA and a frozen base (or, with lora_rank 0, trained in full); codec; conditioning encoder."""
    from panowan.models.codec import build_codec
    from panowan.models.dual_stream import DualStreamWan
    from panowan.models.lora import add_lora, freeze_base
    from panowan.models.presets import get_preset

    if config.preset == "from_base":
        from panowan.models.loading import config_for_base

        model_config = config_for_base(config.base_model_dir)
    else:
        model_config = get_preset(config.preset)
    changes: dict[str, Any] = {"init_seed": config.seed, **fill_fields(config.condition_fills())}
    if config.interaction_interval is not None:
        changes["interaction_interval"] = config.interaction_interval
    changes.update(config.architecture_overrides())
    model_config = dataclasses.replace(model_config, **changes)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.mixed_precision, torch.float32)
    if config.needs_pretrained():
        from panowan.models.loading import load_base_model

        base_model = load_base_model(config.base_model_dir, dtype=torch.float32 if dtype == torch.float16 else dtype,
                                     components=("transformer", "vae"), preset=model_config)  # fmt: skip
        base, vae = base_model.transformer, base_model.vae.to(device).eval().requires_grad_(False)
    else:
        from diffusers import WanTransformer3DModel

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            base = WanTransformer3DModel(**model_config.wan).eval()
        vae = None
    model = DualStreamWan.from_base(
        base, model_config, groups.local_streams, groups.make_exchange(), reuse_base=True
    )
    if config.init_from:
        from panowan.models.exported import init_from_exported

        init_from_exported(model, config.init_from)
    if config.lora_rank:
        add_lora(model, config.lora_rank, config.lora_alpha, tuple(config.lora_targets), seed=config.seed)
    freeze_base(model)  # without LoRA it freezes nothing: the streams train in full
    model.to(device)
    if config.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if config.compile_blocks:
        model.compile_blocks()
    codec = build_codec(model_config, vae)
    encoder = build_conditioning_encoder(config, model_config, device)
    return Built(model, codec, encoder, model_config)


def build_conditioning_encoder(config: TrainConfig, model_config, device: torch.device):
    """Wan's UMT5 + CLIP from the base model folder (kept on the CPU, visiting `device` only to encode;
    disk cache under output_dir/embeddings), or the hashed stand-in of presets without pretrained files."""
    from panowan.models.encoders import build_encoder

    if not config.needs_pretrained():
        return build_encoder(model_config)
    from panowan.models.loading import load_base_model

    parts = load_base_model(
        config.base_model_dir, components=("text_encoder", "tokenizer", "image_encoder", "image_processor")
    )
    return build_encoder(parts, cache_dir=Path(config.output_dir) / "embeddings", device=device)


# ------------------------------------------------------------------------------------------ losses
def stream_targets(
    codec, batch, stream: str, *, filled: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(x0 latents `B,z,T,h,w`, condition `B,4+z,T,h,w`, packed GT validity `B,4,T,h,w` or None), no grad.

    `filled`: the batch's condition of this stream holds a fill in its holes that the model takes as is."""
    from panowan.models.conditioning import (
        build_condition,
        condition_video,
        depth_to_video,
        frames_to_video,
        pack_mask,
    )

    mask = frames_to_video(batch.mask)
    with torch.no_grad():
        cond = build_condition(codec, condition_video(batch, stream), mask, filled=filled)
        if stream == "rgb":
            return codec.encode(frames_to_video(batch.rgb)), cond, None
        x0 = codec.encode(depth_to_video(frames_to_video(batch.depth)))
        return x0, cond, pack_mask(frames_to_video(batch.depth_valid.float()))


def stream_losses(
    config: TrainConfig,
    codec,
    stream: str,
    *,
    velocity: torch.Tensor,
    target: torch.Tensor,
    x_t: torch.Tensor,
    x0: torch.Tensor,
    sigma: torch.Tensor,
    weight: torch.Tensor,
    known: torch.Tensor,
    valid: torch.Tensor | None,
    ssim_generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Every enabled loss term of one stream (unweighted); `velocity` etc. `B,z,T,h,w`."""
    from panowan.train import losses as L

    v = velocity.float()
    lat = config.latitude_weighting
    out = {}
    if config.mse_weight:
        out["mse"] = L.flow_matching_loss(v, target, weight, known_B4Thw=known, hole_weight=config.hole_weight,
                                          valid_B4Thw=valid, latitude=lat)  # fmt: skip
    if config.structural_weight or config.global_weight or config.ssim_weight:
        x0_pred = x0_from_velocity(x_t, v, sigma)
        if config.structural_weight:
            out["structural"] = L.structural_consistency_loss(
                x0_pred, x0, pool=config.structural_patch, latitude=lat
            )
        if config.global_weight:
            out["global"] = L.global_consistency_loss(x0_pred, x0, latitude=lat)
        if config.ssim_weight:
            crop = None if config.ssim_crop is None else tuple(config.ssim_crop)
            out["ssim"] = L.decoded_ssim_loss(codec, x0_pred, x0, depth=stream == "depth",
                                              latent_frames=config.ssim_latent_frames, crop_hw=crop,
                                              generator=ssim_generator, latitude=lat, checkpoint=True)  # fmt: skip
    return out


def total_loss(config: TrainConfig, terms: dict[str, torch.Tensor]) -> torch.Tensor:
    weights = {"mse": config.mse_weight, "structural": config.structural_weight, "global": config.global_weight,
               "ssim": config.ssim_weight, "pixel": config.pixel_weight}  # fmt: skip
    return sum(weights[k] * v for k, v in terms.items())


# ------------------------------------------------------------------------------------------- steps
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


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Metrics:
    """metrics.jsonl (one JSON object per optimiser step, flushed) and TensorBoard scalars; rank 0 only."""

    def __init__(self, output_dir: Path, resume_step: int, tensorboard: bool) -> None:
        self.path = output_dir / "metrics.jsonl"
        kept = []
        if self.path.is_file():  # drop the steps after the checkpoint we resume from (they are redone)
            for line in self.path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    if json.loads(line)["step"] <= resume_step:
                        kept.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (an append stream, closed in close())
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(output_dir / "tensorboard"), purge_step=resume_step + 1)

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, int | float) and not isinstance(v, bool):
                    self.writer.add_scalar(k, v, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()


# ------------------------------------------------------------------------------------------- train
@dataclasses.dataclass
class TrainResult:
    step: int
    skipped_steps: int
    skipped_rooms: int
    output_dir: Path


class Trainer:
    """One process's part of a training run (see the module docstring)."""

    def __init__(self, config: TrainConfig, loss_hook: LossHook | None = None) -> None:
        from panowan.parallel.groups import StreamGroups, init_distributed

        self.config, self.loss_hook = config, loss_hook
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
        resume = ckpt.resolve_resume(self.output_dir, c.resume_from_checkpoint)
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
        path = self.output_dir / "config.json"
        if resume is not None and (resume / "config.json").is_file():
            saved = json.loads((resume / "config.json").read_text(encoding="utf-8"))
            diff = changed_settings(saved, self.config)
            if diff:
                log.warning(
                    "resuming %s with changed settings %s: the run will not replay exactly", resume, diff
                )
        if self.rank == 0:
            atomic_write_json(path, self.config.to_dict())

    def _validation_room(self) -> int:
        ids = [r.paths.room_id for r in self.dataset.rooms]
        if self.config.validation_room is None:
            if len(ids) < 2:
                raise ValueError(
                    f"{self.config.data_root}: validation needs a held-out room and a training room; found {len(ids)}"
                )
            return len(ids) - 1
        if self.config.validation_room not in ids:
            raise ValueError(
                f"--validation_room {self.config.validation_room!r} is not a usable room of {self.config.data_root}"
            )
        return ids.index(self.config.validation_room)

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
            while self.step < c.max_train_steps:
                record = self.optimizer_step()
                if self.metrics is not None:
                    self.metrics.write(record)
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{record['samples_per_second']:.2f}")
                if self.step % c.checkpointing_steps == 0 or self.step == c.max_train_steps:
                    self.save()
                if c.validation_steps and self.step % c.validation_steps == 0:
                    self.validate()
        finally:
            bar.close()
            if self.metrics is not None:
                self.metrics.close()
        return TrainResult(self.step, self.skipped_steps, self.loader.skipped_rooms, self.output_dir)

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

    @torch.no_grad()
    def validate(self) -> None:
        """Sample a completion of the held-out room and write each view as PNG (RGB; depth as 16-bit
        PNG of the normalised depth) under `output_dir/validation/step-STEP/` (pair 0's ranks)."""
        from panowan.data.dataset import collate
        from panowan.models.conditioning import (
            condition_video,
            decode_filled,
            frames_to_video,
            video_to_depth,
        )
        from panowan.sample.sampler import sample_flow, stream_noise
        from panowan.utils.atomic import atomic_write_image

        c = self.config
        self.model.eval()
        batch = _to(collate([self.dataset[self.validation_index]]), self.device)
        text, image = self.embeddings.batch(batch, self.device)
        cond = {
            s: stream_targets(self.codec, batch, s, filled=s in self.filled)[1]
            for s in self.groups.local_streams
        }
        shapes = {s: (1, self.codec.z_dim, *cond[s].shape[2:]) for s in self.groups.local_streams}
        plucker = frames_to_video(batch.plucker)

        def velocity_fn(latents, sigma):
            t = torch.full((1,), float(sigma) * 1000, device=self.device)
            with _autocast(c, self.device):
                out = self.model(latents, cond, t, plucker, text, image)
            return {k: v.float() for k, v in out.items()}

        noise = {k: v.to(self.device) for k, v in stream_noise(shapes, c.seed).items()}
        latents = sample_flow(velocity_fn, noise, steps=c.validation_sampling_steps, sampler="euler",
                              flow_shift=c.flow_shift, progress=False)  # fmt: skip
        if self.groups.pair_index == 0:
            folder = self.output_dir / "validation" / f"step-{self.step:06d}"
            for s, lat in latents.items():
                cond_video = condition_video(batch, s) if s in self.filled else None
                video = decode_filled(self.codec, lat, cond_video)
                video = video.float().clamp(-1, 1)  # 1,3,F,H,W
                if s == "depth":
                    frames = ((video_to_depth(video)[0, 0] + 1) * 32767.5).round().to(torch.uint16)
                else:
                    frames = ((video[0].permute(1, 2, 3, 0) + 1) * 127.5).round().to(torch.uint8)
                for f, view in enumerate(batch.view_indices[0]):
                    atomic_write_image(folder / f"{s}_{view:04d}.png", frames[f].cpu().numpy())
        self.model.train()

    def close(self) -> None:
        if getattr(self, "loader", None) is not None:
            self.loader.close()
        if self.owns_process_group and dist.is_initialized():
            dist.destroy_process_group()


def train(config: TrainConfig, *, loss_hook: LossHook | None = None) -> TrainResult:
    """Run (or resume) a training run in this process; under torchrun every rank calls this."""
    trainer = Trainer(config, loss_hook)
    try:
        trainer.setup()
        return trainer.run()
    finally:
        trainer.close()


__all__ = ["EmbeddingCache", "RoomLoader", "TrainResult", "Trainer", "global_grad_norm", "train"]
