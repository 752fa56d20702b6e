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
from pipeline.parts import PartStore
from pipeline.progress import Progress, StreamClock
from pipeline.writers import check_writable_dir, crop_file, source_key, write_parquet, write_png
from workers.threshold import ThresholdStage, reason_kind
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
    "identity",
    "identity_distance",
    "duplicate_of",
    "phash",
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
        "phash",
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
    store = PartStore(parts)
    staging = parts / "crops_staging"
    done = store.finished & set(sources)
    todo = [s for s in sources if s not in done]
    if resume and done:
        log(f"resume: {len(done)} of {len(sources)} sources already finished")
    book = None
    if cfg.identity.enabled:
        from pipeline.identities import IdentityBook, identities_of

        book = IdentityBook(cfg.identity, identities_of(sources, cfg.identity), todo)
        store.restore(book)

    finisher = _Finisher(cfg, out, staging, store, book)
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
            reid=cfg.track.reid or book is not None,
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
            if rest or book is not None:
                n_frames = finisher.finish(rest, last=True)
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
        .map(reason_kind)
        .value_counts()
        .to_dict(),
        "errors": sorted(set(frames_t.loc[frames_t["status"] == STATUS_ERROR, "error"]))[:50],
        # per video: the frames its container listed and those its decoder returned
        "videos": store.streams,
        **(_identity_summary(frames_t, store, book, out) if book is not None else {}),
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

    def __init__(self, cfg: Config, out: Path, staging: Path, store: PartStore, book=None) -> None:
        self.cfg = cfg
        self.book = book  # pipeline.identities.IdentityBook when sources have persons
        self.out = out
        self.staging = staging
        self.store = store
        self.stage = ThresholdStage(cfg.threshold)
        self.tracker = TrackStage(cfg.track)
        self.timings: dict[str, float] = defaultdict(float)
        self.t_flush = time.perf_counter()
        self.listed: dict[str, int] = {}  # video -> frames its container lists

    def finish(self, ready: list[tuple[str, pd.DataFrame | None]], last: bool = False) -> int:
        """Finish these sources (``last``: the stream is over); returns the number of
        frames decided (a person's sources wait for the rest of theirs)."""
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
        if self.book is not None:
            tracked = self.book.take(tracked) + (self.book.drain() if last else [])
            if not tracked:
                return 0
        faces = tracked[0] if len(tracked) == 1 else pd.concat(tracked, ignore_index=True)
        n_sources = faces["source"].nunique()
        decoded = {}
        if "stream_frames" in faces:
            decoded = faces.groupby("source", sort=False)["stream_frames"].max().to_dict()
        faces, frames = _decide(self.stage, faces)  # per source: sources do not mix
        src = frames["source"].astype(str)
        frames["frames_listed"] = src.map(self.listed).fillna(-1).astype(np.int64)
        frames["frames_decoded"] = src.map(decoded).fillna(-1).astype(np.int64)
        if self.cfg.output.crops:
            self._place_crops(faces)
        if self.book is not None:
            frames["identity"] = frames["source"].map(self.book.identity_of).fillna("")
            self.store.add_centres(self.book.take_centres())
        cols = [c for c in FACE_COLUMNS_OUT if c in faces]
        if self.book is None:  # the hash serves the identities' duplicates only
            cols = [c for c in cols if c != "phash"]
        self.store.add(faces[cols], frames, n_sources)
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


def _decide(stage: ThresholdStage, faces: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The frame decisions; a photo's other faces beside its person's (``bystander``) take
    no part in them (a labelled photo is kept for its person's face), and keep their own
    reason."""
    if "bystander" not in faces or not faces["bystander"].any():
        return stage.decide(faces.drop(columns=["bystander"], errors="ignore"))
    side = faces["bystander"].to_numpy(bool)
    main, by = faces[~side].drop(columns="bystander"), faces[side].drop(columns="bystander")
    f, frames = stage.decide(main)
    by = by.assign(keep=False, reason=by["face_reason"])
    f = pd.concat([f, by], ignore_index=True).sort_values(
        ["source", "frame_index", "face_index"], kind="stable"
    )
    extra = by.groupby(["source", "frame_index"]).size()
    key = pd.MultiIndex.from_frame(frames[["source", "frame_index"]])
    frames["n_faces"] = frames["n_faces"].to_numpy() + extra.reindex(key).fillna(0).to_numpy(int)
    return f.reset_index(drop=True), frames


def _identity_summary(frames: pd.DataFrame, store: PartStore, book, out: Path) -> dict:
    """Per identity: photos, kept, removed by reason; ``cleaned.csv`` (the kept photos and
    their person); identities that may be one person; identities too small to check."""
    from pipeline.identities import ALIKE_DISTANCE

    per: dict[str, dict] = {}
    f = frames[frames["identity"].astype(str) != ""] if "identity" in frames else frames[:0]
    for ident, g in f.groupby("identity", sort=False):
        gone = g.loc[~g["keep"], "reason"].map(reason_kind).value_counts().to_dict()
        per[str(ident)] = {"photos": len(g), "kept": int(g["keep"].sum()), "removed": gone}
    kept = f[f["keep"]]
    tmp = out / ".cleaned.csv.tmp"
    pd.DataFrame({"path": kept["source"], "identity": kept["identity"]}).to_csv(tmp, index=False)
    os.replace(tmp, out / "cleaned.csv")
    return {
        "identities": per,
        "identities_alike": book.alike(store.centres),  # resumed identities' too
        "identities_alike_distance": ALIKE_DISTANCE,
        "identities_unchecked": sorted(
            i for i, v in per.items() if v["photos"] < book.stage.cfg.min_photos
        ),
    }
