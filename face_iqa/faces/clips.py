"""Faces from one-person clips and from videos: the ``clips.csv`` reader and the sampler of a
video's faces (at least ``min_gap`` frames apart, per clip or per face track) that both the
footage labels and the footage evaluation use."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from face_iqa.faces.align import face_crop
from face_iqa.faces.pose import frontalness
from face_iqa.faces.sharpness import sharpness

__all__ = ["read_clips", "sample_video_faces"]


def read_clips(
    clips_csv: str | Path, persons: Sequence[str] = (), exclude: Sequence[str] = ()
) -> list[tuple[str, Path]]:
    """``(person, clip path)`` of a ``clips.csv`` (``file``, ``person``; files relative to
    it), only ``persons`` when given, without ``exclude``; a ``ValueError`` names the file
    for missing columns, unknown persons or a missing clip."""
    clips = pd.read_csv(clips_csv)
    if not {"file", "person"} <= set(clips.columns):
        raise ValueError(f"{clips_csv}: needs 'file' and 'person' columns")
    who = clips["person"].astype(str)
    unknown = (set(persons) | set(exclude)) - set(who)
    if unknown:
        raise ValueError(f"{clips_csv}: unknown persons {sorted(unknown)}")
    keep = ~who.isin(exclude) & (who.isin(persons) if persons else True)
    base = Path(clips_csv).parent
    out = []
    for person, f in zip(who[keep], clips.loc[keep, "file"]):
        path = Path(f) if Path(f).is_absolute() else base / f
        if not path.is_file():
            raise ValueError(f"{clips_csv}: {path} does not exist")
        out.append((person, path))
    return out


def sample_video_faces(
    video: str | Path,
    detector,
    min_gap: int,
    max_faces: int | None = None,
    tracks: pd.DataFrame | None = None,
    every_face: bool = False,
) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Faces of ``video`` at least ``min_gap`` frames apart, with their aligned crops.

    Without ``tracks`` (a one-person clip): the largest face of every ``min_gap``-th frame
    (at most ``max_faces``, spread over the clip); with ``every_face``, every face the
    detector finds in those frames, largest first (``cand`` numbers them). With ``tracks`` (the pipeline's face rows
    of this video: ``frame_index``, ``box``, ``landmarks``, ``det_prob``, ``track_id``): per
    track, faces at least ``min_gap`` frames apart (at most ``max_faces`` a track).

    Returns one row per face (``video``, ``frame_index``, ``track_id`` or ``""``, ``box``,
    ``landmarks``, ``det_prob``, ``face_size``, ``frontalness``, ``sharpness``) and the crops.
    """
    cap = cv2.VideoCapture(str(video))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    want: dict[int, list[tuple[str, np.ndarray | None, np.ndarray | None, float]]] = {}
    if tracks is None:
        frames = _spread(list(range(0, max(n, 1), max(1, min_gap))), max_faces)
        want = {i: [("", None, None, np.nan)] for i in frames}
    else:
        t = tracks[tracks["track_id"].astype(str) != ""].sort_values("frame_index")
        for tid, g in t.groupby("track_id"):
            picks, last = [], -(10**9)
            for r in g.itertuples():
                if r.frame_index - last >= min_gap:
                    picks.append(r)
                    last = r.frame_index
            for r in _spread(picks, max_faces):
                want.setdefault(int(r.frame_index), []).append(
                    (str(tid), np.asarray(r.box, float), np.asarray(r.landmarks, float), r.det_prob)
                )
    rows, crops = [], []
    i, top = 0, max(want) if want else -1
    while i <= top and cap.grab():
        if i in want:
            ok, bgr = cap.retrieve()
            if ok:
                img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                for tid, box, lm, prob in want[i]:
                    found = [(box, lm, prob)]
                    if box is None:  # a clip: detect, take the largest face (or all)
                        det = detector.detect([img])[0]
                        if len(det) == 0:
                            continue
                        sides = np.minimum(
                            det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1]
                        )
                        order = np.argsort(-sides, kind="stable")
                        order = order if every_face else order[:1]
                        found = [
                            (det.boxes[k], det.landmarks[k], float(det.probs[k])) for k in order
                        ]
                    for cand, (box, lm, prob) in enumerate(found):
                        crop = face_crop(img, box, lm)
                        rows.append(
                            {
                                "video": str(video),
                                "frame_index": i,
                                "track_id": tid,
                                "cand": cand,
                                "box": np.asarray(box, float).tolist(),
                                "landmarks": np.asarray(lm, float).tolist(),
                                "det_prob": float(prob),
                                "face_size": float(min(box[2] - box[0], box[3] - box[1])),
                                "frontalness": frontalness(lm),
                                "sharpness": sharpness(crop),
                            }
                        )
                        crops.append(crop)
        i += 1
    cap.release()
    return pd.DataFrame(rows), crops


def _spread(items: list, k: int | None) -> list:
    """At most ``k`` of ``items``, evenly spread (all when ``k`` is None)."""
    if k is None or len(items) <= k:
        return list(items)
    step = len(items) / k
    return [items[int(j * step)] for j in range(k)]
