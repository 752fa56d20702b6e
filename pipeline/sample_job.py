"""``faceiqa sample``: write the self-made demo clip (frames, MP4 and per-frame labels)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import pandas as pd

from face_iqa.sample import make_sample_frames
from pipeline.writers import check_writable_dir, write_parquet, write_png

__all__ = ["write_sample"]


def write_sample(out: str | os.PathLike[str], fps: float = 8.0, seed: int = 0) -> dict[str, Path]:
    """Write ``frames/frame_NNNN.png``, ``sample.mp4`` and ``labels.parquet`` (frame_index,
    timestamp_s, degradation, severity) under ``out``. Returns their paths."""
    out = check_writable_dir(out)
    frames = make_sample_frames(seed=seed)
    frame_dir = out / "frames"
    for f in frames:
        write_png(f.image, frame_dir / f"frame_{f.index:04d}.png")
    h, w = frames[0].image.shape[:2]
    video = out / "sample.mp4"
    tmp = out / ".sample.mp4.tmp.mp4"
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"{video}: OpenCV cannot open an MP4 writer")
    for f in frames:
        writer.write(cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR))
    writer.release()
    os.replace(tmp, video)
    labels = pd.DataFrame(
        {
            "frame_index": [f.index for f in frames],
            "timestamp_s": [f.index / fps for f in frames],
            "degradation": [f.degradation for f in frames],
            "severity": [f.severity for f in frames],
        }
    )
    lab = write_parquet(labels, out / "labels.parquet")
    return {"frames": frame_dir, "video": video, "labels": lab}
