"""face_iqa: face detection, alignment and quality assessment (the library; never imports ray).

The few verbs a user needs::

    from face_iqa import load_image, build_detector, align_face
    det = build_detector()
    faces = det.detect([load_image("photo.jpg")])[0]
    crop, _ = align_face(frame, faces.landmarks[0])
"""

from face_iqa.align import align_face, crop_box, estimate_similarity, face_template
from face_iqa.detect import Detections, DetectorConfig, MTCNNDetector, build_detector
from face_iqa.images import ImageError, load_image

__all__ = [
    "DetectorConfig",
    "Detections",
    "ImageError",
    "MTCNNDetector",
    "align_face",
    "build_detector",
    "crop_box",
    "estimate_similarity",
    "face_template",
    "load_image",
]
__version__ = "0.1.0"
