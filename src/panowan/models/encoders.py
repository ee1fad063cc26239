"""Conditioning encoders: a room's prompt and first frame -> the text and image tokens of Wan I2V.

`ConditioningEncoder.encode(prompts, first_frames_B3HW in [-1, 1]) -> (text_BLD, image_BND | None)`.

- `WanConditioningEncoder`: UMT5 + CLIP vision exactly as diffusers' `WanImageToVideoPipeline`: prompts
  cleaned (`prompt_clean`: ftfy when installed, HTML unescape, whitespace), tokenised to 512 tokens, encoded
  with the attention mask, the embeddings past each prompt's length set to zero; image tokens = CLIP's
  penultimate hidden state of the processed frame (uint8 RGB, as the pipeline's PIL input). Results are
  cached on disk, one safetensors file per (prompt, image bytes, encoder identity) hash, written atomically,
  so a training run encodes each room once; the encoders live on the CPU and visit `device` only on a miss.
- `HashTextEncoder`: no pretrained files (the tiny preset): each word -> a fixed random vector seeded by
  its hash; the image -> a fixed random projection of the area-downsampled frame.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from panowan.utils.atomic import atomic_write

MAX_SEQUENCE_LENGTH = 512


@runtime_checkable
class ConditioningEncoder(Protocol):
    """prompts (B strings) and first frames `B,3,H,W` in [-1, 1] -> text `B,L,D_text`, image `B,N,D_image`."""

    def encode(
        self, prompts: list[str], first_frames_B3HW: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def offload(self) -> None: ...


def prompt_clean(text: str) -> str:
    """diffusers' Wan `prompt_clean`: ftfy fix (when installed), double HTML unescape, collapse whitespace."""
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:  # diffusers imports ftfy only when available too
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


