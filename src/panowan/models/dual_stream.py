"""DualStreamWan: two Wan I2V transformers (RGB, depth) coupled by interaction layers.

Schedule: after Wan block i with (i + 1) % interval == 0 comes interaction point k = (i + 1) // interval;
odd k: pose cross-attention (tokens attend to PluckerNet features), even k: cross-stream attention
(each stream's tokens attend to the other stream's pre-interaction tokens). 40 blocks, interval 4:
10 points, 5 of each kind. `DualStreamConfig.interactions` may drop either kind (the ablations): the schedule
then holds only the points of the kinds kept, and the model only their layers (PluckerNet stays, unused without
pose exchange, so that every variant's checkpoints have one layout).

With `DualStreamConfig.pixel_decoder_width`, each stream also has a learnt full-resolution decoding stage
(`pixel_decoders`, `models.pixel_decoder`); `decode_pixels` runs it on the codec's decoding.

Placement is the exchange's business (`panowan.parallel.exchange.StreamExchange`): this module holds the
streams this process owns (`local_streams`) and asks `exchange.swap` for the other stream's tokens.
The new modules are initialised from per-stream seeds, so every placement builds the same weights.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import WanTransformer3DModel
from torch import nn

from panowan.models.codec import SPATIAL_FACTOR, check_video, latent_frames
from panowan.models.conditioning import MASK_CHANNELS
from panowan.models.interaction import CrossStreamAttention, PoseCrossAttention
from panowan.models.pixel_decoder import PixelDecoder, apply_decoders
from panowan.models.plucker_net import PLUCKER_CHANNELS, PluckerNet
from panowan.models.presets import DualStreamConfig
from panowan.models.regions import CHECKPOINT_POLICIES, Region, checkpointed_blocks
from panowan.models.step_cache import StepCache
from panowan.models.wan_stream import StreamState, embed, head
from panowan.parallel.exchange import STREAMS, LocalExchange, StreamExchange

# diffusers' WanAttnProcessor splits [image; text] context assuming exactly 512 text tokens.
WAN_TEXT_TOKENS = 512


@dataclass(frozen=True)
class InteractionPoint:
    """Interaction point `k` (1-based) runs after block `block`; `kind` is "pose" or "cross"; `index` is its
    layer's position in each stream's `interactions` list (k - 1 when every kind is kept)."""

    block: int
    k: int
    kind: str
    index: int


def interaction_schedule(config: DualStreamConfig) -> list[InteractionPoint]:
    """The interaction points of the kinds `config.interactions` keeps, in forward order."""
    keep = {"pose": config.pose_exchange, "cross": config.cross_stream}
    points: list[InteractionPoint] = []
    for i in range(config.num_layers):
        if (i + 1) % config.interaction_interval == 0:
            k = (i + 1) // config.interaction_interval
            kind = "pose" if k % 2 == 1 else "cross"
            if keep[kind]:
                points.append(InteractionPoint(i, k, kind, len(points)))
    return points


def _seeded(seed: int, build):
    """Build modules on CPU in float32 from a private RNG stream (same weights on every rank)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


