"""Who a face is and whether it is a copy: the pure functions behind identity-aware dataset
cleaning. A person's faces (dlib descriptors, 128-d) get a robust centre, so a minority of
wrong photos cannot pull it; near-duplicate faces (the same photo resized, recompressed or
cropped a little, consecutive video frames) are found by a perceptual hash of the aligned crop
and by descriptor distance.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["context_phash", "duplicate_groups", "hamming64", "phash64", "robust_centre"]


def phash64(crop: np.ndarray) -> np.int64:
    """The 64-bit perceptual hash (pHash) of a ``uint8 HxWx3`` RGB crop: the signs of its
    8x8 lowest DCT frequencies (of a 32x32 grey version) against their median, as a signed
    integer (a parquet column has no unsigned 64-bit type everywhere). Resizing, JPEG and a
    small crop change few bits; a different photo changes about half."""
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY).astype(np.float32)
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].ravel()
    bits = low > np.median(low[1:])  # the DC term sets the brightness, not the pattern
    return np.packbits(bits).view(">u8")[0].astype(np.uint64).view(np.int64)


def context_phash(frame: np.ndarray, box, scale: float = 3.0) -> np.int64:
    """:func:`phash64` of the square around a face, ``scale`` times its box's longer side
    (cut at the frame's edges): the face with its hair, clothes and background, so two
    photos of one person at one angle differ where two copies of one photo do not. Measured on
    CelebA photos: copies (rescaled, cropped, recompressed) within 8 bits in 25 of 30, two
    different photos of one person mostly 14 or more."""
    x1, y1, x2, y2 = (float(v) for v in box)
    half = max(x2 - x1, y2 - y1) * scale / 2
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    h, w = frame.shape[:2]
    region = frame[
        max(0, int(round(cy - half))) : min(h, int(round(cy + half))),
        max(0, int(round(cx - half))) : min(w, int(round(cx + half))),
    ]
    return phash64(region if region.size else frame)


def hamming64(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bits that differ between 64-bit hashes (broadcasting)."""
    x = np.bitwise_xor(np.asarray(a, np.int64), np.asarray(b, np.int64)).view(np.uint64)
    return np.bitwise_count(x).astype(np.int64)


def robust_centre(desc: np.ndarray) -> tuple[np.ndarray, int]:
    """``(centre, medoid)`` of a person's descriptors ``(N, D)``. The medoid is the face with
    the smallest median distance to the others (a face among the majority while wrong photos
    are fewer than half); the centre is the mean of the half of the faces nearest the medoid
    (at least one), so it keeps the medoid's robustness and averages out one photo's
    lighting and pose. One face is its own centre."""
    desc = np.asarray(desc, np.float64)
    if len(desc) == 1:
        return desc[0].copy(), 0
    d = np.linalg.norm(desc[:, None] - desc[None], axis=2)
    np.fill_diagonal(d, np.nan)
    medoid = int(np.nanargmin(np.nanmedian(d, axis=1)))
    to_medoid = np.nan_to_num(d[medoid], nan=0.0)
    near = np.argsort(to_medoid, kind="stable")[: max(1, (len(desc) + 1) // 2)]
    return desc[near].mean(axis=0), medoid


def duplicate_groups(
    desc: np.ndarray, hashes: np.ndarray, max_distance: float, max_hamming: int
) -> np.ndarray:
    """Group labels (0..G-1, in order of first member) of faces that are near-duplicates:
    descriptor distance at most ``max_distance`` or hash distance at most ``max_hamming``,
    linked transitively. A face alone is its own group."""
    n = len(hashes)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if n > 1:
        desc = np.asarray(desc, np.float64)
        close = hamming64(np.asarray(hashes)[:, None], np.asarray(hashes)[None]) <= max_hamming
        finite = np.isfinite(desc).all(axis=1)
        if finite.any():
            dd = np.linalg.norm(desc[:, None] - desc[None], axis=2)
            close |= (dd <= max_distance) & finite[:, None] & finite[None]
        for i, j in zip(*np.nonzero(np.triu(close, 1))):
            parent[find(int(i))] = find(int(j))
    roots = [find(i) for i in range(n)]
    first: dict[int, int] = {}
    return np.array([first.setdefault(r, len(first)) for r in roots], np.int64)
