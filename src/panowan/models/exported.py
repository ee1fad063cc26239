"""Exported model folders (`default_model.json` + `default_model.safetensors`): reading their metadata and
loading their weights into a `DualStreamWan`.

`panowan infer --model_dir` and the embedded default read them; `panowan train --init_from` starts a run
from one (chained training). Writing is `panowan.commands.infer.export_embedded`.

Integrity: `default_model.json` (written after the weights) holds a manifest of the weights file,
`"manifest": {"default_model.safetensors": {"size": B, "sha256": H}}` (`panowan.utils.manifest`);
`verify_exported` checks it before the weights are used (`model_source.embedded_source`,
`init_from_exported`), with a ValueError naming the folder and the file. An export written before
manifests existed loads with a warning (nothing to verify it against).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # light at import: the CLI reads exported metadata before any model code loads
    from panowan.models.dual_stream import DualStreamWan

EMBEDDED_FORMAT = "panowan-embedded-model/1"
EMBEDDED_CONFIG = "default_model.json"
EMBEDDED_WEIGHTS = "default_model.safetensors"
MANIFEST_KEY = "manifest"
"""Key of `default_model.json` holding the weights' manifest (name -> size, sha256)."""
DECODER_PREFIX = "pixel_decoders"
"""State-dict prefix of the model's pixel decoders (`DualStreamWan.pixel_decoders`)."""


def read_exported(folder: str | os.PathLike) -> tuple[dict[str, Any], Path]:
    """(metadata, weights path) of an exported model folder; ValueError naming the file if it is not one."""
    root = Path(folder)
    cfg_path, weights = root / EMBEDDED_CONFIG, root / EMBEDDED_WEIGHTS
    if not (cfg_path.is_file() and weights.is_file()):
        raise ValueError(f"{root}: not an exported model (needs {EMBEDDED_CONFIG} and {EMBEDDED_WEIGHTS})")
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{cfg_path}: not valid JSON ({exc})") from exc
    if meta.get("format") != EMBEDDED_FORMAT:
        raise ValueError(f"{cfg_path}: unknown format {meta.get('format')!r} (expected {EMBEDDED_FORMAT})")
    return meta, weights


def verify_exported(
    folder: str | os.PathLike, meta: dict[str, Any] | None = None, *, hashes: bool = True
) -> bool:
    """Check an exported model's weights against the manifest in its `default_model.json` (`meta`: that file's
    contents, if already read): True when verified, False (with a warning) for an export without a manifest.
    ValueError (`ManifestError`) naming the folder and the file when it is missing, resized or, with `hashes`,
    changed. `hashes` False checks the size only (huge exports)."""
    from panowan.utils.manifest import ManifestError, check_manifest

    root = Path(folder)
    if meta is None:
        meta = read_exported(root)[0]
    manifest = meta.get(MANIFEST_KEY)
    if manifest is None:
        warnings.warn(f"{root / EMBEDDED_CONFIG}: no manifest (exported before models carried one); its weights "
                      "are loaded unverified", stacklevel=2)  # fmt: skip
        return False
    if not isinstance(manifest, dict) or EMBEDDED_WEIGHTS not in manifest:
        raise ManifestError(f"exported model {root}: {EMBEDDED_CONFIG} has a manifest without "
                            f"{EMBEDDED_WEIGHTS}", root / EMBEDDED_CONFIG, "manifest")  # fmt: skip
    check_manifest(root, manifest, hashes=hashes, what=f"exported model {root}")
    return True


def load_exported_weights(
    model: DualStreamWan,
    weights: str | os.PathLike,
    *,
    fresh_decoders: bool = False,
) -> None:
    """Copy an exported state dict into `model` (cast to its dtypes). The file holds both streams; a
    one-stream model (torchrun) must find all of its own tensors in it and ignores the peer's.
    `fresh_decoders`: the file's pixel decoders (if any) are not loaded; the model's keep their initialisation."""
    from safetensors.torch import load_file, load_model

    if fresh_decoders:
        state = {k: v for k, v in load_file(str(weights)).items() if not k.startswith(f"{DECODER_PREFIX}.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(f"{DECODER_PREFIX}.")]
    else:
        missing, unexpected = load_model(model, str(weights), strict=False)
    peers = [s for s in ("rgb", "depth") if s not in model.local_streams]
    ignored = [f"{p}.{s}." for p in ("streams", "interactions", "pixel_decoders") for s in peers]
    foreign = [k for k in unexpected if not any(k.startswith(prefix) for prefix in ignored)]
    if missing or foreign:
        raise ValueError(
            f"{weights}: does not match its config (missing {missing[:3]}, unexpected {foreign[:3]})"
        )


DECODER_FIELDS = ("pixel_decoder_width", "pixel_decoder_levels", "pixel_decoder_rays")
"""`DualStreamConfig` fields of the pixel decoders' architecture: a run may change them (the decoders then
start fresh, `init_from_exported`)."""


def init_from_exported(
    model: DualStreamWan, folder: str | os.PathLike, *, verify: bool = True
) -> dict[str, Any]:
    """Start `model` (no LoRA yet) from an exported model of the same architecture; returns its metadata.
    The weights are verified against the export's manifest first (`verify` False: their size only).

    The architectures must agree (`NOT_ARCHITECTURE` aside), except for the pixel decoders (`DECODER_FIELDS`):
    a model with pixel decoders may start from an export without them or with decoders of another width, depth
    or input; its decoders then start fresh (as the identity, with a warning), everything else from the export.
    An export that kept its LoRA separate cannot start a run (export it compact, LoRA folded in).
    """
    from panowan.models.presets import NOT_ARCHITECTURE, DualStreamConfig

    meta, weights = read_exported(folder)
    if model.lora_settings is not None:
        raise ValueError("load the exported weights before adding LoRA")
    if meta.get("lora") is not None:
        raise ValueError(
            f"{folder}: its LoRA is stored apart from the base; export it compact (LoRA folded in)"
        )
    exported = DualStreamConfig.from_dict(meta["model"])
    others = tuple(k for k in model.config.to_dict() if k not in DECODER_FIELDS)
    decoders = model.config.differences(exported, ignore=others)
    fresh = bool(decoders) and model.config.pixel_decoder_width > 0
    diff = model.config.differences(exported, ignore=(*NOT_ARCHITECTURE, *(DECODER_FIELDS if fresh else ())))
    if diff:
        raise ValueError(f"{folder}: exported for another model configuration (differs in {diff})")
    if fresh and exported.pixel_decoder_width > 0:
        warnings.warn(
            f"{folder}: its pixel decoders differ from this model's ({decoders}); they start fresh",
            stacklevel=2,
        )
    verify_exported(folder, meta, hashes=verify)
    load_exported_weights(model, weights, fresh_decoders=fresh)
    return meta