class DualStreamWan(nn.Module):
    """The dual-stream model restricted to the streams this process owns.

    streams: `ModuleDict` {name: WanTransformer3DModel}; interactions: {name: ModuleList} with one layer
    per interaction point of the schedule (index `point.index`); plucker_net: shared by the local streams; exchange: how the
    other stream's tokens arrive.
    """

    def __init__(
        self,
        streams: Mapping[str, WanTransformer3DModel],
        config: DualStreamConfig,
        exchange: StreamExchange | None = None,
    ) -> None:
        super().__init__()
        names = tuple(streams)
        if not names or any(n not in STREAMS for n in names) or len(set(names)) != len(names):
            raise ValueError(f"streams must be a non-empty subset of {STREAMS}; got {names}")
        self.config = config
        self.local_streams: tuple[str, ...] = tuple(n for n in STREAMS if n in names)
        self.streams = nn.ModuleDict({n: streams[n] for n in self.local_streams})
        self.schedule = interaction_schedule(config)
        self.exchange = exchange if exchange is not None else LocalExchange()
        if any(p.kind == "cross" for p in self.schedule) and set(self.exchange.local_streams) != set(
            self.local_streams
        ):
            raise ValueError(
                f"the exchange serves streams {tuple(self.exchange.local_streams)} but this model holds "
                f"{self.local_streams}; pass an exchange for this placement"
            )
        for n, t in self.streams.items():
            if (
                t.config.out_channels != config.z_dim
                or t.config.in_channels != 2 * config.z_dim + MASK_CHANNELS
            ):
                raise ValueError(
                    f"stream {n}: transformer has in/out channels {t.config.in_channels}/{t.config.out_channels}, "
                    f"config needs {2 * config.z_dim + MASK_CHANNELS}/{config.z_dim}"
                )
        reference = next(iter(self.streams.values()))
        device, dtype = reference.device, reference.dtype
        self.interactions = nn.ModuleDict(
            {
                n: _seeded(
                    config.init_seed * 1000 + 1 + STREAMS.index(n), lambda: self._build_interactions()
                ).to(device, dtype)
                for n in self.local_streams
            }
        )
        self.plucker_net = _seeded(
            config.init_seed * 1000, lambda: PluckerNet(config.pose_dim, config.plucker_hidden)
        ).to(device, dtype)
        self.pixel_decoders = None
        if config.pixel_decoder_width:
            self.pixel_decoders = nn.ModuleDict(
                {
                    n: _seeded(
                        config.init_seed * 1000 + 10 + STREAMS.index(n),
                        lambda n=n: PixelDecoder(
                            n,
                            config.pixel_decoder_width,
                            config.cross_stream,
                            levels=config.pixel_decoder_levels,
                            rays=config.pixel_decoder_rays,
                        ),
                    ).to(device, dtype)
                    for n in self.local_streams
                }
            )
        self.gradient_checkpointing = False
        self._checkpointing: tuple[str, int] = ("full", config.num_layers)  # policy, checkpointed blocks
        self._compile_kwargs: dict[str, Any] | None = None
        self._regions: dict[str, dict[str, list[Region]]] | None = None  # see _build_regions
        self.lora_settings = None  # set by panowan.models.lora.add_lora

    def decode_pixels(
        self,
        coarse: Mapping[str, torch.Tensor],
        conditions: Mapping[str, torch.Tensor],
        mask_B1FHW: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The local streams' pixel videos `B,C_s,F,H,W` (rgb 3 in [-1, 1], depth 1 normalised) from the codec's
        decodings `coarse` and the conditions (same layout; the other stream's too when the model exchanges
        across streams) and the mask (1 = known). Without pixel decoders, `coarse` itself."""
        if self.pixel_decoders is None:
            return {n: coarse[n] for n in self.local_streams}
        return apply_decoders(
            self.pixel_decoders, dict(coarse), dict(conditions), mask_B1FHW, self.config.cross_stream
        )

    def _build_interactions(self) -> nn.ModuleList:
        c = self.config
        layers: list[nn.Module] = []
        for point in self.schedule:
            if point.kind == "pose":
                layers.append(
                    PoseCrossAttention(c.dim, c.pose_dim, c.interaction_inner_dim, c.interaction_heads)
                )
            else:
                layers.append(CrossStreamAttention(c.dim, c.interaction_inner_dim, c.interaction_heads))
        return nn.ModuleList(layers)

    @classmethod
    def from_base(
        cls,
        base: WanTransformer3DModel,
        config: DualStreamConfig,
        local_streams: Iterable[str] = STREAMS,
        exchange: StreamExchange | None = None,
        *,
        reuse_base: bool = False,
    ) -> DualStreamWan:
        """Every local stream starts from a deep copy of `base` (read from disk once by the caller).
        `reuse_base=True` hands `base` itself to the last local stream (saves one copy of a 14B model)."""
        names = tuple(local_streams)
        streams = {n: copy.deepcopy(base) for n in names[:-1]}
        streams[names[-1]] = base if reuse_base else copy.deepcopy(base)
        return cls(streams, config, exchange)

    def enable_gradient_checkpointing(self, policy: str = "full", fraction: float = 1.0) -> None:
        """Checkpoint Wan blocks and interaction layers, each its own region (`models.regions`): `policy`
        "full" recomputes a region whole in backward, "selective" keeps its attention outputs; `fraction` of
        each stream's blocks are checkpointed (the memory budget: the others keep every activation), the
        interaction layers always are. The exchange stays outside every checkpointed region, so
        recomputation never repeats communication."""
        if policy not in CHECKPOINT_POLICIES:
            raise ValueError(f"checkpoint policy must be one of {CHECKPOINT_POLICIES}; got {policy!r}")
        self.gradient_checkpointing = True
        self._checkpointing = (policy, checkpointed_blocks(self.config.num_layers, fraction))
        self._build_regions()

    def disable_gradient_checkpointing(self) -> None:
        self.gradient_checkpointing = False
        self._build_regions()

    def compile_blocks(self, **compile_kwargs: Any) -> None:
        """`torch.compile` every region (Wan block, interaction layer) with its checkpoint inside
        (`models.regions`; default `dynamic=False`). The regions share code, so compiling costs about one
        block per region kind. Names, weights and the split forward are unchanged."""
        self._compile_kwargs = {"dynamic": False, **compile_kwargs}
        self._build_regions()

    def _build_regions(self) -> None:
        """(Re)build the callables `forward` runs: regions with their checkpoint policy, compiled if asked.
        They live in a plain dict, outside the module tree (`Region` holds the model's own modules)."""
        policy, checkpointed = self._checkpointing if self.gradient_checkpointing else (None, 0)
        regions: dict[str, dict[str, list[Region]]] = {}
        for n in self.local_streams:
            blocks = self.streams[n].blocks
            regions[n] = {
                "blocks": [Region(b, policy if i < checkpointed else None) for i, b in enumerate(blocks)],
                "interactions": [Region(layer, policy) for layer in self.interactions[n]],
            }
        if self._compile_kwargs is not None:
            for per_stream in regions.values():
                for region in (*per_stream["blocks"], *per_stream["interactions"]):
                    region.compile(**self._compile_kwargs)
        self._regions = regions

    def _block(self, stream: str, index: int) -> nn.Module:
        if self._regions is None:
            return self.streams[stream].blocks[index]
        region = self._regions[stream]["blocks"][index]
        assert region.module is self.streams[stream].blocks[index], "a block was replaced after its region"
        return region

    def _interaction(self, stream: str, index: int) -> nn.Module:
        if self._regions is None:
            return self.interactions[stream][index]
        region = self._regions[stream]["interactions"][index]
        assert region.module is self.interactions[stream][index], "a layer was replaced after its region"
        return region

    def _interact(
        self, point: InteractionPoint, tokens: dict[str, torch.Tensor], pose: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """One interaction point on every local stream's `B,S,D` tokens."""
        if point.kind == "pose":
            # Pose cross-attention: B,S,D attends to B,S,pose_dim.
            return {n: self._interaction(n, point.index)(tokens[n], pose) for n in self.local_streams}
        # Cross-stream attention on pre-interaction states. The swap (maybe communication) runs outside
        # any checkpointed region.
        others = self.exchange.swap({n: tokens[n] for n in self.local_streams})  # each B,S,D
        return {n: self._interaction(n, point.index)(tokens[n], others[n]) for n in self.local_streams}

    def _validate(
        self,
        noisy: Mapping[str, torch.Tensor],
        condition: Mapping[str, torch.Tensor],
        timestep: torch.Tensor,
        plucker: torch.Tensor,
        text: torch.Tensor,
        image: torch.Tensor | None,
    ) -> None:
        want = set(self.local_streams)
        for what, d in (("noisy", noisy), ("condition", condition)):
            if set(d) != want:
                raise ValueError(f"{what} holds streams {sorted(d)}, this model owns {sorted(want)}")
        z = self.config.z_dim
        shapes = {n: tuple(x.shape) for n, x in noisy.items()}
        first = shapes[self.local_streams[0]]
        if len(first) != 5 or first[1] != z:
            raise ValueError(f"noisy latents must be B,{z},T,h,w; got {shapes}")
        if any(s != first for s in shapes.values()):
            raise ValueError(f"the streams' noisy latents differ in shape: {shapes}")
        b, _, t, h, w = first
        if h % 2 or w % 2:
            raise ValueError(f"latent h, w must be even (pixel H, W multiples of 16); got {first}")
        for n, c in condition.items():
            if tuple(c.shape) != (b, z + MASK_CHANNELS, t, h, w):
                raise ValueError(
                    f"condition[{n!r}] has shape {tuple(c.shape)}; need {(b, z + MASK_CHANNELS, t, h, w)} "
                    f"(4 mask channels + {z} latent channels, like noisy {first})"
                )
        if timestep.shape != (b,):
            raise ValueError(f"timestep must be [B] = [{b}]; got {tuple(timestep.shape)}")
        check_video(plucker, "plucker", channels=PLUCKER_CHANNELS)
        pb, _, pf, ph, pw = plucker.shape
        if (pb, latent_frames(pf), ph // SPATIAL_FACTOR, pw // SPATIAL_FACTOR) != (b, t, h, w):
            raise ValueError(
                f"plucker {tuple(plucker.shape)} does not match the latents {first} (T=(F-1)/4+1, h=H/8)"
            )
        wan = self.config.wan
        if text.dim() != 3 or text.shape[0] != b or text.shape[2] != wan.get("text_dim", 4096):
            raise ValueError(
                f"text must be B,L,{wan.get('text_dim', 4096)} with B={b}; got {tuple(text.shape)}"
            )
        if wan.get("image_dim") is None:
            if image is not None:
                raise ValueError("this model has no image embedder; pass image=None")
        else:
            if image is None or image.dim() != 3 or image.shape[0] != b or image.shape[2] != wan["image_dim"]:
                got = None if image is None else tuple(image.shape)
                raise ValueError(f"image must be B,L,{wan['image_dim']} with B={b}; got {got}")
            if wan.get("added_kv_proj_dim") is not None and text.shape[1] != WAN_TEXT_TOKENS:
                raise ValueError(
                    f"Wan I2V expects {WAN_TEXT_TOKENS} text tokens (diffusers splits image/text context "
                    f"at that length); got text {tuple(text.shape)}"
                )

    def forward(
        self,
        noisy: Mapping[str, torch.Tensor],
        condition: Mapping[str, torch.Tensor],
        timestep: torch.Tensor,
        plucker: torch.Tensor,
        text: torch.Tensor,
        image: torch.Tensor | None = None,
        step_cache: StepCache | None = None,
    ) -> dict[str, torch.Tensor]:
        """Velocity (noise - x0) `B,z,T,h,w` of every local stream.

        noisy[s]: `B,z,T,h,w`; condition[s]: `B,4+z,T,h,w` (mask, condition latents); timestep: `[B]`
        (sigma * 1000); plucker: `B,6,F,H,W`; text: `B,L,text_dim`; image: `B,L_img,image_dim` or None;
        step_cache: a sampling run's `StepCache` (inference only), or None to run every block.
        """
        # 0. Validation (shapes named in every error).
        self._validate(noisy, condition, timestep, plucker, text, image)
        if step_cache is not None and torch.is_grad_enabled():
            raise ValueError("step caching is for sampling: call the model under torch.no_grad()")
        dtype = next(iter(self.streams.values())).dtype

        # 1. Pose features, once for all local streams: B,S,pose_dim (none without pose exchange).
        pose = self.plucker_net(plucker.to(dtype)) if self.config.pose_exchange else None

        # 2. Embeddings: input B,(2z+4),T,h,w -> tokens B,S,D (+ time / text / image context).
        states: dict[str, StreamState] = {}
        for n in self.local_streams:
            hidden = torch.cat([noisy[n], condition[n]], dim=1).to(dtype)
            img = None if image is None else image.to(dtype)
            states[n] = embed(self.streams[n], hidden, timestep, text.to(dtype), img)
        tokens = {n: states[n].tokens for n in self.local_streams}  # each B,S,D

        # 3. Wan blocks, with an interaction layer after every interval-th block. With a step cache, the
        # first region (block 0 and its interaction, if any) decides whether the rest runs (models.step_cache).
        points = {p.block: p for p in self.schedule}
        grid = states[self.local_streams[0]].grid
        after_first: dict[str, torch.Tensor] = {}
        for i in range(self.config.num_layers):
            for n in self.local_streams:
                st = states[n]
                tokens[n] = self._block(n, i)(tokens[n], st.context, st.timestep_proj, st.rotary_emb)
            if i in points:
                tokens = self._interact(points[i], tokens, pose)
            if i == 0 and step_cache is not None:
                first = {n: tokens[n] - states[n].tokens for n in self.local_streams}
                if step_cache.should_skip(first, grid, self.exchange):
                    tokens = {n: step_cache.cached_rest(tokens[n], n) for n in self.local_streams}
                    break
                after_first = dict(tokens)
        else:
            if step_cache is not None:
                step_cache.store_rest({n: tokens[n] - after_first[n] for n in self.local_streams}, grid)

        # 4. Heads: tokens B,S,D -> velocity B,z,T,h,w.
        return {n: head(self.streams[n], tokens[n], states[n]) for n in self.local_streams}
