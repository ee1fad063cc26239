"""How the model's repeated regions run: activation checkpointing (full or selective) and regional compilation.

A region is one Wan block or one interaction layer, called as `region(*inputs)`. `Region` wraps one so that
checkpointing and `torch.compile` act on the same unit: the checkpoint sits *inside* the compiled function,
which is what lets the compiler honour a selective policy (it partitions forward and backward with the
policy's saved ops as tags). diffusers' `compile_repeated_blocks` compiles the block modules themselves;
a checkpoint around a compiled block can only recompute the whole block, so it cannot be selective.

Policies (what backward recomputes):
- "full": everything in the region (the least memory: one `B,S,D` input per region);
- "selective": everything except the attention kernels, whose outputs are kept (`ATTENTION_OPS`). At
  20k tokens attention is over half a Wan block's forward FLOPs and its output is one `B,S,D` tensor (plus
  a `B,heads,S` log-sum-exp), so keeping it saves most of the recompute for little memory.

Regions share their Python code, so compiling every block compiles one graph (parameters are graph inputs)
that all blocks of a stream, and both streams, reuse.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from panowan.models.presets import CHECKPOINT_POLICIES

_ATTENTION_OP_NAMES = (
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_flash_attention_forward",
    "_efficient_attention_forward",
)


def _resolve_ops(names: tuple[str, ...]) -> frozenset:
    """The `default` overloads of the aten ops of `names` that this build of torch has."""
    ops = set()
    for name in names:
        packet = getattr(torch.ops.aten, name, None)
        if packet is not None:
            ops.add(packet.default)
    return frozenset(ops)


ATTENTION_OPS = _resolve_ops(_ATTENTION_OP_NAMES)
"""The fused attention kernels `F.scaled_dot_product_attention` dispatches to (flash, memory-efficient, cuDNN,
and the CPU flash kernel): the ops the selective policy keeps."""


def _keep_attention(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in ATTENTION_OPS else CheckpointPolicy.PREFER_RECOMPUTE


_SELECTIVE_CONTEXT = functools.partial(create_selective_checkpoint_contexts, _keep_attention)


class Region(nn.Module):
    """Runs `module(*inputs)`, checkpointed by `policy` (None: not checkpointed) when autograd records.

    The wrapper is not part of the model's module tree (the model keeps it outside `named_modules`), so
    parameter names, state dicts and LoRA are those of `module`."""

    def __init__(self, module: nn.Module, policy: str | None = None) -> None:
        super().__init__()
        if policy is not None and policy not in CHECKPOINT_POLICIES:
            raise ValueError(
                f"checkpoint policy must be one of {CHECKPOINT_POLICIES} or None; got {policy!r}"
            )
        self.module = module
        self.policy = policy

    def forward(self, *inputs: Any) -> Any:
        if self.policy is None or not torch.is_grad_enabled():
            return self.module(*inputs)
        if self.policy == "selective":
            return checkpoint(self.module, *inputs, use_reentrant=False, context_fn=_SELECTIVE_CONTEXT)
        return checkpoint(self.module, *inputs, use_reentrant=False)


def checkpointed_blocks(num_layers: int, fraction: float) -> int:
    """How many of `num_layers` blocks are checkpointed at `fraction` (0..1): the memory budget knob. The
    first ones are chosen (any choice costs the same); the rest keep every activation for backward."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"checkpoint fraction must be in [0, 1]; got {fraction}")
    return round(fraction * num_layers)
