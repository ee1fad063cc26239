"""Interaction layers between Wan blocks: pose cross-attention and cross-stream attention.

Both are residual: `x + to_out(attention(norm(x), norm(context)))`. The output projection `to_out`
(weight and bias) is the ONE zero-initialised factor, so at initialisation the layer is the identity
(the model equals the base Wan), `to_out` receives gradient at the first step and, once it is non-zero,
every other parameter does too (NOTES pitfall 1: no second zero factor such as a zero gate).

Attention goes through diffusers' `dispatch_attention_fn` with layout `B,S,heads,head_dim`, so the
active backend (SDPA, flash, cuDNN, ...) applies and no S x S matrix is materialised (pitfall 7).
"""

from __future__ import annotations

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from torch import nn


class _CrossAttention(nn.Module):
    """Queries from `x_BSD`, keys and values from `context_BLC`; residual, zero-initialised output."""

    def __init__(self, dim: int, context_dim: int, inner_dim: int, heads: int, eps: float = 1e-6) -> None:
        super().__init__()
        if inner_dim % heads:
            raise ValueError(f"inner_dim {inner_dim} is not divisible by heads {heads}")
        self.heads = heads
        self.norm_x = nn.LayerNorm(dim, eps=eps)
        self.norm_context = nn.LayerNorm(context_dim, eps=eps)
        self.to_q = nn.Linear(dim, inner_dim)
        self.to_k = nn.Linear(context_dim, inner_dim)
        self.to_v = nn.Linear(context_dim, inner_dim)
        # q/k RMSNorm as in Wan's attention: keeps logits bounded whatever the stream's scale.
        self.norm_q = nn.RMSNorm(inner_dim, eps=eps)
        self.norm_k = nn.RMSNorm(inner_dim, eps=eps)
        self.to_out = nn.Linear(inner_dim, dim)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, x_BSD: torch.Tensor, context_BLC: torch.Tensor) -> torch.Tensor:
        x_norm = self.norm_x(x_BSD)
        c_norm = self.norm_context(context_BLC.to(x_norm.dtype))
        q = self.norm_q(self.to_q(x_norm)).unflatten(2, (self.heads, -1))  # B,S,heads,head_dim
        k = self.norm_k(self.to_k(c_norm)).unflatten(2, (self.heads, -1))  # B,L,heads,head_dim
        v = self.to_v(c_norm).unflatten(2, (self.heads, -1))
        out = dispatch_attention_fn(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False)
        out = out.flatten(2, 3).type_as(x_BSD)  # B,S,inner_dim
        return x_BSD + self.to_out(out)


class PoseCrossAttention(_CrossAttention):
    """Stream tokens `B,S,dim` attend to PluckerNet features `B,S,pose_dim`."""

    def __init__(self, dim: int, pose_dim: int, inner_dim: int, heads: int, eps: float = 1e-6) -> None:
        super().__init__(dim, pose_dim, inner_dim, heads, eps)

    def forward(self, x_BSD: torch.Tensor, pose_BSP: torch.Tensor) -> torch.Tensor:
        return super().forward(x_BSD, pose_BSP)


class CrossStreamAttention(_CrossAttention):
    """Stream tokens `B,S,dim` attend to the other stream's tokens `B,S,dim`."""

    def __init__(self, dim: int, inner_dim: int, heads: int, eps: float = 1e-6) -> None:
        super().__init__(dim, dim, inner_dim, heads, eps)

    def forward(self, x_BSD: torch.Tensor, other_BSD: torch.Tensor) -> torch.Tensor:
        return super().forward(x_BSD, other_BSD)
