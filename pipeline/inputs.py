"""Input discovery: files, folders (recursive) and list files, checked before any work."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from face_iqa.images import IMAGE_EXTENSIONS

__all__ = ["LIST_EXTENSIONS", "InputError", "discover_images", "discover_sources"]

LIST_EXTENSIONS = frozenset({".txt", ".csv", ".lst"})


class InputError(ValueError):
    """A missing or unusable input path; the message names it."""


def _read_list(path: Path) -> list[Path]:
    """Paths from a text file (one per line) or a CSV with a ``path`` column (or first
    column); relative paths are taken relative to the list file's folder."""
    text = path.read_text()
    rows: list[str]
    if path.suffix.lower() == ".csv":
        reader = list(csv.reader(text.splitlines()))
        if not reader:
            return []
        header = [h.strip().lower() for h in reader[0]]
        col = header.index("path") if "path" in header else 0
        body = reader[1:] if "path" in header else reader
        rows = [r[col] for r in body if r and r[col].strip()]
    else:
        rows = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    out = []
    for r in rows:
        p = Path(r.strip()).expanduser()
        out.append(p if p.is_absolute() else path.parent / p)
    return out


def _walk(root: Path) -> list[Path]:
    """Files under ``root``, sorted, following symbolic links to folders but entering each
    real folder once (a link loop ends there instead of recursing forever)."""
    out: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        for name in filenames:
            f = Path(dirpath) / name
            if f.is_file():  # skips broken links
                out.append(f)
    return sorted(out)


def discover_sources(inputs: list[str | Path]) -> list[Path]:
    """Like :func:`discover_images`, but folders also contribute their videos."""
    from workers.decode import VIDEO_EXTENSIONS

    return discover_images(inputs, IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)


def discover_images(
    inputs: list[str | Path], extensions: frozenset[str] = IMAGE_EXTENSIONS
) -> list[Path]:
    """Expand inputs into image paths, in a stable order, without duplicates.

    A folder contributes every file with an image extension beneath it (sorted); a file
    given by name is taken whatever its extension (a bad one becomes an error row later);
    ``.txt``/``.csv``/``.lst`` files are lists of paths.

    Raises:
        InputError: an input (or a path in a list file) does not exist.
    """
    if not inputs:
        raise InputError("no input paths given")
    seen: set[Path] = set()
    out: list[Path] = []

    def add(p: Path) -> None:
        if p not in seen:
            seen.add(p)
            out.append(p)

    def expand(p: Path, listed_in: Path | None) -> None:
        if not p.exists():
            where = f" (listed in {listed_in})" if listed_in else ""
            raise InputError(f"input not found: {p}{where}")
        if p.is_dir():
            for f in _walk(p):
                if f.suffix.lower() in extensions:
                    add(f)
        elif p.suffix.lower() in LIST_EXTENSIONS and listed_in is None:
            for q in _read_list(p):
                expand(q, p)
        else:
            add(p)

    for raw in inputs:
        expand(Path(raw).expanduser(), None)
    return out