def to_uint8_images(first_frames_B3HW: torch.Tensor) -> list[Any]:
    """[-1, 1] floats -> B uint8 `H,W,3` numpy arrays (what the pipeline's PIL images hold)."""
    if first_frames_B3HW.dim() != 4 or first_frames_B3HW.shape[1] != 3:
        raise ValueError(f"first frames must be B,3,H,W; got {tuple(first_frames_B3HW.shape)}")
    x = ((first_frames_B3HW.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [img.permute(1, 2, 0).contiguous().numpy() for img in x]


class WanConditioningEncoder:
    """Wan I2V text (UMT5) and image (CLIP vision) conditioning with an on-disk cache.

    text: `B,512,D` (zeros past each prompt's tokens), image: `B,257,1280` for ViT-H/14 (CLS + 16 x 16).
    On a cache miss the encoders move to `device`, run, and (unless `keep_on_device`) go back to the CPU.
    """

    def __init__(
        self,
        text_encoder: Any,
        tokenizer: Any,
        image_encoder: Any | None,
        image_processor: Any | None,
        *,
        cache_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        keep_on_device: bool = False,
        max_sequence_length: int = MAX_SEQUENCE_LENGTH,
        identity: str | None = None,
    ) -> None:
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.image_encoder, self.image_processor = image_encoder, image_processor
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.device = torch.device(device)
        self.keep_on_device = keep_on_device
        self.max_sequence_length = max_sequence_length
        self.identity = identity or self._identity()
        self.misses = 0  # items encoded by the models (not read from the cache)

    # -- identity and cache -------------------------------------------------------------------------

    def _identity(self) -> str:
        """Encoder identity for the cache key: configs, tokenizer vocabulary, processor settings and a
        fingerprint of a few weights (cheap; changes when the checkpoint does)."""
        parts = [
            self.text_encoder.config.to_json_string(),
            str(len(self.tokenizer)),
            str(self.max_sequence_length),
        ]
        parts.append(str(getattr(self.tokenizer, "name_or_path", "")))
        tensors = [next(iter(self.text_encoder.state_dict().values()))]
        if self.image_encoder is not None:
            parts.append(self.image_encoder.config.to_json_string())
            parts.append(json.dumps(self.image_processor.to_dict(), sort_keys=True, default=str))
            tensors.append(next(iter(self.image_encoder.state_dict().values())))
        for t in tensors:
            # Slice before converting: the first tensor of UMT5-XXL is its 1B-entry embedding.
            parts.append(repr(t.detach().flatten()[:4096].float().cpu().double().sum().item()))
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    def cache_key(self, prompt: str, image_HW3: Any | None) -> str:
        h = hashlib.sha256()
        h.update(self.identity.encode())
        h.update(b"\0" + prompt.encode("utf-8") + b"\0")
        if image_HW3 is not None:
            h.update(str(image_HW3.shape).encode())
            h.update(image_HW3.tobytes())
        return h.hexdigest()

    def _cache_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / key[:2] / f"{key}.safetensors"

    def _read(self, key: str) -> dict[str, torch.Tensor] | None:
        from safetensors.torch import load_file

        path = self._cache_path(key)
        if path is None or not path.exists():
            return None
        return load_file(str(path))

    def _write(self, key: str, entry: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        path = self._cache_path(key)
        if path is not None:
            tensors = {k: v.detach().cpu().contiguous() for k, v in entry.items()}
            atomic_write(path, lambda p: save_file(tensors, str(p)))

    # -- encoding -----------------------------------------------------------------------------------

    def to(self, device: str | torch.device) -> WanConditioningEncoder:
        for m in (self.text_encoder, self.image_encoder):
            if m is not None:
                m.to(device)
        return self

    def offload(self) -> None:
        """Encoders to the CPU, CUDA cache released (they are frozen and used once per room)."""
        self.to("cpu")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @torch.no_grad()
    def _encode_text(self, prompts: list[str]) -> list[torch.Tensor]:
        """Unpadded `L_i,D` per prompt (the pipeline's `_get_t5_prompt_embeds` before zero padding)."""
        inputs = self.tokenizer(
            [prompt_clean(p) for p in prompts],
            padding="max_length",
            max_length=self.max_sequence_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids, mask = inputs.input_ids.to(self.device), inputs.attention_mask.to(self.device)
        hidden = self.text_encoder(ids, mask).last_hidden_state
        lengths = mask.gt(0).sum(dim=1).tolist()
        return [h[:n] for h, n in zip(hidden, lengths)]

    @torch.no_grad()
    def _encode_images(self, images: list[Any]) -> torch.Tensor:
        """`B,N,D`: CLIP's penultimate hidden state (the pipeline's `encode_image`)."""
        pixels = self.image_processor(images=images, return_tensors="pt").pixel_values
        pixels = pixels.to(self.device, dtype=self.image_encoder.dtype)
        return self.image_encoder(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]

    def encode(
        self, prompts: list[str], first_frames_B3HW: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """text `B,max_sequence_length,D` (zero padded), image `B,N,D` (None without an image encoder)."""
        use_image = self.image_encoder is not None
        if use_image and first_frames_B3HW is None:
            raise ValueError("the image encoder needs first frames (B,3,H,W in [-1, 1])")
        images = to_uint8_images(first_frames_B3HW) if use_image else [None] * len(prompts)
        if len(images) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(images)} first frames")
        keys = [self.cache_key(p, im) for p, im in zip(prompts, images)]
        entries = [self._read(k) for k in keys]
        miss = [i for i, e in enumerate(entries) if e is None]
        if miss:
            self.to(self.device)
            try:
                texts = self._encode_text([prompts[i] for i in miss])
                imgs = self._encode_images([images[i] for i in miss]) if use_image else None
            finally:
                if not self.keep_on_device:
                    self.to("cpu")
            for j, i in enumerate(miss):
                entry = {"text": texts[j].cpu()}
                if imgs is not None:
                    entry["image"] = imgs[j].cpu()
                entries[i] = entry
                self._write(keys[i], entry)
            self.misses += len(miss)
        text = torch.stack(
            [F.pad(e["text"], (0, 0, 0, self.max_sequence_length - e["text"].shape[0])) for e in entries]
        )
        image = torch.stack([e["image"] for e in entries]) if use_image else None
        return text, image


class HashTextEncoder:
    """Deterministic conditioning with no pretrained files (the tiny preset).

    text `B,length,text_dim`: word k of the lower-cased prompt -> a unit-variance vector seeded by the word's
    SHA-256 (plus a small position term, so word order matters), zeros after the last word (as Wan pads).
    image `B,image_tokens,image_dim`: the frame area-pooled to 8 x 16, times a fixed seeded projection.
    """

    def __init__(self, text_dim: int, image_dim: int | None, length: int = 32, image_tokens: int = 4) -> None:
        self.text_dim, self.image_dim, self.length, self.image_tokens = (
            text_dim,
            image_dim,
            length,
            image_tokens,
        )
        g = torch.Generator().manual_seed(1234)
        self._pos = torch.randn(length, text_dim, generator=g) * 0.1
        self._proj = None
        if image_dim is not None:
            self._proj = torch.randn(3 * 8 * 16, image_tokens * image_dim, generator=g) / (3 * 8 * 16) ** 0.5

    @staticmethod
    def _word_vector(word: str, dim: int) -> torch.Tensor:
        seed = int.from_bytes(hashlib.sha256(word.encode("utf-8")).digest()[:8], "little") & (2**63 - 1)
        return torch.randn(dim, generator=torch.Generator().manual_seed(seed))

    def encode(
        self, prompts: list[str], first_frames_B3HW: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        text = torch.zeros(len(prompts), self.length, self.text_dim)
        for b, prompt in enumerate(prompts):
            words = re.findall(r"\w+", prompt_clean(prompt).lower())[: self.length]
            for k, word in enumerate(words):
                text[b, k] = self._word_vector(word, self.text_dim) + self._pos[k]
        if self._proj is None:
            return text, None
        if first_frames_B3HW is None or first_frames_B3HW.dim() != 4 or first_frames_B3HW.shape[1] != 3:
            shape = None if first_frames_B3HW is None else tuple(first_frames_B3HW.shape)
            raise ValueError(f"first frames must be B,3,H,W in [-1, 1]; got {shape}")
        pooled = F.adaptive_avg_pool2d(first_frames_B3HW.detach().float().cpu(), (8, 16)).flatten(1)
        image = (pooled @ self._proj).view(-1, self.image_tokens, self.image_dim)
        return text, image

    def offload(self) -> None:
        """Nothing to move: no parameters."""

    def to(self, device: str | torch.device) -> HashTextEncoder:
        return self


def build_encoder(
    preset_or_base: Any, *, cache_dir: str | Path | None = None, device: str | torch.device = "cpu"
) -> ConditioningEncoder:
    """A `BaseModel` (from `load_base_model`, with text_encoder and tokenizer) -> `WanConditioningEncoder`;
    a preset name or `DualStreamConfig` -> `HashTextEncoder` with the preset's text_dim / image_dim."""
    from panowan.models.loading import BaseModel
    from panowan.models.presets import DualStreamConfig, get_preset

    if isinstance(preset_or_base, BaseModel):
        b = preset_or_base
        if b.text_encoder is None or b.tokenizer is None:
            raise ValueError(f"{b.folder}: the base model was loaded without text_encoder / tokenizer")
        return WanConditioningEncoder(
            b.text_encoder,
            b.tokenizer,
            b.image_encoder,
            b.image_processor,
            cache_dir=cache_dir,
            device=device,
        )
    config = get_preset(preset_or_base) if isinstance(preset_or_base, str) else preset_or_base
    if not isinstance(config, DualStreamConfig):
        raise ValueError(
            f"build_encoder needs a BaseModel, a preset name or a DualStreamConfig, got {type(config)}"
        )
    if config.wan.get("text_dim") == 4096:
        raise ValueError(
            "this preset uses Wan's UMT5 text encoder: load the base model (--base_model_dir) first"
        )
    return HashTextEncoder(int(config.wan["text_dim"]), config.wan.get("image_dim"))
