"""``faceiqa run``: the main job. Videos, images, folders and list files in; in ``--out``:

- ``frames.parquet``: every input frame exactly once (source, frame_index, timestamp_s,
  n_faces, best_quality, keep, reason, status, error);
- ``faces.parquet``: one row per face (box, landmarks, det_prob, face_size, quality,
  exposure, keep, reason), plus the faceless / failed frame rows;
- ``crops/`` and ``kept_frames/`` when asked; ``summary.json``.

All tasks of all sources (image groups, video chunks) go through one streaming Ray Data
execution; the workers return rows only (they write the crops themselves). The driver
finishes a source (tracks, decisions, rows) as soon as all its tasks are back, and appends
finished sources to a few part files under ``.parts/`` (every ``output.flush_sources``
sources or ``output.flush_seconds``), so ``--resume`` skips them and the final tables are the
same as those of one clean run.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from face_iqa.schema import STATUS_ERROR, STATUS_OK
from pipeline.config import Config, to_dict
from pipeline.inputs import discover_sources
from pipeline.progress import Progress, StreamClock
from pipeline.writers import check_writable_dir, crop_file, source_key, write_parquet, write_png
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
    "frontalness",
    "align",
    "keep",
    "reason",
    "status",
    "error",
]
_TIMINGS = ("decode_s", "detect_s", "align_s", "score_s")


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
        "frontalness",
        "align",
        "status",
        "error",
        "face_pass",
        "face_reason",
        "task_id",
        "task_rows",
        "stream_frames",
        *_TIMINGS,
    ]:
        if c in batch:
            cols[c] = np.asarray(batch[c])
    cols["box"] = [b.tolist() if k else None for b, k in zip(batch["box"], ok)]
    cols["landmarks"] = [m.tolist() if k else None for m, k in zip(batch["landmarks"], ok)]
    if "descriptor" in batch:
        cols["descriptor"] = list(np.asarray(batch["descriptor"], np.float64))
    if "frame_sig" in batch:  # the tracker's shot cuts
        cols["frame_sig"] = list(np.asarray(batch["frame_sig"], np.float32))
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
                "frontalness": np.nan,
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
        stem = f"{_safe_stem(source)}-{source_key(source)[:8]}"
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
    console: TextIO | None = None,
) -> pd.DataFrame:
    """Run the main job; returns the frame table (also written to ``out/frames.parquet``).

    Fails before any work on a missing input, an unwritable ``out`` or a bad checkpoint.
    ``stage_classes`` may swap in your own ``detect``/``score`` stage classes. The progress
    bar and ``log`` messages go to ``console`` (default: ``sys.stderr``).
    """
    from face_iqa.model.checkpoint import build_model, file_sha256
    from face_iqa.model.scorer import default_checkpoint

    cfg = cfg or Config()
    console = console or sys.stderr
    log = log or (lambda m: print(m, file=console, flush=True))
    t_start = time.perf_counter()
    sources = [str(p) for p in discover_sources(list(inputs))]
    out = check_writable_dir(out)
    ckpt = Path(cfg.score.scorer.checkpoint or default_checkpoint())
    build_model(ckpt)  # a bad checkpoint fails here, not in a worker
    parts = out / ".parts"
    if parts.exists() and not resume:
        shutil.rmtree(parts)
    store = _PartStore(parts)
    staging = parts / "crops_staging"
    done = store.finished & set(sources)
    todo = [s for s in sources if s not in done]
    if resume and done:
        log(f"resume: {len(done)} of {len(sources)} sources already finished")

    finisher = _Finisher(cfg, out, staging, store)
    stream = StreamClock(t_start)
    bar = Progress(len(todo), console) if progress and todo else None
    if todo:
        from pipeline.graph import build_dataset, init_ray, task_split
        from workers.decode import make_tasks

        init_ray(cfg.ray)
        tasks = make_tasks([Path(s) for s in todo], cfg.decode, *task_split(cfg))
        for i, t in enumerate(tasks):
            t["task_id"] = i
            if t["kind"] == "video":
                finisher.listed[t["source"][0]] = int(t.get("count") or 0)
        ds = build_dataset(
            tasks,
            cfg,
            staging=str(staging) if cfg.output.crops else None,
            reid=cfg.track.reid,
            stage_classes=stage_classes,
        )
        pending = _Pending(tasks)
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                stream.add(batch)
                ready = pending.add(_batch_to_frame(batch))
                if ready:
                    n_frames = finisher.finish(ready)
                    if bar is not None:
                        bar.update(len(ready), n_frames)
            rest = pending.drain()  # the stream is over: whatever is left is complete
            if rest:
                n_frames = finisher.finish(rest)
                if bar is not None:
                    bar.update(len(rest), n_frames)
        finally:
            store.flush()  # an interruption keeps what was finished
            if bar is not None:
                bar.close()
    shutil.rmtree(staging, ignore_errors=True)  # what is left was not kept
    timings = finisher.timings

    t_write = time.perf_counter()
    faces_t, frames_t, tracks_t = store.read(sources)
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
        # per video: the frames its container listed and those its decoder returned
        "videos": store.streams,
        "timing_s": {
            **{k: round(v, 3) for k, v in timings.items()},
            "wall": round(time.perf_counter() - t_start, 3),
        },
        "stream": stream.summary(),
        "parts": store.n_files(),
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


class _Pending:
    """The rows of unfinished sources, and which sources a batch of rows completes.

    A task is complete when its ``task_rows`` rows have come back (the fused workers say
    how many rows each task gives); a source when all its tasks are. Rows without that
    count (the per-stage graph) complete their sources when the stream ends."""

    def __init__(self, tasks: list[dict[str, Any]]) -> None:
        self.task_sources = {int(t["task_id"]): list(t["source"]) for t in tasks}
        self.tasks_left: dict[str, int] = defaultdict(int)
        for srcs in self.task_sources.values():
            for s in srcs:
                self.tasks_left[s] += 1
        self.order = list(dict.fromkeys(s for t in tasks for s in t["source"]))
        self.seen: dict[int, int] = defaultdict(int)
        self.rows: dict[str, list[pd.DataFrame]] = defaultdict(list)

    def add(self, df: pd.DataFrame) -> list[tuple[str, pd.DataFrame | None]]:
        """Keep ``df``'s rows; return the sources it completes, with all their rows."""
        for src, g in df.groupby("source", sort=False):
            self.rows[str(src)].append(g)
        if "task_id" not in df or "task_rows" not in df or len(df) == 0:
            return []
        ready = []
        tid = df["task_id"].to_numpy(np.int64)
        want = df["task_rows"].to_numpy(np.int64)
        ids, first, counts = np.unique(tid, return_index=True, return_counts=True)
        for t, k, c in zip(ids.tolist(), first.tolist(), counts.tolist()):
            self.seen[t] += c
            if want[k] < 0 or self.seen[t] != want[k] or t not in self.task_sources:
                continue
            for s in self.task_sources.pop(t):
                self.tasks_left[s] -= 1
                if self.tasks_left[s] == 0:
                    del self.tasks_left[s]
                    ready.append((s, self._take(s)))
        return ready

    def drain(self) -> list[tuple[str, pd.DataFrame | None]]:
        """Every source not finished yet, in input order."""
        left = [s for s in self.order if s in self.tasks_left]
        self.tasks_left.clear()
        return [(s, self._take(s)) for s in left]

    def _take(self, src: str) -> pd.DataFrame | None:
        g = self.rows.pop(src, None)
        return pd.concat(g, ignore_index=True) if g else None


