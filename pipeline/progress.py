"""What ``faceiqa run`` tells while it works: the progress bar (sources finished, frames and
their rate) and the stream clock (when rows came back: time to the first result, the
steady rate), whose figures go to ``summary.json``."""

from __future__ import annotations

import time
from typing import TextIO

import numpy as np
from tqdm import tqdm

__all__ = ["Progress", "StreamClock"]


class Progress:
    """The run's progress bar: sources finished, and frames with their rate."""

    def __init__(self, total: int, file: TextIO) -> None:
        self.bar = tqdm(total=total, unit="source", file=file, desc="faceiqa run", smoothing=0.1)
        self.frames = 0
        self.t0 = time.perf_counter()

    def update(self, sources: int, frames: int) -> None:
        self.frames += frames
        dt = time.perf_counter() - self.t0
        rate = f", {self.frames / dt:.1f} frames/s" if dt > 0 else ""
        self.bar.set_postfix_str(f"{self.frames:,} frames{rate}", refresh=False)
        self.bar.update(sources)

    def close(self) -> None:
        self.bar.close()


class StreamClock:
    """When the workers' results reach the driver: the first one (the pipeline's start-up:
    workers starting, models loading, first GPU plans) and the rate of frames after it,
    which is the pipeline's throughput on a long input, without its start."""

    def __init__(self, t_start: float) -> None:
        self.t_start = t_start
        self.t_first = self.t_last = None
        self.first_frames = self.frames = 0

    def add(self, batch: dict[str, np.ndarray]) -> None:
        now = time.perf_counter()
        n = len(set(zip(batch["source"].tolist(), batch["frame_index"].tolist())))
        if self.t_first is None:
            self.t_first, self.first_frames = now, n
        self.t_last = now
        self.frames += n

    def summary(self) -> dict[str, float | int | None]:
        if self.t_first is None:
            return {"first_result_s": None, "frames_after_first": 0, "fps_after_first": None}
        after = self.frames - self.first_frames
        span = self.t_last - self.t_first
        return {
            "first_result_s": round(self.t_first - self.t_start, 3),
            "frames_after_first": after,
            "fps_after_first": round(after / span, 2) if span > 0 and after else None,
        }
