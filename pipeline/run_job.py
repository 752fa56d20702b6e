"""``faceiqa run``: the main job. Videos, images, folders and list files in; in ``--out``:

- ``frames.parquet``: every input frame exactly once (source, frame_index, timestamp_s,
  n_faces, best_quality, keep, reason, status, error);
- ``faces.parquet``: one row per face (box, landmarks, det_prob, face_size, quality,
  exposure, keep, reason), plus the faceless / failed frame rows;
- ``crops/`` and ``kept_frames/`` when asked; ``summary.json``.

Sources are processed in waves through the streaming Ray Data graph; each finished source
is saved under ``.parts/`` (atomically), so ``--resume`` skips finished sources and the final
tables are the same as those of one clean run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from face_iqa.schema import STATUS_ERROR, STATUS_OK
from pipeline.config import Config, to_dict
from pipeline.inputs import discover_sources
from pipeline.writers import check_writable_dir, write_parquet, write_png
from workers.threshold import FRAME_COLUMNS, ThresholdStage
from workers.track import TrackStage

__all__ = ["FACE_COLUMNS_OUT", "run"]

FACE_COLUMNS_OUT = [
    "source",
    "frame_index",
    "timestamp_s",
    "face_index",
    "track_id",
    "box",
    "landmarks",
    "det_prob",
    "face_size",
    "quality",
    "exposure",
    "align",
    "keep",
    "reason",
    "status",
    "error",
]
_TIMINGS = ("decode_s", "detect_s", "align_s", "score_s")


def _source_key(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()[:16]


def _crop_file(source: str, frame_index: int, face_index: int) -> str:
    """Crop file name: derived from a hash and numbers only, so no input name can steer it
    outside the output folder."""
    return f"{Path(source).stem[:40]}-{_source_key(source)[:8]}_f{frame_index:06d}_{face_index:02d}.png"


def _safe_stem(source: str) -> str:
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in Path(source).stem)
    return stem[:40] or "source"


def _batch_to_frame(batch: dict[str, np.ndarray]) -> pd.DataFrame:
    ok = np.asarray(batch["face_index"]) >= 0
    cols: dict[str, Any] = {}
    for c in [
        "source",
        "frame_index",
        "timestamp_s",
        "face_index",
        "det_prob",
        "face_size",
        "quality",
        "exposure",
        "align",
        "status",
        "error",
        "face_pass",
        "face_reason",
        *_TIMINGS,
    ]:
        if c in batch:
            cols[c] = np.asarray(batch[c])
    cols["box"] = [b.tolist() if k else None for b, k in zip(batch["box"], ok)]
    cols["landmarks"] = [m.tolist() if k else None for m, k in zip(batch["landmarks"], ok)]
    return pd.DataFrame(cols)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for pkg in (
        "face-iqa-pipeline",
        "torch",
        "torchvision",
        "facenet-pytorch",
        "ray",
        "opencv-python-headless",
        "numpy",
        "pandas",
        "pyarrow",
    ):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _missing_rows(source: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "source": source,
                "frame_index": -1,
                "timestamp_s": np.nan,
                "face_index": -1,
                "det_prob": np.nan,
                "face_size": np.nan,
                "quality": np.nan,
                "exposure": np.nan,
                "align": "",
                "status": STATUS_ERROR,
                "error": f"{source}: no output came back for this source",
                "face_pass": False,
                "face_reason": "error",
                "box": None,
                "landmarks": None,
            }
        ]
    )


def _write_kept_frames(frames: pd.DataFrame, out: Path) -> None:
    import cv2

    from face_iqa.images import ImageError, load_image
    from workers.decode import is_video

    kept = frames[frames["keep"]]
    for source, g in kept.groupby("source", sort=False):
        stem = f"{_safe_stem(source)}-{_source_key(source)[:8]}"
        wanted = set(int(i) for i in g["frame_index"])
        if not is_video(source):
            try:
                write_png(load_image(source), out / f"{stem}.png")
            except ImageError:
                pass
            continue
        cap = cv2.VideoCapture(source)
        i = 0
        last = max(wanted)
        while i <= last and cap.grab():
            if i in wanted:
                ok, bgr = cap.retrieve()
                if ok:
                    write_png(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), out / f"{stem}_f{i:06d}.png")
            i += 1
        cap.release()


def run(
    inputs: list[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    cfg: Config | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    stage_classes: dict[str, type] | None = None,
) -> pd.DataFrame:
    """Run the main job; returns the frame table (also written to ``out/frames.parquet``).

    Fails before any work on a missing input, an unwritable ``out`` or a bad checkpoint.
    ``stage_classes`` may swap in your own ``detect``/``score`` stage classes.
    """
    from face_iqa.checkpoint import build_model, file_sha256
    from face_iqa.scorer import default_checkpoint

    cfg = cfg or Config()
    log = log or (lambda m: print(m, file=sys.stderr))
    t_start = time.perf_counter()
    sources = [str(p) for p in discover_sources(list(inputs))]
    out = check_writable_dir(out)
    ckpt = Path(cfg.score.scorer.checkpoint or default_checkpoint())
    build_model(ckpt)  # a bad checkpoint fails here, not in a worker
    parts = out / ".parts"
    if parts.exists() and not resume:
        shutil.rmtree(parts)
    parts.mkdir(exist_ok=True)
    staging = parts / "crops_staging"

    done = {s for s in sources if (parts / f"{_source_key(s)}.frames.parquet").is_file()}
    todo = [s for s in sources if s not in done]
    if resume and done:
        log(f"resume: {len(done)} of {len(sources)} sources already finished")

    from pipeline.graph import build_dataset, init_ray, task_split
    from workers.decode import make_tasks

    stage = ThresholdStage(cfg.threshold)
    tracker = TrackStage(cfg.track)
    recognizer = None
    if cfg.track.reid:
        from face_iqa.utility import DlibRecognizer

        recognizer = DlibRecognizer()
    per_track_crops = cfg.threshold.policy == "best_per_track"
    timings = defaultdict(float)
    stream = _StreamClock(t_start)
    split = (1, 1)
    if todo:
        init_ray(cfg.ray)
        split = task_split(cfg)
    wave = cfg.output.wave_sources
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="source", file=sys.stderr, desc="faceiqa run")
    for w in range(0, len(todo), wave):
        wave_sources = todo[w : w + wave]
        tasks = make_tasks([Path(s) for s in wave_sources], cfg.decode, *split)
        ds = build_dataset(
            tasks,
            cfg,
            keep_crops=cfg.output.crops or recognizer is not None,
            stage_classes=stage_classes,
        )
        per_source: dict[str, list[pd.DataFrame]] = defaultdict(list)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            stream.add(batch)
            df = _batch_to_frame(batch)
            if recognizer is not None:  # descriptors for re-linking tracks
                t0 = time.perf_counter()
                df["descriptor"] = _descriptors(recognizer, batch)
                timings["reid_s"] += time.perf_counter() - t0
            for src, g in df.groupby("source", sort=False):
                per_source[str(src)].append(g)
            if cfg.output.crops:
                for k in np.flatnonzero(np.asarray(batch["face_pass"], bool)):
                    src = str(batch["source"][k])
                    name = _crop_file(
                        src, int(batch["frame_index"][k]), int(batch["face_index"][k])
                    )
                    write_png(batch["crop"][k], staging / _source_key(src) / name)
        t_finish = time.perf_counter()
        for src in wave_sources:
            faces = (
                pd.concat(per_source[src], ignore_index=True)
                if per_source.get(src)
                else _missing_rows(src)
            )
            for t in _TIMINGS:
                timings[t] += float(faces[t].sum()) if t in faces else 0.0
            faces = faces.sort_values(["frame_index", "face_index"], kind="stable")
            faces = faces.reset_index(drop=True)
            faces["track_id"] = tracker({c: faces[c].to_numpy() for c in faces.columns})["track_id"]
            faces, frames = stage.decide(faces)
            key = _source_key(src)
            if cfg.output.crops:
                src_stage = staging / key
                for _, r in faces[faces["keep"]].iterrows():
                    name = _crop_file(src, int(r["frame_index"]), int(r["face_index"]))
                    dest = out / "crops"
                    if per_track_crops:
                        dest = dest / str(r["track_id"])
                    if (src_stage / name).is_file():
                        dest.mkdir(parents=True, exist_ok=True)
                        os.replace(src_stage / name, dest / name)
                shutil.rmtree(src_stage, ignore_errors=True)
            write_parquet(
                faces[[c for c in FACE_COLUMNS_OUT if c in faces]], parts / f"{key}.faces.parquet"
            )
            write_parquet(_track_table(faces), parts / f"{key}.tracks.parquet")
            # the frames part is written last: its presence marks the source as finished
            write_parquet(frames, parts / f"{key}.frames.parquet")
        timings["finish_s"] += time.perf_counter() - t_finish
        if bar is not None:
            bar.update(len(wave_sources))
    if bar is not None:
        bar.close()

    t_write = time.perf_counter()
    faces_all, frames_all, tracks_all = [], [], []
    for s in sources:
        key = _source_key(s)
        faces_all.append(pd.read_parquet(parts / f"{key}.faces.parquet"))
        frames_all.append(pd.read_parquet(parts / f"{key}.frames.parquet"))
        if (parts / f"{key}.tracks.parquet").is_file():
            tracks_all.append(pd.read_parquet(parts / f"{key}.tracks.parquet"))
    faces_t = pd.concat(faces_all, ignore_index=True)
    frames_t = pd.concat(frames_all, ignore_index=True)[FRAME_COLUMNS]
    tracks_t = (
        pd.concat(tracks_all, ignore_index=True) if tracks_all else _track_table(faces_t.iloc[:0])
    )
    write_parquet(faces_t, out / "faces.parquet")
    write_parquet(tracks_t, out / "tracks.parquet")
    write_parquet(frames_t, out / "frames.parquet")
    if cfg.output.kept_frames:
        _write_kept_frames(frames_t, out / "kept_frames")
    timings["write_s"] = time.perf_counter() - t_write

    face_rows = faces_t[faces_t["status"] == STATUS_OK]
    summary = {
        "inputs": [str(i) for i in inputs],
        "out": str(out),
        "counts": {
            "sources": len(sources),
            "frames": int(len(frames_t)),
            "frames_kept": int(frames_t["keep"].sum()),
            "frames_rejected": int((~frames_t["keep"]).sum()),
            "frame_errors": int((frames_t["status"] == STATUS_ERROR).sum()),
            "faces": int(len(face_rows)),
            "faces_kept": int(face_rows["keep"].sum()),
            "tracks": int(len(tracks_t)),
        },
        "reasons": frames_t.loc[~frames_t["keep"], "reason"]
        .map(_reason_kind)
        .value_counts()
        .to_dict(),
        "errors": sorted(set(frames_t.loc[frames_t["status"] == STATUS_ERROR, "error"]))[:50],
        "timing_s": {
            **{k: round(v, 3) for k, v in timings.items()},
            "wall": round(time.perf_counter() - t_start, 3),
        },
        "stream": stream.summary(),
        "config": to_dict(cfg),
        "model": {"checkpoint": str(ckpt), "sha256": file_sha256(ckpt)},
        "versions": _versions(),
        "resumed_sources": len(done),
    }
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, default=str))
    os.replace(tmp, out / "summary.json")
    # .parts/ stays: it is the state --resume reads (small: no pixels)
    return frames_t


class _StreamClock:
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


def _descriptors(recognizer: Any, batch: dict[str, np.ndarray]) -> list:
    """dlib descriptors of the batch's face crops (NaN rows for non-faces / failures)."""
    out = []
    for k in range(len(batch["source"])):
        d = np.full(128, np.nan)
        if int(batch["face_index"][k]) >= 0 and str(batch["status"][k]) == STATUS_OK:
            try:
                d = recognizer.image_descriptor(batch["crop"][k])
            except RuntimeError:  # dlib could not place its shape: leave unknown
                pass
        out.append(d)
    return out


