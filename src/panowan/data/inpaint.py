"""Classical inpainting of ERP images (OpenCV), seam-aware.

Used by the classical baselines (`panowan.eval.baselines`) and, for models whose `rgb_condition_fill` is
"telea", to fill the holes of the RGB condition before it is encoded (`RoomDataset(cond_fill=...)`).
"""

from __future__ import annotations

import numpy as np

INPAINT_METHODS = ("telea", "ns")
INPAINT_RADIUS = 3


def _wrap_pad(x: np.ndarray, pad: int) -> np.ndarray:
    """Pad columns (axis 1) with the wrapped columns of the other side."""
    return np.concatenate([x[:, -pad:], x, x[:, :pad]], axis=1)


def inpaint_erp(
    image: np.ndarray, hole_HW: np.ndarray, method: str, radius: int = INPAINT_RADIUS
) -> np.ndarray:
    """Inpaint the `hole_HW` pixels of an ERP image (H x W x 3 uint8, or H x W float32) across the seam.

    `cv2.inpaint` with Telea's fast marching ("telea") or Navier-Stokes ("ns"). Each side is padded with a
    quarter of the width from the other side, so holes that touch the seam see content from across it.
    """
    import cv2

    if method not in INPAINT_METHODS:
        raise ValueError(f"unknown inpainting method {method!r} (one of {INPAINT_METHODS})")
    if not hole_HW.any():
        return image.copy()
    flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
    pad = max(1, image.shape[1] // 4)
    src = np.ascontiguousarray(_wrap_pad(image, pad))
    mask = np.ascontiguousarray(_wrap_pad(hole_HW.astype(np.uint8) * 255, pad))
    out = cv2.inpaint(src, mask, radius, flag)
    return np.ascontiguousarray(out[:, pad:-pad])
