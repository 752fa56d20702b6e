"""Synthetic face degradations with albumentations, at recorded severities.

A degradation is plain data (``list[dict]``: one ``{"kind", "severity"}`` per component, plus
a ``seed`` and an optional ``scale``), so a Parquet row can store it and
:func:`apply_degradation` can rebuild the exact same image from it. Severity runs from 0
(nothing) to 1 (the strongest we generate); the opt-in kinds of
:data:`EXTRA_DEGRADATIONS` extend a default kind's range instead (``jpeg_strong`` starts at
quality 20 where ``jpeg`` starts at 95).

``scale`` is the resolution the degradation happens at, relative to the crop: a camera blurs,
adds grain and compresses the frame, where a face may be larger or smaller than the aligned
crop. At scale 2 the crop is resized to twice its side, degraded there, and resized back, so
JPEG blocks, noise grain and blur kernels come out half as large in the crop (what happens to
a 450-pixel face in a photo); below 1 they come out coarser (a small face in a video frame).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

__all__ = [
    "DEGRADATIONS",
    "EXTRA_DEGRADATIONS",
    "KNOWN_DEGRADATIONS",
    "apply_degradation",
    "damage_kinds",
    "describe",
    "sample_degradation",
]

DEGRADATIONS = (
    "gaussian_blur",
    "motion_blur",
    "defocus",
    "gaussian_noise",
    "iso_noise",
    "jpeg",
    "downscale",
    "underexpose",
    "dim",
    "overexpose",
    "gamma",
    "low_contrast",
    "occlusion",
)

# Kinds a recipe may add to the draw (``SyntheticConfig.extra_degradations``); not drawn by
# default, so the sets of recipes without them stay as they were.
EXTRA_DEGRADATIONS = (
    # JPEG from quality 20 down to 2: the 8-16 px blocks and flat colour of a heavily
    # compressed photo or stream; ``jpeg`` reaches quality 5 only at its rarely drawn top
    # severity
    "jpeg_strong",
    # a scene with too little light as a camera records it (a stage, a bar, a street at
    # night): the frame darker, the gain's noise in every channel, the camera's noise
    # reduction smoothing it, the stream's compression on top
    "low_light",
)

# Every kind a spec may name (what :func:`apply_degradation` and kind lists are checked against)
KNOWN_DEGRADATIONS = DEGRADATIONS + EXTRA_DEGRADATIONS


def _odd(v: float) -> int:
    k = max(3, int(round(v)))
    return k if k % 2 else k + 1


def _transform(kind: str, s: float) -> A.BasicTransform:
    """The albumentations transform of one degradation at severity ``s`` in (0, 1]."""
    if kind == "gaussian_blur":
        sigma = 0.5 + 5.5 * s
        return A.GaussianBlur(blur_limit=0, sigma_limit=(sigma, sigma), p=1.0)
    if kind == "motion_blur":
        k = _odd(3 + 22 * s)
        return A.MotionBlur(blur_limit=(k, k), allow_shifted=False, p=1.0)
    if kind == "defocus":
        r = max(1, int(round(1 + 8 * s)))
        return A.Defocus(radius=(r, r), alias_blur=(0.1, 0.1), p=1.0)
    if kind == "gaussian_noise":
        std = 0.02 + 0.33 * s
        return A.GaussNoise(std_range=(std, std), p=1.0)
    if kind == "iso_noise":
        i = 0.1 + 1.1 * s
        return A.ISONoise(color_shift=(0.02, 0.06), intensity=(i, i), p=1.0)
    if kind == "jpeg":
        q = int(round(95 - 90 * s))
        return A.ImageCompression(quality_range=(q, q), p=1.0)
    if kind == "jpeg_strong":
        q = int(round(20 - 18 * s))
        return A.ImageCompression(quality_range=(q, q), p=1.0)
    if kind == "low_light":
        return A.Compose(
            [
                A.MultiplicativeNoise(
                    multiplier=(1.0 - 0.75 * s, 1.0 - 0.75 * s),
                    per_channel=False,
                    elementwise=False,
                    p=1.0,
                ),
                A.GaussNoise(std_range=(0.01 + 0.07 * s, 0.01 + 0.07 * s), p=1.0),
                A.GaussianBlur(blur_limit=0, sigma_limit=(0.3 + 0.6 * s, 0.3 + 0.6 * s), p=1.0),
                A.ImageCompression(
                    quality_range=(int(round(90 - 45 * s)), int(round(90 - 45 * s))), p=1.0
                ),
            ]
        )
    if kind == "downscale":
        f = 0.9 - 0.82 * s
        return A.Downscale(
            scale_range=(f, f),
            interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR},
            p=1.0,
        )
    if kind == "underexpose":
        g = 1.0 + 2.5 * s  # gamma > 1 darkens, then a brightness drop
        b = -0.55 * s
        return A.Compose(
            [
                A.RandomGamma(gamma_limit=(100 * g, 100 * g), p=1.0),
                A.RandomBrightnessContrast(brightness_limit=(b, b), contrast_limit=(0, 0), p=1.0),
            ]
        )
    if kind == "dim":
        # too little light, as a camera records it: a plain gain (no clipping)
        g = 1.0 - 0.85 * s
        return A.MultiplicativeNoise(multiplier=(g, g), per_channel=False, elementwise=False, p=1.0)
    if kind == "overexpose":
        b = 0.15 + 0.6 * s
        return A.RandomBrightnessContrast(brightness_limit=(b, b), contrast_limit=(0, 0), p=1.0)
    if kind == "gamma":
        g = 1.0 / (1.0 + 2.5 * s)  # gamma < 1 washes out the shadows
        return A.RandomGamma(gamma_limit=(100 * g, 100 * g), p=1.0)
    if kind == "low_contrast":
        c = 0.7 - 0.6 * s  # blend towards the mean grey: 1 keeps, 0 flattens
        return A.ColorJitter(
            brightness=(1, 1), contrast=(c, c), saturation=(1, 1), hue=(0, 0), p=1.0
        )
    if kind == "occlusion":
        side = 0.2 + 0.45 * s  # fraction of the crop side, one patch
        return A.CoarseDropout(
            num_holes_range=(1, 1),
            hole_height_range=(side, side),
            hole_width_range=(side, side),
            fill=0,
            p=1.0,
        )
    known = ", ".join(KNOWN_DEGRADATIONS)
    raise ValueError(f"unknown degradation {kind!r} (known: {known})")


def _resize(image: np.ndarray, w: int, h: int) -> np.ndarray:
    smaller = w * h < image.shape[0] * image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if smaller else cv2.INTER_CUBIC)


def apply_degradation(image: np.ndarray, spec: dict) -> np.ndarray:
    """Apply ``spec`` (from :func:`sample_degradation`) to a ``uint8`` HxWx3 image.

    The same spec gives the same pixels: random parts (noise, patch position, motion
    direction) come from ``spec["seed"]``. ``spec.get("scale", 1)`` is the resolution the
    degradation is applied at (see the module docstring).
    """
    comps = spec["components"]
    if not comps:
        return image.copy()
    pipeline = A.Compose(
        [_transform(c["kind"], float(c["severity"])) for c in comps], seed=int(spec["seed"])
    )
    scale = float(spec.get("scale", 1.0))
    if not 0.1 <= scale <= 10.0:
        raise ValueError(f"degradation scale {scale} outside [0.1, 10]")
    if abs(scale - 1.0) < 1e-6:
        return pipeline(image=image)["image"]
    h, w = image.shape[:2]
    big = _resize(image, max(8, int(round(w * scale))), max(8, int(round(h * scale))))
    return _resize(pipeline(image=big)["image"], w, h)


def damage_kinds(extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The kinds a set's damage is drawn from: :data:`DEGRADATIONS` and the named ``extra``
    ones of :data:`EXTRA_DEGRADATIONS`; a ``ValueError`` names an unknown one."""
    unknown = set(extra) - set(EXTRA_DEGRADATIONS)
    if unknown:
        raise ValueError(
            f"extra_degradations: unknown {sorted(unknown)} (known: {list(EXTRA_DEGRADATIONS)})"
        )
    return DEGRADATIONS + tuple(k for k in EXTRA_DEGRADATIONS if k in extra)