TRACK_COLUMNS = [
    "track_id",
    "source",
    "first_frame",
    "last_frame",
    "n_faces",
    "best_quality",
    "n_kept",
    "kept_face_ids",
]


def _track_table(faces: pd.DataFrame) -> pd.DataFrame:
    """One row per track; ``kept_face_ids`` are ``f{frame:06d}_{face:02d}`` (the suffix of
    the crop file names)."""
    rows = []
    if "track_id" in faces.columns:
        f = faces[faces["track_id"].fillna("").astype(str) != ""]
        for tid, g in f.groupby("track_id", sort=True):
            kept = g[g["keep"].astype(bool)] if "keep" in g else g.iloc[:0]
            rows.append(
                {
                    "track_id": str(tid),
                    "source": str(g["source"].iloc[0]),
                    "first_frame": int(g["frame_index"].min()),
                    "last_frame": int(g["frame_index"].max()),
                    "n_faces": int(len(g)),
                    "best_quality": float(g["quality"].max()),
                    "n_kept": int(len(kept)),
                    "kept_face_ids": [
                        f"f{int(a):06d}_{int(b):02d}"
                        for a, b in zip(kept["frame_index"], kept["face_index"])
                    ],
                }
            )
    return pd.DataFrame(rows, columns=TRACK_COLUMNS)


def _reason_kind(reason: str) -> str:
    """Group reasons for the summary: numbers dropped ("quality 23.1 < 40" -> "quality")."""
    if reason.startswith("no face passes (") or reason.startswith("not all faces pass ("):
        inner = reason.split("(", 1)[1]
        return _reason_kind(inner.rstrip(")"))
    for prefix in (
        "quality",
        "exposure",
        "face ",
        "det_prob",
        "largest face",
        "below its source",
        "not in the top",
    ):
        if reason.startswith(prefix):
            return prefix.strip()
    if "faces > max" in reason:
        return "too many faces"
    return reason
