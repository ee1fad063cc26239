"""The attention kernel every attention of a model uses: diffusers' attention dispatch, by name."""

from __future__ import annotations


def attention_backend(name: str | None):
    """diffusers' `attention_backend(name)` context (refusing an unknown name now, before any loading), or a
    no-op context for None."""
    import contextlib

    if name is None:
        return contextlib.nullcontext()
    from diffusers.models.attention_dispatch import AttentionBackendName
    from diffusers.models.attention_dispatch import attention_backend as use_backend

    try:
        AttentionBackendName(name)
    except ValueError:
        names = ", ".join(b.value for b in AttentionBackendName)
        raise ValueError(
            f"--attention_backend {name!r} is not a diffusers backend; one of: {names}"
        ) from None
    return use_backend(name)
