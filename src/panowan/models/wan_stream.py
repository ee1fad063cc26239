"""diffusers' `WanTransformer3DModel.forward` (0.42) split into embed / run_block / head.

The three pieces follow the diffusers code line for line and call the transformer's own modules,
so PEFT LoRA layers, attention processors and attention backends keep working; composing them
equals `transformer(...)` (tested). The split lets `DualStreamWan` run interaction layers between
blocks. diffusers' own gradient checkpointing flag is not used here; `DualStreamWan` checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import WanTransformer3DModel


@dataclass
class StreamState:
    """What one stream's blocks and head need besides the tokens.

    tokens: `B,S,D` after patch embedding (S = T * h/2 * w/2; order t, rows, columns).
    temb: `B,D` time embedding (head modulation). timestep_proj: `B,6,D` (block modulation).
    context: `B,L_img+L_text,D` embedded image and text tokens. rotary_emb: (cos, sin) `1,S,1,head_dim`.
    grid: (T, h/2, w/2) token grid; batch: B.
    """

    tokens: torch.Tensor
    temb: torch.Tensor
    timestep_proj: torch.Tensor
    context: torch.Tensor
    rotary_emb: tuple[torch.Tensor, torch.Tensor]
    grid: tuple[int, int, int]
    batch: int


def embed(
    transformer: WanTransformer3DModel,
    hidden_BCThw: torch.Tensor,
    timestep_B: torch.Tensor,
    text_BLD: torch.Tensor,
    image_BLD: torch.Tensor | None = None,
) -> StreamState:
    """Patch, time, text and image embeddings (diffusers' forward up to the block loop)."""
    batch_size, _, num_frames, height, width = hidden_BCThw.shape
    p_t, p_h, p_w = transformer.config.patch_size
    grid = (num_frames // p_t, height // p_h, width // p_w)

    rotary_emb = transformer.rope(hidden_BCThw)

    tokens = transformer.patch_embedding(hidden_BCThw)
    tokens = tokens.flatten(2).transpose(1, 2).contiguous()

    timestep = timestep_B
    if timestep.ndim == 2:  # B, S (Wan 2.2 TI2V per-token timesteps)
        ts_seq_len = timestep.shape[1]
        timestep = timestep.flatten()
    else:
        ts_seq_len = None

    temb, timestep_proj, context, context_image = transformer.condition_embedder(
        timestep, text_BLD, image_BLD, timestep_seq_len=ts_seq_len
    )
    if ts_seq_len is not None:
        timestep_proj = timestep_proj.unflatten(2, (6, -1))
    else:
        timestep_proj = timestep_proj.unflatten(1, (6, -1))

    if context_image is not None:
        context = torch.concat([context_image, context], dim=1)

    return StreamState(tokens, temb, timestep_proj, context, rotary_emb, grid, batch_size)


def run_block(
    transformer: WanTransformer3DModel, index: int, state: StreamState, tokens_BSD: torch.Tensor
) -> torch.Tensor:
    """Wan block `index` on `tokens_BSD` -> `B,S,D`."""
    block = transformer.blocks[index]
    return block(tokens_BSD, state.context, state.timestep_proj, state.rotary_emb)


def head(transformer: WanTransformer3DModel, tokens_BSD: torch.Tensor, state: StreamState) -> torch.Tensor:
    """Output norm, projection and unpatchify -> `B,z,T,h,w`."""
    temb = state.temb
    if temb.ndim == 3:
        shift, scale = (transformer.scale_shift_table.unsqueeze(0).to(temb.device) + temb.unsqueeze(2)).chunk(
            2, dim=2
        )
        shift = shift.squeeze(2)
        scale = scale.squeeze(2)
    else:
        shift, scale = (transformer.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
    shift = shift.to(tokens_BSD.device)
    scale = scale.to(tokens_BSD.device)

    hidden = (transformer.norm_out(tokens_BSD.float()) * (1 + scale) + shift).type_as(tokens_BSD)
    hidden = transformer.proj_out(hidden)

    p_t, p_h, p_w = transformer.config.patch_size
    t, h, w = state.grid
    hidden = hidden.reshape(state.batch, t, h, w, p_t, p_h, p_w, -1)
    hidden = hidden.permute(0, 7, 1, 4, 2, 5, 3, 6)
    return hidden.flatten(6, 7).flatten(4, 5).flatten(2, 3)


def forward_stream(
    transformer: WanTransformer3DModel,
    hidden_BCThw: torch.Tensor,
    timestep_B: torch.Tensor,
    text_BLD: torch.Tensor,
    image_BLD: torch.Tensor | None = None,
) -> torch.Tensor:
    """embed -> every block -> head: the plain transformer's output `B,z,T,h,w`."""
    state = embed(transformer, hidden_BCThw, timestep_B, text_BLD, image_BLD)
    tokens = state.tokens
    for index in range(len(transformer.blocks)):
        tokens = run_block(transformer, index, state, tokens)
    return head(transformer, tokens, state)
