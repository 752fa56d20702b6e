"""Image decoding to the one frame format the library uses: ``uint8`` HxWx3 RGB.

Grayscale, RGBA/LA, palette, CMYK, 16-bit and float images are converted here, once, so that
no other function has to sniff modes. Decoding problems raise :class:`ImageError` with the
file name and the reason; callers turn that into an error row.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageError",
    "image_files",
    "load_image",
    "to_rgb_uint8",
]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
)

# Images larger than this are refused from their header, before any pixel is decoded
# (a decompression bomb, or a header that lies). load_image's max_pixels overrides it;
# PIL's own guard is left to ours.
DEFAULT_MAX_PIXELS = 200_000_000
Image.MAX_IMAGE_PIXELS = None


class ImageError(ValueError):
    """An image file that cannot be decoded; the message names the file and the problem."""


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Convert an image array to ``uint8`` HxWx3 RGB.

    Accepts HxW (gray), HxWx1, HxWx2 (gray+alpha), HxWx3 (RGB), HxWx4 (RGBA) in uint8,
    uint16 (scaled by 1/257), or float (assumed in [0, 1]). Alpha is dropped.
    """
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected an HxW, HxWx1..4 image, got shape {a.shape}")
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16:
        a = (a.astype(np.uint32) * 255 + 32767) // 65535
    elif a.dtype in (np.int32, np.int64, np.uint32):
        # PIL's "I" mode: 16-bit data stored in 32-bit ints.
        hi = 65535 if a.max(initial=0) > 255 else 255
        a = np.clip(a, 0, hi).astype(np.int64) * 255 // hi
    elif np.issubdtype(a.dtype, np.floating):
        a = np.clip(np.nan_to_num(a), 0.0, 1.0) * 255.0 + 0.5
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    else:
        raise ValueError(f"unsupported image dtype {a.dtype}")
    a = a.astype(np.uint8, copy=False)
    c = a.shape[2]
    if c in (1, 2):
        a = np.repeat(a[:, :, :1], 3, axis=2)
    elif c == 4:
        a = a[:, :, :3]
    return np.ascontiguousarray(a)


def _pil_to_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("RGB", "L", "I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img)
        if mode == "F":
            hi = float(arr.max(initial=0.0))
            arr = arr / (255.0 if hi > 1.0 and hi <= 255.0 else max(hi, 1.0))
        return to_rgb_uint8(arr)
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    # RGBA, LA, P, CMYK, YCbCr, LAB, 1, ...: PIL knows how to reach RGB.
    return to_rgb_uint8(np.asarray(img.convert("RGB")))


def load_image(path: str | os.PathLike[str], max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as ``uint8`` HxWx3 RGB, applying its EXIF orientation.

    ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`): larger images are refused from the
    size in their header, without decoding them.

    Raises:
        ImageError: the file is missing, empty, truncated, too large or not an image; the
            message starts with the path.
    """
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise ImageError(f"{p}: cannot read file ({e.strerror or e})") from None
    if size == 0:
        raise ImageError(f"{p}: empty file (0 bytes)")
    try:
        with Image.open(p) as img:
            w, h = img.size
            if w * h > limit:
                raise ImageError(
                    f"{p}: {w}x{h} image ({w * h:,} pixels) exceeds the limit of "
                    f"{limit:,} pixels (decode.max_pixels); refused without decoding"
                )
            img.load()  # forces a full decode: truncated files fail here, not later
            img = ImageOps.exif_transpose(img)
            return _pil_to_array(img)
    except UnidentifiedImageError:
        raise ImageError(f"{p}: not a recognised image format") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{p}: image too large ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        msg = str(e)
        if "truncated" in msg.lower():
            msg = f"truncated or corrupt image data ({msg})"
        raise ImageError(f"{p}: {msg}") from None


def image_files(items: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The image files of ``items``: files as given, folders searched recursively for
    :data:`IMAGE_EXTENSIONS` (sorted); a ``FileNotFoundError`` names a missing item."""
    out: list[Path] = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: not found")
    return out
