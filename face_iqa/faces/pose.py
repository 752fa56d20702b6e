"""How frontal a face is, from its five MTCNN landmarks.

On real footage a turned head is the commonest reason a recogniser fails to match a face
(see the model card's real-footage figures): the quality model, trained mostly on frontal
faces, barely sees it, while this geometric measure does. The threshold stage can reject
turned faces with it (``threshold.min_frontalness``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["POSE_LEVELS", "frontalness"]

# the ``min_frontalness`` levels that `faceiqa eval-recognition --clips/--videos` reports on
POSE_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9)


def frontalness(landmarks: np.ndarray) -> np.ndarray | float:
    """1 for a frontal face, lower as it turns (yaw): one minus the nose's offset from the
    middle of the eyes and from the middle of the mouth corners, both measured along the
    eye line (so that rolling the head in the image plane does not count) in eye distances.

    ``landmarks``: ``(5, 2)`` (left eye, right eye, nose, left and right mouth corner) or a
    stack ``(N, 5, 2)``; returns a float or an ``(N,)`` float64 array. A face seen in full
    profile reaches 0 or below; eyes closer than 1e-6 px give 0; NaN landmarks give NaN.
    """
    lm = np.asarray(landmarks, np.float64)
    one = lm.ndim == 2
    lm = lm.reshape(-1, 5, 2)
    eyes = lm[:, 1] - lm[:, 0]
    d = np.hypot(eyes[:, 0], eyes[:, 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        axis = eyes / np.where(d < 1e-6, 1.0, d)[:, None]
        off_eyes = np.abs(np.sum((lm[:, 2] - (lm[:, 0] + lm[:, 1]) / 2) * axis, axis=1))
        off_mouth = np.abs(np.sum((lm[:, 2] - (lm[:, 3] + lm[:, 4]) / 2) * axis, axis=1))
        out = 1.0 - (off_eyes + off_mouth) / d
    out = np.where(d < 1e-6, 0.0, out)
    out[~np.isfinite(lm).all(axis=(1, 2))] = np.nan
    return float(out[0]) if one else out
