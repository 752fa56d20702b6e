"""Sets of aligned faces to compare quality models on (``faceiqa gmad``, ``faceiqa
weights-map``): every face of photos, sampled faces of one-person clips (with their person
and a recognition utility), the faces of a ``faceiqa run`` output, or a labelled set.

Each collector returns a table (one row per face: ``face`` a readable name, ``source``,
``det_prob``, ``face_size``, and where known ``identity`` and ``utility``) and the list of
aligned 224-pixel RGB crops in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from face_iqa.faces.align import face_crop
from face_iqa.faces.clips import read_clips
from face_iqa.images import ImageError, load_image

__all__ = ["clip_faces", "image_faces", "labelled_faces", "run_faces", "set_scores"]


def image_faces(
    items: Sequence[str], detector, identities: str | None = None
) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Every detected face of the photos in ``items`` (files or folders); photos that fail
    to load are reported on stderr and skipped. ``identities``: a CSV of ``file`` (or
    ``path``) and ``identity`` naming each photo's main face; the largest face of a listed
    photo gets that ``identity``, every other face an empty one."""
    import sys

    from face_iqa.images import image_files

    named: dict[str, str] = {}
    if identities is not None:
        t = pd.read_csv(identities)
        col = "file" if "file" in t.columns else "path"
        if col not in t.columns or "identity" not in t.columns:
            raise ValueError(f"{identities}: needs 'file' (or 'path') and 'identity' columns")
        named = {Path(f).name: str(i) for f, i in zip(t[col], t["identity"].fillna("")) if str(i)}
    rows, crops = [], []
    for p in image_files(items):
        try:
            img = load_image(p)
        except (ImageError, ValueError) as e:
            print(f"{p}: skipped ({e})", file=sys.stderr)
            continue
        det = detector.detect([img])[0]
        sides = [min(b[2] - b[0], b[3] - b[1]) for b in det.boxes] if len(det) else []
        main = int(np.argmax(sides)) if sides else -1
        for k in range(len(det)):
            b = det.boxes[k]
            row = {
                "face": f"{p.name}#{k}",
                "source": str(p),
                "det_prob": float(det.probs[k]),
                "face_size": float(sides[k]),
            }
            if identities is not None:
                row["identity"] = named.get(p.name, "") if k == main else ""
            rows.append(row)
            crops.append(face_crop(img, b, det.landmarks[k]))
    return pd.DataFrame(rows), crops


def clip_faces(
    clips_csv: str,
    detector,
    recognizer,
    persons: Sequence[str] = (),
    min_gap: int = 10,
    per_identity: int = 30,
    seed: int = 0,
) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Sampled faces of one-person clips (``file``, ``person``), each with its ``identity``
    and a recognition ``utility``: its separation (:func:`face_iqa.learn.footage.separation`)
    between its genuine and impostor dlib distances, within this set."""
    from face_iqa.faces.clips import sample_video_faces
    from face_iqa.learn.footage import label_faces

    rows, crops, desc = [], [], []
    for person, path in read_clips(clips_csv, persons):
        f, cs = sample_video_faces(path, detector, min_gap, per_identity)
        for row, crop in zip(f.itertuples(), cs):
            try:
                d = recognizer.image_descriptor(crop)
            except RuntimeError:
                d = np.full(128, np.nan)
            rows.append(
                {
                    "face": f"{path.stem}#f{row.frame_index}",
                    "source": str(path),
                    "det_prob": float(row.det_prob),
                    "face_size": float(row.face_size),
                    "identity": person,
                }
            )
            crops.append(crop)
            desc.append(d)
    df = pd.DataFrame(rows)
    df["utility"] = np.nan
    if rows:
        ok = np.isfinite(np.stack(desc)).all(axis=1)
        if ok.sum() >= 2:
            sep, _, _, _ = label_faces(
                np.stack(desc)[ok],
                df.loc[ok, "identity"].to_numpy(),
                400,
                0.9,
                np.random.default_rng(seed),
            )
            df.loc[ok, "utility"] = sep
    return df, crops


def run_faces(run_dir: str) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """The faces of a ``faceiqa run`` output (``faces.parquet``, status ok), cut again from
    their sources (photos or video frames) with the manifest's boxes and landmarks."""
    import cv2

    path = Path(run_dir) / "faces.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a faceiqa run output (no faces.parquet)")
    faces = pd.read_parquet(path)
    faces = faces[faces["status"] == "ok"].reset_index(drop=True)
    crops: list[np.ndarray | None] = [None] * len(faces)
    for src, g in faces.groupby("source", sort=False):
        want = {int(i): list(sub.index) for i, sub in g.groupby("frame_index")}
        if Path(src).suffix.lower() in (".mp4", ".avi", ".mov", ".mkv", ".webm"):
            cap = cv2.VideoCapture(str(src))
            i, top = 0, max(want)
            while i <= top and cap.grab():
                if i in want:
                    ok, bgr = cap.retrieve()
                    if ok:
                        img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                        for j in want[i]:
                            crops[j] = face_crop(img, faces.at[j, "box"], faces.at[j, "landmarks"])
                i += 1
            cap.release()
        else:
            img = load_image(src)
            for j in g.index:
                crops[j] = face_crop(img, faces.at[j, "box"], faces.at[j, "landmarks"])
    have = [j for j, c in enumerate(crops) if c is not None]
    out = faces.loc[have].reset_index(drop=True)
    out["face"] = [
        f"{Path(s).name}#f{i}#{k}"
        for s, i, k in zip(out["source"], out["frame_index"], out["face_index"])
    ]
    return out[["face", "source", "det_prob", "face_size"]], [crops[j] for j in have]


def labelled_faces(labels: str) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """The crops of a labelled set (:func:`face_iqa.learn.label_sets.load_labelled`), its label as
    the ``utility``; no detector values (``det_prob`` and ``face_size`` are NaN)."""
    from face_iqa.learn.label_sets import load_labelled

    t = load_labelled(labels).table
    crops = [load_image(p) for p in t["path"]]
    df = pd.DataFrame(
        {
            "face": [Path(p).name for p in t["path"]],
            "source": t["path"],
            "det_prob": np.nan,
            "face_size": t["face_size"] if "face_size" in t.columns else np.nan,
            "identity": t["identity"],
            "utility": t["score"],
        }
    )
    return df, crops


def set_scores(measure: str, faces: pd.DataFrame, crops: list[np.ndarray], device: str):
    """Per-face scores of ``measure``: ``sharpness``, ``det_prob``, ``face_size``, ``default``
    (the embedded model) or a checkpoint path (ours or the authors' format)."""
    from face_iqa.faces.sharpness import sharpness

    if measure == "sharpness":
        return np.array([sharpness(c) for c in crops])
    if measure in ("det_prob", "face_size"):
        v = faces[measure].to_numpy(np.float64)
        if not np.isfinite(v).any():
            raise ValueError(f"{measure}: these faces carry no {measure} (a labelled set)")
        return v
    from face_iqa.model.scorer import ScorerConfig, build_scorer

    ckpt = None if measure == "default" else measure
    if ckpt is not None and not Path(ckpt).is_file():
        raise ValueError(
            f"{measure}: not a measure (default, sharpness, det_prob, face_size) nor a "
            "checkpoint file"
        )
    scorer = build_scorer(ScorerConfig(checkpoint=ckpt, device=device))
    return np.asarray(scorer(np.stack(crops)), np.float64)
