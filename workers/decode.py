"""Sources and decoding: turn input paths into decode tasks, and tasks into frame batches.

A task is one image, a few images, or one chunk of a video's frames, so a long video streams
through the pipeline chunk by chunk instead of being loaded whole. Every frame a task
should produce appears in its output exactly once: decoded, or as an error row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from face_iqa.images import DEFAULT_MAX_PIXELS, ImageError, load_image
from face_iqa.schema import STATUS_ERROR, STATUS_OK

__all__ = [
    "VIDEO_EXTENSIONS",
    "DecodeConfig",
    "DecodeStage",
    "frame_batch",
    "is_video",
    "iter_frame_batches",
    "iter_task_rows",
    "make_tasks",
    "probe_video",
]

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
)


_NO_FRAME = np.zeros((0, 0, 3), np.uint8)


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class DecodeConfig:
    """Attributes:
    stride: take every N-th frame of a video (ignored when ``fps`` is set).
    fps: target frames per second (sampling the nearest frames); ``null`` uses ``stride``.
    chunk_frames: sampled frames per video task.
    images_per_task: images per image task.
    max_pixels: images (and video frames) larger than this are error rows, refused from
        their header before decoding.
    """

    stride: int = 1
    fps: float | None = None
    chunk_frames: int = 32
    images_per_task: int = 8
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.stride < 1 or self.chunk_frames < 1 or self.images_per_task < 1:
            raise ValueError("decode.stride, chunk_frames and images_per_task must be >= 1")
        if self.max_pixels < 1:
            raise ValueError(f"decode.max_pixels must be >= 1, got {self.max_pixels}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"decode.fps must be > 0 or null, got {self.fps}")


def probe_video(path: str | Path) -> tuple[int, float]:
    """``(frame count, fps)`` from the container; ``(0, 0.0)`` when it cannot be opened."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return 0, 0.0
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        return max(n, 0), fps if math.isfinite(fps) else 0.0
    finally:
        cap.release()


def _video_step(cfg: DecodeConfig, fps: float) -> float:
    if cfg.fps is not None and fps > 0:
        return max(1.0, fps / cfg.fps)
    return float(cfg.stride)


def make_tasks(
    sources: list[Path], cfg: DecodeConfig, min_tasks: int = 1, min_chunk: int = 1
) -> list[dict[str, Any]]:
    """Decode tasks for the sources, in order. A video whose container reports no frames
    gets one open-ended task (it is decoded to its end; errors become rows).

    ``min_tasks``: when the videos' sampled frames would make fewer video tasks than this at
    ``cfg.chunk_frames`` a chunk, chunks shrink (to no fewer than ``min_chunk`` frames) so
    that a pool of workers shares a short clip instead of one worker taking all of it.
    """
    tasks: list[dict[str, Any]] = []
    images: list[str] = []
    probes = {p: probe_video(p) for p in sources if is_video(p)}
    chunk = cfg.chunk_frames
    sampled = sum(n / _video_step(cfg, fps) for n, fps in probes.values() if n > 0)
    if sampled and math.ceil(sampled / chunk) < min_tasks:
        chunk = max(1, min(chunk, max(min_chunk, math.ceil(sampled / min_tasks))))

    def flush() -> None:
        if images:
            tasks.append(
                {
                    "kind": "images",
                    "source": list(images),
                    "start": 0,
                    "stop": -1,
                    "step": 1.0,
                    "fps": 0.0,
                    "last": True,
                    "max_pixels": cfg.max_pixels,
                }
            )
            images.clear()

    for p in sources:
        if not is_video(p):
            images.append(str(p))
            if len(images) >= cfg.images_per_task:
                flush()
            continue
        n, fps = probes[p]
        step = _video_step(cfg, fps)
        span = max(1, int(round(chunk * step)))
        if n <= 0:
            tasks.append(
                {
                    "kind": "video",
                    "source": [str(p)],
                    "start": 0,
                    "stop": -1,
                    "step": step,
                    "fps": fps,
                    "last": True,
                    "max_pixels": cfg.max_pixels,
                }
            )
            continue
        starts = list(range(0, n, span))
        for j, s in enumerate(starts):
            last = j == len(starts) - 1
            # the last chunk runs to the real end, in case the container undercounts
            tasks.append(
                {
                    "kind": "video",
                    "source": [str(p)],
                    "start": s,
                    "stop": -1 if last else s + span,
                    "step": step,
                    "fps": fps,
                    "last": last,
                    "max_pixels": cfg.max_pixels,
                    "count": n,
                }
            )
    flush()
    return tasks


def _sampled(i: int, step: float) -> bool:
    """Frame ``i`` is sampled when it is the first frame at or after a multiple of ``step``
    (frames ``ceil(k * step)`` for k = 0, 1, 2, ...)."""
    if step == 1.0:
        return True
    k = math.floor(i / step + 1e-9)
    return int(math.ceil(k * step - 1e-9)) == i


def _error_row(src: str, msg: str, frame_index: int = -1, ts: float = np.nan) -> dict[str, Any]:
    """A frame row that failed; frame_index -1 stands for "the whole source"."""
    return {
        "source": src,
        "frame_index": frame_index,
        "timestamp_s": ts,
        "frame": None,
        "status": STATUS_ERROR,
        "error": msg,
    }


