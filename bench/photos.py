"""A folder of N photos for the dataset-cleaning benchmark, made from the shared images.

Each photo is a random crop (60-100 % of each side) of a random shared image, resized so
that its longer side is ``side`` pixels, saved as JPEG (quality 90). Seeded: the same N and
seed give the same files.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from face_iqa.images import load_image

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared/data/images"


def make_photos(
    n: int, out: Path, seed: int = 0, side: int = 480, images: Path = DEFAULT_IMAGES
) -> list[Path]:
    """Write ``n`` photos under ``out`` (``photo_00000.jpg``, ...); returns their paths."""
    srcs = sorted(
        p for p in Path(images).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    )
    if not srcs:
        raise FileNotFoundError(f"{images}: no images to make photos from")
    pics = [load_image(p) for p in srcs]
    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = pics[int(rng.integers(len(pics)))]
        h, w = img.shape[:2]
        ch, cw = (int(round(d * rng.uniform(0.6, 1.0))) for d in (h, w))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = img[y : y + ch, x : x + cw]
        scale = side / max(ch, cw)
        size = (max(1, int(round(cw * scale))), max(1, int(round(ch * scale))))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        crop = cv2.resize(crop, size, interpolation=interp)
        p = out / f"photo_{i:05d}.jpg"
        cv2.imwrite(str(p), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(p)
    return paths
