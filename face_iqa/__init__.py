"""face_iqa: face detection, alignment and quality assessment (the library; never imports ray).

The few verbs a user needs::

    from face_iqa import align_face, build_detector, build_scorer, load_image
    frame = load_image("photo.jpg")
    faces = build_detector().detect([frame])[0]
    crop, _ = align_face(frame, faces.landmarks[0])
    quality = build_scorer()(crop[None])

The library is arranged by role (see ``docs/architecture.md``): :mod:`face_iqa.faces` finds,
aligns and follows faces; :mod:`face_iqa.model` is the quality model and its scorer;
:mod:`face_iqa.learn` makes models (labels, training, export); :mod:`face_iqa.judge`
evaluates them. At the top only what all of them share: images, the batch schema, CPU
allocation, metrics and the demo sample.
"""

from face_iqa.faces.align import align_face, crop_box, estimate_similarity, face_template
from face_iqa.faces.detect import Detections, DetectorConfig, MTCNNDetector, build_detector
from face_iqa.images import ImageError, load_image
from face_iqa.model.scorer import Scorer, ScorerConfig, build_scorer

__all__ = [
    "DetectorConfig",
    "Detections",
    "ImageError",
    "MTCNNDetector",
    "Scorer",
    "ScorerConfig",
    "align_face",
    "build_detector",
    "crop_box",
    "estimate_similarity",
    "face_template",
    "build_scorer",
    "load_image",
]
__version__ = "0.1.0"
