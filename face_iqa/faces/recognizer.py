"""dlib's face recogniser (the ResNet descriptor shipped in ``face-recognition-models``): the
recogniser every recognition figure of this project is measured with.

Two descriptors of one person lie closer than :data:`SAME_PERSON_THRESHOLD` (dlib's own
operating point) in most cases; the evaluation sets its own threshold from a target false
match rate instead.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

__all__ = ["SAME_PERSON_THRESHOLD", "DlibRecognizer"]

SAME_PERSON_THRESHOLD = 0.6


def _model_file(name: str) -> Path:
    # face_recognition_models' __init__ imports pkg_resources, which current setuptools no
    # longer ships: find the package's folder without importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the face-recognition-models package is not installed")
    p = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not p.is_file():
        raise FileNotFoundError(f"{p}: face-recognition-models file missing")
    return p


class DlibRecognizer:
    """dlib's face descriptor on face crops.

    :meth:`chip_shape` finds the 5-point shape on a (clean) crop; :meth:`descriptor`
    computes the 128-d descriptor of any crop of the same size through that shape.
    """

    def __init__(self) -> None:
        import dlib

        self._dlib = dlib
        self.shape_predictor = dlib.shape_predictor(
            str(_model_file("shape_predictor_5_face_landmarks.dat"))
        )
        self.net = dlib.face_recognition_model_v1(
            str(_model_file("dlib_face_recognition_resnet_model_v1.dat"))
        )

    def chip_shape(self, crop: np.ndarray, box: tuple[float, float, float, float] | None = None):
        """dlib's 5-point shape of the face in ``crop`` (uint8 RGB). ``box`` defaults to the
        face region of our aligned crops (the template's face, with a margin)."""
        h, w = crop.shape[:2]
        if box is None:
            box = (0.12 * w, 0.12 * h, 0.88 * w, 0.95 * h)
        rect = self._dlib.rectangle(*(int(round(v)) for v in box))
        return self.shape_predictor(np.ascontiguousarray(crop), rect)

    def descriptor(self, crop: np.ndarray, shape) -> np.ndarray:
        """128-d ``float64`` descriptor of ``crop`` through the chip given by ``shape``."""
        return np.asarray(
            self.net.compute_face_descriptor(np.ascontiguousarray(crop), shape, 0), np.float64
        )

    def image_descriptor(self, crop: np.ndarray) -> np.ndarray:
        """Descriptor of a crop through its own shape (for comparing different photos)."""
        return self.descriptor(crop, self.chip_shape(crop))
