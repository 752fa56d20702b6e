"""A self-made demo clip: scikit-image's astronaut portrait (public domain, shipped inside the
scikit-image wheel) moving across the frame and passing through blur, noise, under-exposure
and occlusion, with the degradation and its severity recorded for every frame.

Needs nothing but the installed packages, so ``make demo`` runs on a fresh clone.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["SAMPLE_SEGMENTS", "SampleFrame", "make_sample_frames"]

# One segment per degradation, clean segments between them; severity ramps within a segment.
SAMPLE_SEGMENTS = ("clean", "blur", "clean", "noise", "clean", "dark", "clean", "occlusion")

# The astronaut's face box in the 512x512 original (MTCNN's box, rounded).
_FACE_BOX = np.array([181, 62, 268, 172], np.float64)


@dataclass(frozen=True)
class SampleFrame:
    """One frame of the sample clip: ``image`` uint8 HxWx3 RGB, its degradation name and
    severity in [0, 1] (0 for clean frames)."""

    index: int
    image: np.ndarray
    degradation: str
    severity: float


def _portrait() -> np.ndarray:
    from skimage import data  # the bundled portrait; imported lazily, only the demo needs it

    return data.astronaut()


def make_sample_frames(
    frames_per_segment: int = 6, size: tuple[int, int] = (480, 360), seed: int = 0
) -> list[SampleFrame]:
    """Build the clip. ``size`` is (width, height). Deterministic for a given ``seed``."""
    w, h = size
    src = _portrait()
    scale = h / src.shape[0] * 0.95
    side = round(src.shape[0] * scale)
    portrait = cv2.resize(src, (side, side), interpolation=cv2.INTER_AREA)
    background = cv2.GaussianBlur(cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA), (0, 0), 12)
    rng = np.random.default_rng(seed)
    n = frames_per_segment * len(SAMPLE_SEGMENTS)
    frames = []
    for t in range(n):
        seg = SAMPLE_SEGMENTS[t // frames_per_segment]
        sev = 0.0 if seg == "clean" else (t % frames_per_segment + 1) / frames_per_segment
        # the portrait drifts left to right and a little up and down
        x0 = round((w - side) * t / max(n - 1, 1))
        y0 = round((h - side) / 2 + 4 * np.sin(t / 5.0))
        img = background.copy()
        ys, xs = slice(max(y0, 0), min(y0 + side, h)), slice(max(x0, 0), min(x0 + side, w))
        img[ys, xs] = portrait[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        face = _FACE_BOX * scale + np.array([x0, y0, x0, y0])
        frames.append(SampleFrame(t, _degrade(img, seg, sev, face, rng), seg, sev))
    return frames


def _degrade(
    img: np.ndarray, kind: str, sev: float, face: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    if kind == "clean" or sev <= 0:
        return img
    if kind == "blur":
        return cv2.GaussianBlur(img, (0, 0), 1.0 + 7.0 * sev)
    if kind == "noise":
        noisy = img.astype(np.float32) + rng.normal(0.0, 15.0 + 60.0 * sev, img.shape)
        return np.clip(noisy, 0, 255).astype(np.uint8)
    if kind == "dark":
        gain = 1.0 - 0.9 * sev
        dark = 255.0 * (img.astype(np.float32) / 255.0) ** (1.0 + 1.5 * sev) * gain
        return np.clip(dark, 0, 255).astype(np.uint8)
    if kind == "occlusion":
        out = img.copy()
        x1, y1, x2, y2 = face
        # a grey patch sliding down over the eyes, growing with severity
        top = y1 + 0.15 * (y2 - y1)
        bottom = top + (0.2 + 0.6 * sev) * (y2 - y1)
        out[int(top) : int(bottom), int(x1 - 5) : int(x2 + 5)] = 128
        return out
    raise ValueError(f"unknown degradation {kind!r}")
