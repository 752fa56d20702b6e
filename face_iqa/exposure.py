"""Face exposure, a measure of its own next to the quality model.

The quality model is trained on recognition utility, and it is nearly blind to light: the
default model scores a face recorded with a quarter of the light (the demo clip's dark
segment) or a face lost in a dark audience (the shared Hamilton clip) like a clean one.
Users filtering frames expect under-exposed faces to go (ISO/IEC 29794-5 lists exposure
among its face quality components), so exposure is measured here and ruled on by the
threshold stage (``threshold.min_exposure``), with its own reason.

``face_exposure`` is the 95th percentile of luma (ITU-R BT.601, 0-255) over the inner face of
an aligned crop (eyes to below the mouth, between the outer eye corners of the ArcFace-style
template that :mod:`face_iqa.align` uses; hair, background and the crop's border fill take no
part). The highlights, not the mean: the mean luma of a face also measures its skin tone,
and a mean-luma rule rejects well-lit dark skin before badly lit fair skin. On the shared
data, every recognisable face (darker skin in a dim audience included) has an exposure of
61 or more, the unrecognisable dark faces 25 or less, and the demo's strongly dimmed face 44.
"""

from __future__ import annotations

import numpy as np

__all__ = ["INNER_FACE", "face_exposure"]

# (x0, y0, x1, y1) as fractions of the aligned crop: eyes at y ~0.46, mouth at ~0.82,
# eye centres at x ~0.34 / 0.66 in the template
INNER_FACE = (0.28, 0.36, 0.72, 0.88)

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def face_exposure(crops: np.ndarray, percentile: float = 95.0) -> np.ndarray:
    """The ``percentile`` of inner-face luma of ``uint8 (N, H, W, 3)`` RGB aligned crops,
    ``float32 (N,)`` in 0-255."""
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[3] != 3:
        raise ValueError(f"expected uint8 (N, H, W, 3) crops, got {crops.dtype} {crops.shape}")
    h, w = crops.shape[1:3]
    x0, y0, x1, y1 = INNER_FACE
    inner = crops[:, round(y0 * h) : round(y1 * h), round(x0 * w) : round(x1 * w)]
    luma = inner.reshape(len(crops), -1, 3).astype(np.float32) @ _LUMA
    if luma.shape[1] == 0:
        raise ValueError(f"crops of {h}x{w} have no inner face region")
    return np.percentile(luma, percentile, axis=1).astype(np.float32)
