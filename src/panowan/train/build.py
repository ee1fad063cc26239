"""What a training run builds before it trains: the model (`build_model` -> `Built`: dual-stream Wan with
LoRA or fully trained streams, codec, conditioning encoder) and `EmbeddingCache`, the per-room text / image
conditioning encoded once so the encoders can be released."""

from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from panowan.models.presets import fill_fields
from panowan.train.config import TrainConfig

logger = logging.getLogger(__name__)


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


def compiles(config: TrainConfig, device: torch.device) -> bool:
    """Whether the run compiles the model's regions: --compile_blocks if given, else on a CUDA device only."""
    return config.compile_blocks if config.compile_blocks is not None else device.type == "cuda"


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

        init_from_exported(model, config.init_from, verify=config.verify_checkpoints)
    if config.fp8_base != "off":
        from panowan.models.fp8 import quantize_fp8

        # torchao quantises where the weights are; the adapters come after, in full precision.
        model.to(device)
        logger.info("frozen base: %s", quantize_fp8(model, config.fp8_base))
    if config.lora_rank:
        with warnings.catch_warnings():
            # PEFT warns that adapters on a torchao base cannot be merged; training never merges them.
            warnings.filterwarnings("ignore", message="TorchaoLoraLinear was instantiated")
            add_lora(model, config.lora_rank, config.lora_alpha, tuple(config.lora_targets), seed=config.seed)
    freeze_base(model)  # without LoRA it freezes nothing: the streams train in full
    model.to(device)
    if config.gradient_checkpointing:
        model.enable_gradient_checkpointing(config.checkpoint_policy, config.checkpoint_fraction)
    if compiles(config, device):
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
