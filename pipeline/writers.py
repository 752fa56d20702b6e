"""Output writers. Every file is written to a temporary name and renamed into place, so a
reader never sees half a file and an interrupted run leaves no corrupt output. Files get the
permissions of any file the user creates (``0666`` less the umask), as ``open()`` gives."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

__all__ = ["check_writable_dir", "crop_file", "source_key", "write_parquet", "write_png"]


def _file_mode() -> int:
    """``0666`` less the process's umask, read without changing it where Linux shows it
    (setting the umask to read it is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _atomic_target(path: Path) -> tuple[int, str]:
    """A temporary file beside ``path`` (``mkstemp`` makes it ``0600``: widened to the
    user's file mode before it is renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(fd, _file_mode())
    return fd, tmp


def source_key(source: str) -> str:
    """A short stable key of a source path (its SHA-1, 16 hex digits)."""
    return hashlib.sha1(source.encode()).hexdigest()[:16]


def crop_file(source: str, frame_index: int, face_index: int) -> str:
    """A face crop's file name: the source's stem, a hash of its path and the frame and face
    numbers, so that no input name can steer it outside the output folder and two
    ``img.jpg`` in different folders do not collide."""
    stem = Path(source).stem[:40]
    return f"{stem}-{source_key(source)[:8]}_f{frame_index:06d}_{face_index:02d}.png"


def write_parquet(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write ``df`` to ``path`` atomically (write then rename)."""
    path = Path(path)
    fd, tmp = _atomic_target(path)
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except OSError as e:  # disk full, read-only, quota: name the file, leave nothing behind
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, f"{path}: cannot write ({e.strerror or e})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_png(image: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write a ``uint8`` HxWx3 RGB image as PNG, atomically."""
    path = Path(path)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    fd, tmp = _atomic_target(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.tobytes())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, f"{path}: cannot write ({e.strerror or e})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` if needed and prove it is writable, before any work starts."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", dir=p)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise OSError(f"{p}: output location is not writable ({e.strerror or e})") from None
    return p
