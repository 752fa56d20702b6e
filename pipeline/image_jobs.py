"""``faceiqa detect`` and ``faceiqa score`` on still images (no Ray needed)."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from face_iqa.images import ImageError, load_image
from face_iqa.schema import STATUS_ERROR, STATUS_OK
from pipeline.config import Config
from pipeline.inputs import discover_images
from pipeline.writers import check_writable_dir, write_parquet, write_png
from workers.detect import DetectStage
from workers.score import ScoreStage

__all__ = ["FACE_TABLE_COLUMNS", "detect_images", "faces_table", "score_images"]

FACE_TABLE_COLUMNS = [
    "source",
    "frame_index",
    "face_index",
    "frame_height",
    "frame_width",
    "box",
    "landmarks",
    "det_prob",
    "face_size",
    "align",
    "status",
    "error",
]


def _frame_batches(paths: list[Path], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Frame batches for DetectStage; a file that fails to decode is an error row."""
    for s in range(0, len(paths), batch_size):
        chunk = paths[s : s + batch_size]
        frames = np.empty(len(chunk), dtype=object)
        status, error = [], []
        for j, p in enumerate(chunk):
            try:
                frames[j] = load_image(p)
                status.append(STATUS_OK)
                error.append("")
            except ImageError as e:
                frames[j] = None
                status.append(STATUS_ERROR)
                error.append(str(e))
        yield {
            "source": np.array([str(p) for p in chunk]),
            "frame_index": np.zeros(len(chunk), np.int64),
            "frame": frames,
            "status": np.array(status),
            "error": np.array(error),
        }


def faces_table(batch: dict[str, np.ndarray]) -> pd.DataFrame:
    """A face batch (without pixels) as a DataFrame: ``box`` and ``landmarks`` become lists
    (null for faceless or failed rows); ``quality`` is kept when present."""
    ok = batch["face_index"] >= 0
    cols: dict[str, object] = {}
    extra = [c for c in ("quality",) if c in batch]
    for c in FACE_TABLE_COLUMNS + extra:
        v = batch[c]
        if c == "box":
            cols[c] = [b.tolist() if k else None for b, k in zip(v, ok)]
        elif c == "landmarks":
            cols[c] = [lm.tolist() if k else None for lm, k in zip(v, ok)]
        else:
            cols[c] = list(v)
    return pd.DataFrame(cols)


def crop_name(source: str, frame_index: int, face_index: int) -> str:
    """A file name unique per (source, frame, face): the source's stem plus a short hash of
    its full path, so two ``img.jpg`` in different folders do not collide."""
    digest = hashlib.sha1(str(source).encode()).hexdigest()[:8]
    return f"{Path(source).stem}-{digest}_f{frame_index:06d}_{face_index:02d}.png"


def _run(
    inputs: list[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    crops: str | os.PathLike[str] | None,
    cfg: Config,
    progress: bool,
    make_stages: Callable[[], list[Callable[[dict], dict]]],
    batches: Callable[[list[Path], int], Iterator[dict[str, np.ndarray]]] | None = None,
) -> pd.DataFrame:
    paths = discover_images(list(inputs))
    out = Path(out)
    check_writable_dir(out.parent)
    crops_dir = check_writable_dir(crops) if crops is not None else None
    stages = make_stages()
    tables = []
    bar = tqdm(total=len(paths), unit="img", disable=not progress, file=sys.stderr)
    for batch in (batches or _frame_batches)(paths, cfg.detect.detector.batch_size):
        res = batch
        for stage in stages:
            res = stage(res)
        tables.append(faces_table(res))
        if crops_dir is not None:
            for k in np.flatnonzero(res["status"] == STATUS_OK):
                name = crop_name(res["source"][k], res["frame_index"][k], res["face_index"][k])
                write_png(res["crop"][k], crops_dir / name)
        bar.update(len(batch["source"]))
    bar.close()
    cols = FACE_TABLE_COLUMNS + (["quality"] if tables and "quality" in tables[0] else [])
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=cols)
    write_parquet(table, out)
    return table


def detect_images(
    inputs: list[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    crops: str | os.PathLike[str] | None = None,
    cfg: Config | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Detect and align faces in images; write one Parquet row per face.

    Also one row per image with no face (``status="no_face"``) or that failed
    (``status="error"``, with the message). Returns the table that was written.

    Raises:
        pipeline.inputs.InputError: an input path does not exist (before any work).
        OSError: ``out`` or ``crops`` is not writable (before any work).
    """
    cfg = cfg or Config()
    return _run(inputs, out, crops, cfg, progress, lambda: [DetectStage(cfg.detect)])


def _aligned_batches(
    size: int,
) -> Callable[[list[Path], int], Iterator[dict[str, np.ndarray]]]:
    """Batches of already-aligned face images as face rows (resized to ``size``)."""

    def gen(paths: list[Path], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        for s in range(0, len(paths), batch_size):
            chunk = paths[s : s + batch_size]
            crops = np.zeros((len(chunk), size, size, 3), np.uint8)
            status, error, hw = [], [], []
            for j, p in enumerate(chunk):
                try:
                    img = load_image(p)
                    hw.append(img.shape[:2])
                    crops[j] = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
                    status.append(STATUS_OK)
                    error.append("")
                except ImageError as e:
                    hw.append((0, 0))
                    status.append(STATUS_ERROR)
                    error.append(str(e))
            n = len(chunk)
            ok = np.array(status) == STATUS_OK
            yield {
                "source": np.array([str(p) for p in chunk]),
                "frame_index": np.zeros(n, np.int64),
                "face_index": np.where(ok, 0, -1).astype(np.int64),
                "frame_height": np.array([h for h, _ in hw], np.int64),
                "frame_width": np.array([w for _, w in hw], np.int64),
                "box": np.full((n, 4), np.nan, np.float32),
                "landmarks": np.full((n, 5, 2), np.nan, np.float32),
                "det_prob": np.full(n, np.nan, np.float32),
                "face_size": np.where(ok, size, np.nan).astype(np.float32),
                "align": np.full(n, "given"),
                "crop": crops,
                "status": np.array(status),
                "error": np.array(error),
            }

    return gen


def score_images(
    inputs: list[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    cfg: Config | None = None,
    aligned: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Score the faces in images: detect and align them first, or, with ``aligned=True``,
    take each image as one aligned face. Writes the face table with a ``quality`` column."""
    cfg = cfg or Config()

    def stages() -> list[Callable[[dict], dict]]:
        score = ScoreStage(cfg.score)
        return [score] if aligned else [DetectStage(cfg.detect), score]

    batches = _aligned_batches(cfg.detect.crop_size) if aligned else None
    return _run(inputs, out, None, cfg, progress, stages, batches)
