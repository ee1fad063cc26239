"""panowan: multi-view 360° RGB-D panorama completion with a dual-stream Wan2.1-I2V model.

Python API (loaded on first use, so `import panowan` stays light): `panowan.Completer` (load a model, complete
rooms) and `panowan.RoomCompletion` (a completed room); see `panowan.sample.completer`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Completer", "RoomCompletion", "__version__"]

_LAZY = {"Completer": "panowan.sample.completer", "RoomCompletion": "panowan.sample.completer"}

if TYPE_CHECKING:
    from panowan.sample.completer import Completer, RoomCompletion


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
