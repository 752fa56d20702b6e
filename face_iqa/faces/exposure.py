"""Face exposure, a measure of its own next to the quality model.

The quality model is trained on recognition utility, and it is nearly blind to light: the
default model scores a face recorded with a quarter of the light (the demo clip's dark
segment) or a face lost in a dark audience (the shared Hamilton clip) like a clean one.
Users filtering frames expect under-exposed faces to go (ISO/IEC 29794-5 lists exposure
among its face quality components), so exposure is measured here and ruled on by the
threshold stage (``threshold.min_exposure``), with its own reason.

``face_exposure`` is the 95th percentile of 8-bit luma (ITU-R BT.601 weights, 0-255, as
OpenCV's RGB-to-grey conversion rounds it) over the inner face of
an aligned crop (eyes to below the mouth, between the outer eye corners of the ArcFace-style
template that :mod:`face_iqa.faces.align` uses; hair, background and the crop's border fill take no
part). The highlights, not the mean: the mean luma of a face also measures its skin tone,
and a mean-luma rule rejects well-lit dark skin before badly lit fair skin. On the shared
data, every recognisable face (darker skin in a dim audience included) has an exposure of
61 or more, the unrecognisable dark faces 25 or less, and the demo's strongly dimmed face 44.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["INNER_FACE", "face_exposure"]

# (x0, y0, x1, y1) as fractions of the aligned crop: eyes at y ~0.46, mouth at ~0.82,
# eye centres at x ~0.34 / 0.66 in the template
INNER_FACE = (0.28, 0.36, 0.72, 0.88)


def face_exposure(crops: np.ndarray, percentile: float = 95.0) -> np.ndarray:
    """The ``percentile`` of inner-face luma of ``uint8 (N, H, W, 3)`` RGB aligned crops,
    ``float32 (N,)`` in 0-255."""
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[3] != 3:
        raise ValueError(f"expected uint8 (N, H, W, 3) crops, got {crops.dtype} {crops.shape}")
    h, w = crops.shape[1:3]
    x0, y0, x1, y1 = INNER_FACE
    inner = crops[:, round(y0 * h) : round(y1 * h), round(x0 * w) : round(x1 * w)]
    m = inner.shape[1] * inner.shape[2]
    if m == 0:
        raise ValueError(f"crops of {h}x{w} have no inner face region")
    # np.percentile's linear interpolation between order statistics, read off each crop's
    # 256-bin histogram: about 5x cheaper than converting and sorting float luma, which took
    # 0.8 ms a face on one core of the H200 machine (most of its pipeline's scorer time)
    cum = np.empty((len(crops), 256), np.int64)
    for i, face in enumerate(inner):
        grey = cv2.cvtColor(np.ascontiguousarray(face), cv2.COLOR_RGB2GRAY)
        cum[i] = np.cumsum(np.bincount(grey.ravel(), minlength=256))
    q = percentile / 100.0 * (m - 1)
    k = int(np.floor(q))
    lo = (cum > k).argmax(axis=1)  # the k-th smallest value (0-based)
    hi = (cum > min(k + 1, m - 1)).argmax(axis=1)
    return (lo + (hi - lo) * (q - k)).astype(np.float32)
