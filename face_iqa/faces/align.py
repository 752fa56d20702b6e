"""Face geometry as pure functions: 5-point similarity alignment and box-plus-margin crops.

Coordinates are ``float32`` pixels, x to the right and y down. Landmarks are ``(5, 2)`` in
MTCNN's order: left eye, right eye, nose, left mouth corner, right mouth corner ("left" is
the image's left). No model lives here.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "align_face",
    "crop_box",
    "crop_footprint",
    "estimate_similarity",
    "landmarks_plausible",
    "matrix_zoom",
    "face_crop",
    "face_template",
    "transform_points",
]

# The 5-point template of ArcFace-style recognisers (insightface), for a 112x112 crop.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


def face_template(size: int = 224) -> np.ndarray:
    """The 5-point template scaled to a ``size`` x ``size`` crop, ``float32 (5, 2)``."""
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    return ARCFACE_TEMPLATE_112 * np.float32(size / 112.0)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, shift; no reflection).

    Umeyama's closed form. Maps ``src`` points ``(N, 2)`` onto ``dst`` ``(N, 2)``, N >= 2.

    Returns:
        ``float64 (2, 3)`` matrix ``M`` with ``dst ~= src @ M[:, :2].T + M[:, 2]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"expected two (N, 2) point sets, N >= 2; got {src.shape}, {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("landmarks contain NaN or inf")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum() / len(src)
    if var_s < 1e-12:
        raise ValueError("degenerate landmarks: all points coincide")
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0  # forbid reflections
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine matrix to points ``(..., 2)``; returns ``float32``."""
    p = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    return (p @ m[:, :2].T + m[:, 2]).astype(np.float32)


def matrix_zoom(m: np.ndarray) -> float:
    """Crop pixels per frame pixel of a ``(2, 3)`` frame-to-crop matrix (its uniform scale):
    above 1 the crop enlarges the face."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(m)[:, :2]))))


def align_face(
    frame: np.ndarray, landmarks: np.ndarray, size: int = 224
) -> tuple[np.ndarray, np.ndarray]:
    """Warp a face onto the 5-point template.

    Args:
        frame: ``uint8`` HxWx3 RGB.
        landmarks: ``(5, 2)`` in frame pixels.
        size: output side in pixels.

    Returns:
        ``(crop, matrix)``: ``uint8 (size, size, 3)`` and the ``(2, 3)`` frame-to-crop matrix.
        Pixels outside the frame are black.
    """
    m = estimate_similarity(np.asarray(landmarks, np.float64).reshape(5, 2), face_template(size))
    return _warp(frame, m, size), m


def crop_box(
    frame: np.ndarray, box: np.ndarray, size: int = 224, margin: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """Square crop around a box, enlarged by ``margin`` (fraction of the box side) each way.

    For faces whose landmarks are unreliable. Returns ``(crop, matrix)`` like
    :func:`align_face`; the parts of the square outside the frame are black.
    """
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box).reshape(4))
    if not (np.isfinite([x1, y1, x2, y2]).all() and x2 > x1 and y2 > y1):
        raise ValueError(f"invalid box {box!r}")
    side = max(x2 - x1, y2 - y1) * (1.0 + 2.0 * margin)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    s = size / side
    m = np.array([[s, 0.0, size / 2.0 - s * cx], [0.0, s, size / 2.0 - s * cy]])
    return _warp(frame, m, size), m


def crop_footprint(m: np.ndarray, size: int) -> np.ndarray:
    """The four corners of a ``size`` x ``size`` crop in frame pixels, ``(4, 2)``, for a
    ``(2, 3)`` frame-to-crop matrix ``m``: where in the frame the crop is drawn from."""
    inv = cv2.invertAffineTransform(np.asarray(m, np.float64))
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
    return corners @ inv[:, :2].T + inv[:, 2]


def reduce_lanczos(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` (uint8 HxWx3) resized to ``size`` = (width, height) with Pillow's
    antialiased Lanczos filter (its kernel widens with the reduction), as image tools
    reduce a photo."""
    from PIL import Image

    return np.asarray(
        Image.fromarray(np.ascontiguousarray(image)).resize(size, Image.Resampling.LANCZOS)
    )


