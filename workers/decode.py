"""Sources and decoding: turn input paths into decode tasks, and tasks into frame batches.

A task is one image, a few images, or one chunk of a video's frames, so a long video streams
through the pipeline chunk by chunk instead of being loaded whole. Every frame a task
should produce appears in its output exactly once: decoded, or as an error row.

The decoded stream is the truth. Containers such as Matroska and WebM only estimate their
frame count, so a video whose frames decode to the end is not an error whatever its header
listed; the last row of a video carries ``stream_frames`` (how many frames the decoder
returned), which the run's summary sets beside the listed count. A video whose decoder stops
before the container's duration (cut bytes, lost packets) ends with an error row. Frames
come out upright where the container holds a rotation (phone video), and ``timestamp_s`` is
the frame's presentation time where the container gives one, so variable-frame-rate video
keeps its true times.
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
    "stream_short",
]

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
)


_NO_FRAME = np.zeros((0, 0, 3), np.uint8)

# How far a stream may end before the container's listed end and still count as whole:
# Matroska/WebM headers give a duration, from which the count is estimated to a frame or two.
END_TOLERANCE_FRAMES = 2


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
                    "sample_fps": 0.0,
                    "last": True,
                    "max_pixels": cfg.max_pixels,
                    "count": 0,
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
        # sampled by presentation time when decode.fps is set and the container has a rate
        sample_fps = float(cfg.fps) if cfg.fps is not None and fps > 0 else 0.0
        if n <= 0:
            tasks.append(
                {
                    "kind": "video",
                    "source": [str(p)],
                    "start": 0,
                    "stop": -1,
                    "step": step,
                    "fps": fps,
                    "sample_fps": sample_fps,
                    "last": True,
                    "max_pixels": cfg.max_pixels,
                    "count": 0,
                }
            )
            continue
        starts = list(range(0, n, span))
        if len(starts) > 1 and n - starts[-1] < step + END_TOLERANCE_FRAMES + 1:
            # a tail this short may hold no sampled frame once the stream proves shorter
            # than listed: the chunk before runs to the end instead
            starts.pop()
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
                    "sample_fps": sample_fps,
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


def _sampled_at(t: float, prev: float | None, rate: float) -> bool:
    """By presentation time: the frame at ``t`` seconds is sampled when it is the first at or
    after a multiple of ``1 / rate`` (``prev``: the previous frame's time, None for the
    first frame of the stream)."""
    if prev is None:
        return True
    return math.floor(t * rate + 1e-6) > math.floor(prev * rate + 1e-6)


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


def _position_s(cap: cv2.VideoCapture, i: int, fps: float) -> float:
    """The grabbed frame's presentation time (seconds): the container's where it gives one,
    else ``i / fps`` (NaN without a rate)."""
    ms = cap.get(cv2.CAP_PROP_POS_MSEC)
    if math.isfinite(ms) and ms >= 0 and (ms > 0 or i == 0):
        return ms / 1000.0
    return i / fps if fps > 0 else np.nan


def stream_short(decoded: int, listed: int, last_s: float, fps: float) -> bool:
    """Did the decoder stop before the container's end? Only when it returned more than
    :data:`END_TOLERANCE_FRAMES` fewer frames than listed *and* its last frame lies that
    far before the listed duration (``listed / fps``): a Matroska count estimated from the
    duration, or a variable frame rate whose count differs from duration x rate, is no
    error while the times reach the end."""
    if listed <= 0 or decoded >= listed - END_TOLERANCE_FRAMES:
        return False
    if fps <= 0 or not math.isfinite(last_s):
        return True
    return last_s + 1.0 / fps < (listed - END_TOLERANCE_FRAMES) / fps


def _open_video(src: str) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(src)
    # upright frames for videos with rotation metadata (phones): OpenCV's FFmpeg backend
    # applies the display matrix when asked; asked explicitly so a changed default cannot
    # turn faces sideways
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    return cap


def _iter_video(task: dict[str, Any]) -> Iterator[dict[str, Any]]:
    src = task["source"][0]
    start, stop, step, fps = task["start"], task["stop"], task["step"], task["fps"]
    rate = float(task.get("sample_fps") or 0.0)
    cap = _open_video(src)
    if not cap.isOpened():
        if start == 0:
            row = _error_row(src, f"{src}: cannot open video (corrupt, truncated or unsupported)")
            yield {**row, "stream_frames": 0}
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
        # with time sampling a chunk starts one frame early: its first frame's predecessor
        # decides whether it is sampled
        first = start - 1 if rate > 0 and start > 0 else start
        reached = first
        last_s = np.nan  # the time of the last frame grabbed
        if first > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, first)
            pos = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
            if pos != first:  # inexact seek (or past the end): walk from the start instead
                cap.release()
                cap = _open_video(src)
                reached = 0
                while reached < first and cap.grab():
                    last_s = _position_s(cap, reached, fps)
                    reached += 1
        i = first if reached == first else -1
        ended = i < 0  # the decoder returned its last frame within this task
        prev_s: float | None = None
        held: dict[str, Any] | None = None  # the last row, sent once the end is known
        while i >= 0 and (stop < 0 or i < stop):
            ok = cap.grab()
            if not ok:
                ended = True
                break
            ts = _position_s(cap, i, fps)
            last_s = ts
            if i < start:  # the predecessor of a time-sampled chunk's first frame
                prev_s, i = ts, i + 1
                continue
            take = _sampled_at(ts, prev_s, rate) if rate > 0 and math.isfinite(ts) else None
            if take is None:
                take = _sampled(i, step)
            prev_s = ts
            if take:
                ok, bgr = cap.retrieve()
                if ok and bgr is not None:
                    row = {
                        "source": src,
                        "frame_index": i,
                        "timestamp_s": ts,
                        "frame": cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
                        "status": STATUS_OK,
                        "error": "",
                    }
                else:
                    row = _error_row(src, f"{src}: frame {i} could not be decoded", i, ts)
                if held is not None:
                    yield held
                held = row
            i += 1
        end = i if i >= 0 else reached  # frames the decoder returned, when this task is last
        tail: dict[str, Any] | None = None
        if start == 0 and end == 0:
            tail = _error_row(src, f"{src}: video has no decodable frames")
        elif task.get("last") and stream_short(end, int(task.get("count") or 0), last_s, fps):
            # frames the container lists but the decoder never returned (a truncated file,
            # or packets lost to corruption): say so in the manifest rather than drop them
            tail = _error_row(
                src,
                f"{src}: the stream ends after {end} frames but the container lists "
                f"{int(task['count'])} (truncated or corrupt data)",
            )
        if ended or task.get("last"):
            if tail is not None:
                tail["stream_frames"] = end
            elif held is not None:
                held["stream_frames"] = end
        if held is not None:
            yield held
        if tail is not None:
            yield tail
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
        "stream_frames": np.array([r.get("stream_frames", -1) for r in rows], np.int64),
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
    ``uint8`` HxWx3, None on error rows), ``status``, ``error``, ``stream_frames`` (on a
    video's last row the frames its decoder returned, else -1), ``decode_s`` (per-row share
    of the decode time).
    """

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        rows: list[dict[str, Any]] = []
        for i in range(len(batch["kind"])):
            rows += iter_task_rows(task_of(batch, i))
        return frame_batch(rows, time.perf_counter() - t0)
