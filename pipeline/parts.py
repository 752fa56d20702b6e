"""The state ``faceiqa run --resume`` reads: finished sources under ``.parts/`` (faces,
frames and, with identities, each identity's centre), and the track table derived from the
faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.writers import write_parquet
from workers.threshold import FRAME_COLUMNS

__all__ = ["TRACK_COLUMNS", "PartStore", "track_table"]


class PartStore:
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
        self._centres: list[tuple[str, np.ndarray]] = []
        self.centres: list[tuple[str, np.ndarray]] = []  # every stored identity's centre
        for f in done:
            c = f.with_name(f.name.replace(".frames.", ".centres."))
            if c.is_file():
                t = pd.read_parquet(c)
                self.centres += [
                    (str(i), np.asarray(v, np.float32)) for i, v in zip(t["identity"], t["centre"])
                ]

    def add_centres(self, centres: list[tuple[str, np.ndarray]]) -> None:
        self._centres += centres

    def restore(self, book) -> None:
        """What ``--resume`` needs of the identities already stored: their kept faces'
        hashes (copies under another name); their centres stay in ``centres``."""
        for f in sorted(self.dir.glob("part-*.faces.parquet")):
            t = pd.read_parquet(f)
            if not {"phash", "identity", "keep"} <= set(t.columns):
                continue
            t = t[t["keep"].astype(bool) & (t["face_index"] >= 0)]
            for h, src, ident in zip(t["phash"], t["source"], t["identity"]):
                book.index.add(int(h), str(src), str(ident))

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
        if self._centres:
            c = pd.DataFrame(
                {
                    "identity": [n for n, _ in self._centres],
                    "centre": [v.tolist() for _, v in self._centres],
                }
            )
            write_parquet(c, self.dir / f"{stem}.centres.parquet")
            self.centres += self._centres
            self._centres = []
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
        cols = FRAME_COLUMNS + (["identity"] if "identity" in frames else [])
        return faces, frames[cols], in_order(track_table(faces))


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


def track_table(faces: pd.DataFrame) -> pd.DataFrame:
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