def _iter_video(task: dict[str, Any]) -> Iterator[dict[str, Any]]:
    src = task["source"][0]
    start, stop, step, fps = task["start"], task["stop"], task["step"], task["fps"]
    cap = cv2.VideoCapture(src)
    if not cap.isOpened():
        if start == 0:
            yield _error_row(src, f"{src}: cannot open video (corrupt, truncated or unsupported)")
        return
    try:
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        limit = int(task.get("max_pixels") or DEFAULT_MAX_PIXELS)
        if w * h > limit:
            if start == 0:
                yield (
                    _error_row(
                        src,
                        f"{src}: {w}x{h} video frames exceed the limit of {limit:,} pixels "
                        "(decode.max_pixels)",
                    )
                )
            return
        reached = start
        if start > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, start)
            pos = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
            if pos != start:  # inexact seek: walk from the start instead
                cap.release()
                cap = cv2.VideoCapture(src)
                reached = 0
                while reached < start and cap.grab():
                    reached += 1
        i = start if reached == start else -1
        while i >= 0 and (stop < 0 or i < stop):
            ok = cap.grab()
            if not ok:
                break
            if _sampled(i, step):
                ok, bgr = cap.retrieve()
                ts = i / fps if fps > 0 else np.nan
                if ok and bgr is not None:
                    yield (
                        {
                            "source": src,
                            "frame_index": i,
                            "timestamp_s": ts,
                            "frame": cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
                            "status": STATUS_OK,
                            "error": "",
                        }
                    )
                else:
                    yield _error_row(src, f"{src}: frame {i} could not be decoded", i, ts)
            i += 1
        if start == 0 and i == 0:
            yield _error_row(src, f"{src}: video has no decodable frames")
        elif task.get("last") and 0 < (end := i if i >= 0 else reached) < int(task.get("count", 0)):
            # frames the container lists but the decoder never returned (a truncated file,
            # or packets lost to corruption): say so in the manifest rather than drop them
            yield (
                _error_row(
                    src,
                    f"{src}: the stream ends after {end} frames but the container lists "
                    f"{int(task['count'])} (truncated or corrupt data)",
                )
            )
    finally:
        cap.release()


def _iter_images(task: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for src in task["source"]:
        try:
            frame, status, error = load_image(src, task.get("max_pixels")), STATUS_OK, ""
        except ImageError as e:
            frame, status, error = None, STATUS_ERROR, str(e)
        yield {
            "source": src,
            "frame_index": 0,
            "timestamp_s": np.nan,
            "frame": frame,
            "status": status,
            "error": error,
        }


def iter_task_rows(task: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The frame rows of one task (a dict of one task row's fields, ``source`` a list), one
    at a time, so that a worker holds a few frames of a long chunk rather than all of them.
    A decoder crash ends the task with one error row per source it had not finished."""
    done: set[str] = set()
    try:
        it = _iter_video(task) if task["kind"] == "video" else _iter_images(task)
        for row in it:
            if task["kind"] != "video":
                done.add(row["source"])
            yield row
    except Exception as e:  # noqa: BLE001 - a decoder crash is one error row
        for s in task["source"]:
            if s not in done:
                yield _error_row(s, f"{s}: decoding failed ({e!r})")


def frame_batch(rows: list[dict[str, Any]], seconds: float = 0.0) -> dict[str, np.ndarray]:
    """Frame rows as a batch for ``DetectStage`` (see :class:`DecodeStage`); ``seconds``,
    the time spent decoding them, is shared out as ``decode_s``."""
    shapes = {None if r["frame"] is None else r["frame"].shape for r in rows}
    if len(shapes) == 1 and None not in shapes:
        # frames of one size (a video chunk): one (N, H, W, 3) array, which Ray Data
        # stores as a tensor column without per-frame conversion
        frames = np.stack([r["frame"] for r in rows])
    else:
        frames = np.empty(len(rows), dtype=object)
        for j, r in enumerate(rows):
            # an empty image stands in for a missing frame: a column of uint8 arrays
            # only travels through Ray as a (ragged) tensor column
            frames[j] = r["frame"] if r["frame"] is not None else _NO_FRAME
    return {
        "source": np.array([r["source"] for r in rows], dtype=object).astype(str),
        "frame_index": np.array([r["frame_index"] for r in rows], np.int64),
        "timestamp_s": np.array([r["timestamp_s"] for r in rows], np.float64),
        "frame": frames,
        "status": np.array([r["status"] for r in rows], dtype=object).astype(str),
        "error": np.array([r["error"] for r in rows], dtype=object).astype(str),
        "decode_s": np.full(len(rows), seconds / max(len(rows), 1)),
    }


def iter_frame_batches(task: dict[str, Any], size: int) -> Iterator[dict[str, np.ndarray]]:
    """One task's frames as batches of at most ``size`` frames, decoded as they are asked
    for (at least one batch, possibly empty)."""
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    sent = False
    for row in iter_task_rows(task):
        rows.append(row)
        if len(rows) >= size:
            yield frame_batch(rows, time.perf_counter() - t0)
            sent, rows = True, []
            t0 = time.perf_counter()
    if rows or not sent:
        yield frame_batch(rows, time.perf_counter() - t0)


def task_of(batch: dict[str, Any], i: int) -> dict[str, Any]:
    """Row ``i`` of a batch of task rows as a task dict (``source`` a list of str)."""
    task = {k: batch[k][i] for k in batch}
    task["source"] = [str(s) for s in task["source"]]
    return task


class DecodeStage:
    """Decode tasks (a batch of task rows) into a frame batch for ``DetectStage``.

    Output columns: ``source``, ``frame_index``, ``timestamp_s``, ``frame`` (object array of
    ``uint8`` HxWx3, None on error rows), ``status``, ``error``, ``decode_s`` (per-row share
    of the decode time).
    """

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        rows: list[dict[str, Any]] = []
        for i in range(len(batch["kind"])):
            rows += iter_task_rows(task_of(batch, i))
        return frame_batch(rows, time.perf_counter() - t0)