class _Finisher:
    """Finish whole sources on the driver: tracks, the frame rule and policies, the kept
    faces' crops moved into ``crops/`` (the others deleted), rows handed to the store."""

    def __init__(self, cfg: Config, out: Path, staging: Path, store: _PartStore) -> None:
        self.cfg = cfg
        self.out = out
        self.staging = staging
        self.store = store
        self.stage = ThresholdStage(cfg.threshold)
        self.tracker = TrackStage(cfg.track)
        self.timings: dict[str, float] = defaultdict(float)
        self.t_flush = time.perf_counter()
        self.listed: dict[str, int] = {}  # video -> frames its container lists

    def finish(self, ready: list[tuple[str, pd.DataFrame | None]]) -> int:
        """Finish these sources; returns their number of frames."""
        t0 = time.perf_counter()
        tracked = []
        for src, faces in ready:
            if faces is None:
                faces = _missing_rows(src)
            for t in _TIMINGS:
                self.timings[t] += float(faces[t].sum()) if t in faces else 0.0
            keys = ["frame_index", "face_index"] + (["task_id"] if "task_id" in faces else [])
            faces = faces.sort_values(keys, kind="stable").reset_index(drop=True)
            faces["track_id"] = self.tracker({c: faces[c].to_numpy() for c in faces.columns})[
                "track_id"
            ]
            tracked.append(faces)
        faces = tracked[0] if len(tracked) == 1 else pd.concat(tracked, ignore_index=True)
        decoded = {}
        if "stream_frames" in faces:
            decoded = faces.groupby("source", sort=False)["stream_frames"].max().to_dict()
        faces, frames = self.stage.decide(faces)  # per source: sources do not mix
        src = frames["source"].astype(str)
        frames["frames_listed"] = src.map(self.listed).fillna(-1).astype(np.int64)
        frames["frames_decoded"] = src.map(decoded).fillna(-1).astype(np.int64)
        if self.cfg.output.crops:
            self._place_crops(faces)
        self.store.add(faces[[c for c in FACE_COLUMNS_OUT if c in faces]], frames, len(ready))
        o = self.cfg.output
        if (
            self.store.buffered >= o.flush_sources
            or time.perf_counter() - self.t_flush >= o.flush_seconds
        ):
            self.store.flush()
            self.t_flush = time.perf_counter()
        self.timings["finish_s"] += time.perf_counter() - t0
        return len(frames)

    def _place_crops(self, faces: pd.DataFrame) -> None:
        """The workers staged the crops of faces that pass the face rules; keep those kept."""
        cand = faces[faces["face_pass"].astype(bool) & (faces["face_index"] >= 0)]
        per_track = self.cfg.threshold.policy == "best_per_track"
        for src, fi, k, keep, tid in zip(
            cand["source"], cand["frame_index"], cand["face_index"], cand["keep"], cand["track_id"]
        ):
            staged = self.staging / crop_file(str(src), int(fi), int(k))
            if not keep:
                staged.unlink(missing_ok=True)
                continue
            dest = self.out / "crops"
            if per_track:
                dest = dest / str(tid)
            if staged.is_file():
                dest.mkdir(parents=True, exist_ok=True)
                os.replace(staged, dest / staged.name)