def sample_degradation(
    rng: np.random.Generator,
    p_clean: float = 0.1,
    max_components: int = 3,
    p_scaled: float = 0.0,
    scale_range: tuple[float, float] = (1.0, 1.0),
    kinds: Sequence[str] = DEGRADATIONS,
) -> dict:
    """Draw a degradation: clean with probability ``p_clean``; else 1 component (60%),
    2 (25%) or 3 (15%) distinct kinds. Severities are ``0.05 + 0.95 * u**1.6`` (u uniform),
    so mild degradations, where a filter's decisions are made, are sampled more densely;
    combined ones are scaled by 0.8 so combinations span the scale rather than pile up.
    With probability ``p_scaled`` the degradation happens at a ``scale`` drawn log-uniformly
    from ``scale_range`` (else at the crop's own resolution; the key is then absent, so
    specs drawn with ``p_scaled=0`` are those of earlier versions). ``kinds`` are the
    degradations drawn from (default :data:`DEGRADATIONS`; :data:`EXTRA_DEGRADATIONS` may be
    added)."""
    unknown = set(kinds) - set(KNOWN_DEGRADATIONS)
    if unknown or len(set(kinds)) < max_components:
        raise ValueError(f"kinds: unknown {sorted(unknown)} or fewer than {max_components}")
    seed = int(rng.integers(0, 2**31 - 1))
    if rng.random() < p_clean:
        return {"components": [], "seed": seed}
    n = int(
        rng.choice(
            [1, 2, 3][:max_components],
            p=[0.6, 0.25, 0.15][:max_components] / np.sum([0.6, 0.25, 0.15][:max_components]),
        )
    )
    picked = rng.choice(len(kinds), size=n, replace=False)
    scale = 1.0 if n == 1 else 0.8
    comps = [
        {"kind": kinds[k], "severity": float(scale * (0.05 + 0.95 * rng.random() ** 1.6))}
        for k in picked
    ]
    spec = {"components": comps, "seed": seed}
    if p_scaled > 0 and rng.random() < p_scaled:
        lo, hi = (float(v) for v in scale_range)
        if not 0.1 <= lo <= hi <= 10.0:
            raise ValueError(f"scale_range {scale_range}: need 0.1 <= low <= high <= 10")
        spec["scale"] = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    return spec


def describe(spec: dict) -> str:
    """``"gaussian_blur@0.42+jpeg@0.80"`` (``"...@0.80 x1.6"`` at scale 1.6) or ``"clean"``."""
    text = "+".join(f"{c['kind']}@{c['severity']:.2f}" for c in spec["components"])
    if text and abs(float(spec.get("scale", 1.0)) - 1.0) > 1e-6:
        text += f" x{float(spec['scale']):.2f}"
    return text or "clean"
