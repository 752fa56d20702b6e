"""Recognition utility: how recognisable a degraded face still is, measured with a real
face recogniser (dlib's ResNet descriptor shipped in ``face-recognition-models``).

Mapping (documented in the model card): with ``d`` the Euclidean distance between the
128-d descriptors of the clean and of the degraded crop,

    quality = 100 * exp(-d / 0.25)

100 means "as recognisable as the clean face" (d = 0); the quality halves every 0.17 of
distance; at dlib's same-person threshold (d = 0.6) it is 9, beyond it it tends to 0.
An exponential rather than a linear ramp: it never saturates (no ties at 0 for the many
faces past the threshold) and spreads the mild degradations, where a filter's decisions
are made, over a wider range.
Both descriptors are taken on the same face chip geometry (found on the clean crop), so the
distance measures the degradation only, not landmark jitter.

A synthetic set (:func:`face_iqa.learn.synthetic.build_synthetic_set`, ``resolution_label``) adds to
``d`` what the clean face itself lost by being captured small: the distance that reducing a
large face to the clean crop's zoom causes, measured on the set's own large faces. So a face
of 100 pixels scores below the same face at 400 pixels, even when neither is degraded.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DISTANCE_SCALE", "distance_to_quality"]

DISTANCE_SCALE = 0.25


def distance_to_quality(d: np.ndarray | float) -> np.ndarray:
    """Descriptor distance -> quality in (0, 100] (see the module docstring)."""
    return 100.0 * np.exp(-np.maximum(np.asarray(d, np.float64), 0.0) / DISTANCE_SCALE)