class _PartStore:
    """Finished sources under ``.parts/``, in a few numbered parts: each flush appends
    ``part-NNNNN.faces.parquet`` and then ``part-NNNNN.frames.parquet`` (the frames file
    marks the part complete; a faces file without it, from an interrupted flush, is
    removed and its sources redone). Track tables are derived from the faces."""

    def __init__(self, parts: Path) -> None:
        self.dir = parts
        parts.mkdir(parents=True, exist_ok=True)
        self.finished: set[str] = set()
        self.next = 0
        done = sorted(parts.glob("part-*.frames.parquet"))
        for f in done:
            self.finished |= set(pd.read_parquet(f, columns=["source"])["source"].astype(str))
            self.next = max(self.next, int(f.name.split(".")[0].split("-")[1]) + 1)
        keep = {f.name.split(".")[0] for f in done}
        for f in parts.glob("part-*.parquet"):
            if f.name.split(".")[0] not in keep:
                f.unlink()
        self._faces: list[pd.DataFrame] = []
        self._frames: list[pd.DataFrame] = []
        self.buffered = 0
        self.streams: dict[str, dict[str, int]] = {}  # filled by read()

    def add(self, faces: pd.DataFrame, frames: pd.DataFrame, n: int) -> None:
        self._faces.append(faces)
        self._frames.append(frames)
        self.buffered += n

    def flush(self) -> None:
        if not self.buffered:
            return
        stem = f"part-{self.next:05d}"
        write_parquet(pd.concat(self._faces, ignore_index=True), self.dir / f"{stem}.faces.parquet")
        frames = pd.concat(self._frames, ignore_index=True)
        write_parquet(frames, self.dir / f"{stem}.frames.parquet")  # last: marks it complete
        self.finished |= set(frames["source"].astype(str))
        self.next += 1
        self._faces, self._frames, self.buffered = [], [], 0

    def n_files(self) -> int:
        return len(list(self.dir.glob("part-*.parquet")))

    def read(self, sources: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """``(faces, frames, tracks)`` of ``sources``, in their order (each source's rows in
        the order they were finished), whichever part holds them."""
        pos = {s: i for i, s in enumerate(sources)}

        def in_order(df: pd.DataFrame) -> pd.DataFrame:
            key = df["source"].astype(str).map(pos)
            df = df[key.notna().to_numpy()]  # parts of sources not asked for this time
            order = np.argsort(key.dropna().to_numpy(np.int64), kind="stable")
            return df.iloc[order].reset_index(drop=True)

        def load(kind: str) -> pd.DataFrame:
            tables = [pd.read_parquet(f) for f in sorted(self.dir.glob(f"part-*.{kind}.parquet"))]
            tables = [t for t in tables if len(t)]
            return in_order(pd.concat(tables, ignore_index=True))

        faces, frames = load("faces"), load("frames")
        if "frames_listed" in frames:
            per = frames[frames["frames_listed"] >= 0].drop_duplicates("source")
            self.streams = {
                str(r.source): {
                    "frames_listed": int(r.frames_listed),
                    "frames_decoded": int(r.frames_decoded),
                }
                for r in per.itertuples()
            }
        return faces, frames[FRAME_COLUMNS], in_order(_track_table(faces))


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
        "frontalness",
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