def _warp(frame: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """``warpAffine`` that renders a face larger than the crop as an image tool reduces a
    photo.

    Bilinear warping samples only 4 source pixels per output pixel, so a shrunk face would
    alias and look sharper or noisier than it is to a quality model. A face the crop
    reduces (zoom < 1) is instead reduced first, with an antialiased Lanczos filter
    (Pillow's, whose kernel widens with the reduction), to the crop's scale, and only then
    warped (rotation, sub-pixel shift) bilinearly at about 1:1. The crop of a face captured
    with more pixels than the crop holds is then the crop of that face captured at the
    crop's resolution by a good downscaler, never softer: a Gaussian pre-filter before the
    bilinear warp (this function before) blurred twice, and made the crop of a 1080p photo's
    face softer than the crop of the same photo's 720p file (model card, issue 4).
    """
    scale = matrix_zoom(m)
    if scale >= 1.0:
        return cv2.warpAffine(
            frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
    pre = crop_footprint(m, size)
    h, w = frame.shape[:2]
    pad = 2 + int(np.ceil(3.0 / max(scale, 1e-6)))  # Lanczos-3 support, in frame pixels
    x0 = int(np.clip(np.floor(pre[:, 0].min()) - pad, 0, w))
    y0 = int(np.clip(np.floor(pre[:, 1].min()) - pad, 0, h))
    x1 = int(np.clip(np.ceil(pre[:, 0].max()) + pad, 0, w))
    y1 = int(np.clip(np.ceil(pre[:, 1].max()) + pad, 0, h))
    if x1 - x0 < 2 or y1 - y0 < 2:  # the crop lies outside the frame
        return np.zeros((size, size, 3), np.uint8)
    roi = frame[y0:y1, x0:x1]
    nw, nh = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
    small = reduce_lanczos(roi, (nw, nh))
    rx, ry = nw / (x1 - x0), nh / (y1 - y0)
    # resize maps pixel centres: p_small = r * (p - o + 0.5) - 0.5
    #   =>  crop = A/r p_small + A (o + (1/r - 1) / 2) + t
    m2 = np.empty((2, 3))
    m2[:, 0] = m[:, 0] / rx
    m2[:, 1] = m[:, 1] / ry
    o = np.array([x0 + (1 / rx - 1) / 2, y0 + (1 / ry - 1) / 2], np.float64)
    m2[:, 2] = m[:, :2] @ o + m[:, 2]
    return cv2.warpAffine(
        small, m2, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def landmarks_plausible(box: np.ndarray, landmarks: np.ndarray) -> bool:
    """Whether MTCNN's 5 points look like a face inside ``box``.

    Rejects points far outside the box (> 25% of its side), eyes not above the mouth
    corners, and eyes closer than 15% of the box width (an extreme profile or a bad fit),
    where a similarity warp would produce a distorted crop; callers fall back to
    :func:`crop_box`.
    """
    b = np.asarray(box, np.float64).reshape(4)
    p = np.asarray(landmarks, np.float64).reshape(5, 2)
    if not (np.isfinite(b).all() and np.isfinite(p).all()):
        return False
    w, h = b[2] - b[0], b[3] - b[1]
    if w <= 0 or h <= 0:
        return False
    tol = 0.25 * max(w, h)
    inside = (
        (p[:, 0] >= b[0] - tol)
        & (p[:, 0] <= b[2] + tol)
        & (p[:, 1] >= b[1] - tol)
        & (p[:, 1] <= b[3] + tol)
    )
    eyes_y = max(p[0, 1], p[1, 1])
    mouth_y = min(p[3, 1], p[4, 1])
    eye_dist = float(np.hypot(*(p[1] - p[0])))
    return bool(inside.all() and eyes_y < mouth_y and eye_dist >= 0.15 * w)


def face_crop(img: np.ndarray, box, landmarks, size: int = 224) -> np.ndarray:
    """The aligned crop of a face, or its box crop where the landmarks are implausible."""
    box, lm = np.asarray(box, float), np.asarray(landmarks, float).reshape(5, 2)
    if landmarks_plausible(box, lm):
        return align_face(img, lm, size)[0]
    return crop_box(img, box, size)[0]
