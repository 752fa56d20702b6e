"""Recognition on real footage: does the quality score find the faces a recogniser fails on,
and does it pick a person's best shot?

Identities come for free: a one-person clip is one identity (``clips.csv``: ``file``,
``person``), and in a multi-person video each face track is one; two tracks of one video
that overlap in time are two different people. Faces are sampled at least ``min_gap`` frames
apart, so that a genuine pair is not two near-identical frames. Genuine pairs: two faces of
one identity. Impostor pairs: faces of clips of different people, and faces of overlapping
tracks of one video (faces of tracks that never share a frame may be the same person, and a
clip's person may appear in a video: neither is paired).

Measures per face: the quality model (``hyperiqa``), MTCNN's probability, face size,
Laplacian sharpness, ``frontalness`` (from the landmarks: how centred the nose is between
the eyes and over the mouth, 1 for a frontal face, lower as the head turns), and a random
order. The EDC is :func:`face_iqa.judge.recognition.edc_table`'s. The best-shot measure: for
each identity, each measure's best face; a pick "matches" when it matches (descriptor
distance at most the FMR threshold) most of the identity's other sampled faces. Reported
beside each measure: a random pick (the share of an identity's faces that would match, on
average) and the best possible pick (any face matches).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from face_iqa.faces.clips import read_clips, sample_video_faces
from face_iqa.faces.pose import POSE_LEVELS
from face_iqa.judge.recognition import _COLOURS, edc_table, pauc, threshold_table

__all__ = [
    "FootageEvaluation",
    "evaluate_footage",
    "footage_faces",
    "VIDEO_MEASURES",
    "best_shot_table",
    "identity_table",
    "pauc_without",
    "plot_best_shot",
    "video_pairs",
]

VIDEO_MEASURES = ("hyperiqa", "det_prob", "face_size", "sharpness", "frontalness", "random")


def video_pairs(faces: pd.DataFrame, min_gap: int) -> pd.DataFrame:
    """Genuine and impostor pairs of ``faces`` (``path``, ``identity``, ``video``,
    ``frame_index``, ``kind``: ``clip`` or ``track``; for tracks ``first``/``last`` frame of
    the track). Genuine: one identity, at least ``min_gap`` frames apart. Impostor: two
    clips' faces of different identities, or two tracks of one video whose frame spans
    overlap. Returns ``a, b, same``."""
    f = faces.reset_index(drop=True)
    path = f["path"].to_numpy()
    ident = f["identity"].astype(str).to_numpy()
    video = f["video"].astype(str).to_numpy()
    frame = f["frame_index"].to_numpy(np.int64)
    kind = f["kind"].astype(str).to_numpy()
    first = f["first"].to_numpy(np.int64) if "first" in f else frame
    last = f["last"].to_numpy(np.int64) if "last" in f else frame
    ia, ib = np.triu_indices(len(f), k=1)
    same_id = ident[ia] == ident[ib]
    genuine = same_id & (np.abs(frame[ia] - frame[ib]) >= min_gap)
    clips = (kind[ia] == "clip") & (kind[ib] == "clip") & ~same_id
    overlap = (
        (kind[ia] == "track")
        & (kind[ib] == "track")
        & (video[ia] == video[ib])
        & ~same_id
        & (first[ia] <= last[ib])
        & (first[ib] <= last[ia])
    )
    keep = genuine | clips | overlap
    return pd.DataFrame({"a": path[ia[keep]], "b": path[ib[keep]], "same": genuine[keep]})


def best_shot_table(
    faces: pd.DataFrame,
    pairs: pd.DataFrame,
    threshold: float,
    measures: Sequence[str] = VIDEO_MEASURES,
) -> pd.DataFrame:
    """Per measure, the share of identities whose best face by that measure matches most of
    the identity's other faces (descriptor distance <= ``threshold``); plus ``random`` (a
    random face, expected share) and ``best_possible`` (some face matches). Identities with
    fewer than two faces in genuine pairs take no part. ``faces`` is indexed by ``path`` with
    ``identity``, ``descriptor`` and the measures; ``pairs`` as from :func:`video_pairs`.

    Returns one row per measure (then ``random_pick`` and ``best_possible``): ``measure``,
    ``matched`` (share of identities), ``match_rate`` (the finer view: the share of the
    identity's other faces the pick matches, averaged over identities) and ``identities``.
    """
    g = pairs[pairs["same"].astype(bool)]
    ok = {}
    for ident, grp in faces.groupby("identity"):
        paths = set(grp.index)
        gp = g[g["a"].isin(paths) & g["b"].isin(paths)]
        if gp.empty:
            continue
        members = sorted(set(gp["a"]) | set(gp["b"]))
        desc = np.stack(faces.loc[members, "descriptor"].to_numpy())
        dist = np.linalg.norm(desc[:, None] - desc[None], axis=2)
        partner = np.zeros_like(dist, bool)  # which pairs are genuine pairs (min gap)
        pos = {p: i for i, p in enumerate(members)}
        for a, b in zip(gp["a"], gp["b"]):
            partner[pos[a], pos[b]] = partner[pos[b], pos[a]] = True
        n_partner = partner.sum(1)
        share = np.where(
            n_partner > 0, ((dist <= threshold) & partner).sum(1) / np.maximum(n_partner, 1), 0
        )
        ok[ident] = (members, share)

    def mean(values) -> float:
        return float(np.mean(values)) if ok else np.nan

    rows = []
    for m in measures:
        picks = []
        for members, share in ok.values():
            q = faces.loc[members, m].to_numpy(np.float64)
            picks.append(share[int(np.argmax(q))])  # ties: the first face
        rows.append(
            {
                "measure": m,
                "matched": mean([p > 0.5 for p in picks]),
                "match_rate": mean(picks),
            }
        )
    shares = [s for _, s in ok.values()]
    rows.append(
        {
            "measure": "random_pick",
            "matched": mean([(s > 0.5).mean() for s in shares]),
            "match_rate": mean([s.mean() for s in shares]),
        }
    )
    rows.append(
        {
            "measure": "best_possible",
            "matched": mean([(s > 0.5).any() for s in shares]),
            "match_rate": mean([s.max() for s in shares]),
        }
    )
    out = pd.DataFrame(rows)
    out["identities"] = len(ok)
    return out


def plot_best_shot(best: pd.DataFrame, path: str | Path, title: str = "best shot") -> Path:
    """Draw :func:`best_shot_table`'s ``match_rate`` as a PNG: one bar per measure (best
    first), a dashed line at a random pick's and a solid one at the best possible pick's
    rate. Bars start at 0; the axis ends at 100 %."""
    rows = best[~best["measure"].isin(["random_pick", "best_possible"])]
    rows = rows.sort_values("match_rate", ascending=False)
    ref = best.set_index("measure")["match_rate"]
    w, m, bar = 720, 150, 28
    h = 112 + bar * len(rows)
    img = np.full((h, w, 3), 255, np.uint8)
    x0, x1 = m, w - 40

    def x(v: float) -> int:
        return int(round(x0 + (x1 - x0) * float(np.clip(v, 0.0, 1.0))))

    cv2.putText(img, f"{title}: share of the person's other faces matched", (10, 25), 0, 0.55, 0)
    for i, r in enumerate(rows.itertuples()):
        y = 50 + bar * i
        colour = _COLOURS.get(r.measure, (0, 0, 0))
        cv2.rectangle(img, (x0, y), (x(r.match_rate), y + bar - 8), colour, -1)
        cv2.putText(img, r.measure, (10, y + bar - 12), 0, 0.5, 0, 1, cv2.LINE_AA)
        label = f"{r.match_rate:.1%}"
        cv2.putText(img, label, (x(r.match_rate) + 4, y + bar - 12), 0, 0.45, 0, 1, cv2.LINE_AA)
    bottom = 50 + bar * len(rows)
    for name, dashed in (("random_pick", True), ("best_possible", False)):
        if name not in ref or not np.isfinite(ref[name]):
            continue
        xr = x(ref[name])
        for y in range(45, bottom, 8 if dashed else 1):
            cv2.line(img, (xr, y), (xr, y + (4 if dashed else 1)), (0, 0, 0), 1)
        cv2.putText(
            img, f"{name} {ref[name]:.1%}", (xr - 60, bottom + 18 + 16 * dashed), 0, 0.45, 0
        )
    for v in (0.0, 0.5, 1.0):
        cv2.putText(img, f"{v:.0%}", (x(v) - 12, h - 8), 0, 0.45, (90, 90, 90))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"{path}: cannot write the plot")
    return path


def identity_table(faces: pd.DataFrame, pairs: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Where the recogniser's failures are: per identity, its described faces, genuine pairs,
    failed genuine pairs (descriptor distance above ``threshold``), its FNMR and its share of
    all failed genuine pairs. A pooled EDC is a ranking of pairs across identities: when one
    identity holds most of the failures, the EDC mostly says whether a measure ranks that
    identity's faces below everyone else's. ``faces`` and ``pairs`` as for
    :func:`best_shot_table`. Rows: most failed pairs first (ties: by identity)."""
    g = pairs[pairs["same"].astype(bool)]
    g = g[g["a"].isin(faces.index) & g["b"].isin(faces.index)]
    ident = faces["identity"].astype(str)
    if g.empty:
        dist = np.zeros(0)
    else:
        da = np.stack(faces.loc[g["a"], "descriptor"].to_numpy())
        db = np.stack(faces.loc[g["b"], "descriptor"].to_numpy())
        dist = np.linalg.norm(da - db, axis=1)
    per = pd.DataFrame(
        {"identity": ident.loc[g["a"]].to_numpy(), "failed": dist > threshold}
    ).groupby("identity")["failed"]
    out = pd.DataFrame({"faces": ident.value_counts()})
    out["genuine_pairs"] = per.size().reindex(out.index).fillna(0).astype(int)
    out["failed_pairs"] = per.sum().reindex(out.index).fillna(0).astype(int)
    out["fnmr"] = out["failed_pairs"] / out["genuine_pairs"].where(out["genuine_pairs"] > 0)
    total = out["failed_pairs"].sum()
    out["share_of_failures"] = out["failed_pairs"] / total if total else 0.0
    out = out.rename_axis("identity").reset_index()
    return out.sort_values(["failed_pairs", "identity"], ascending=[False, True]).reset_index(
        drop=True
    )


def pauc_without(
    faces: pd.DataFrame,
    pairs: pd.DataFrame,
    identity: str,
    threshold: float,
    measures: Sequence[str],
) -> dict[str, float]:
    """Each measure's EDC pAUC with one identity's faces (and so its pairs) left out, at the
    same decision threshold: does the order of the measures hold without that person?
    ``faces`` with a ``path`` column, as for :func:`face_iqa.judge.recognition.edc_table`.
    Empty when no genuine or no impostor pair is left."""
    rest = faces[faces["identity"].astype(str) != str(identity)]
    kept = set(rest["path"])
    sub = pairs[pairs["a"].isin(kept) & pairs["b"].isin(kept)]
    try:
        table, _ = edc_table(rest, sub, measures=measures, threshold=threshold)
    except ValueError:  # nothing left to rank
        return {}
    return {m: pauc(table, m) for m in measures}


def track_video(video: str | Path, detector, cfg=None, stride: int = 1) -> pd.DataFrame:
    """Detect faces on every ``stride``-th frame of ``video`` and link them into tracks
    (:func:`face_iqa.faces.track.track_faces`, the pipeline's tracker). Returns one row per face:
    ``frame_index``, ``box``, ``landmarks``, ``det_prob``, ``track_id`` (``""`` for faces in
    no track), with ``first``/``last``, the frame span of the face's track."""
    from face_iqa.faces.track import (
        SIGNATURE_BINS,
        TrackerConfig,
        frame_signature,
        shot_starts,
        track_faces,
    )

    cfg = cfg or TrackerConfig()
    cap = cv2.VideoCapture(str(video))
    rows, pos, sigs, k = [], [], [], 0
    i = 0
    while cap.grab():
        if i % stride == 0:
            ok, bgr = cap.retrieve()
            if ok:
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                sigs.append(frame_signature(rgb))
                det = detector.detect([rgb])[0]
                for j in range(len(det)):
                    rows.append(
                        {
                            "frame_index": i,
                            "box": det.boxes[j].astype(float).tolist(),
                            "landmarks": det.landmarks[j].astype(float).tolist(),
                            "det_prob": float(det.probs[j]),
                        }
                    )
                    pos.append(k)
            else:
                sigs.append(np.full(SIGNATURE_BINS, np.nan, np.float32))
            k += 1
        i += 1
    cap.release()
    f = pd.DataFrame(rows, columns=["frame_index", "box", "landmarks", "det_prob"])
    if f.empty:
        f["track_id"] = pd.Series(dtype=str)
        f["first"] = f["last"] = pd.Series(dtype=np.int64)
        return f
    cuts = shot_starts(np.stack(sigs), cfg.cut_threshold)
    t = track_faces(np.asarray(pos), np.stack(f["box"]), np.stack(f["landmarks"]), cfg, cuts=cuts)
    stem = Path(video).stem
    f["track_id"] = [f"{stem}-t{x:03d}" if x >= 0 else "" for x in t]
    span = f[f["track_id"] != ""].groupby("track_id")["frame_index"].agg(["min", "max"])
    f["first"] = f["track_id"].map(span["min"]).fillna(-1).astype(np.int64)
    f["last"] = f["track_id"].map(span["max"]).fillna(-1).astype(np.int64)
    return f


def footage_faces(
    detector,
    scorers: dict,
    recognizer,
    clips: str | Path | None = None,
    persons: Sequence[str] = (),
    videos: Sequence[str | Path] = (),
    min_gap: int = 10,
    per_identity: int | None = None,
) -> pd.DataFrame:
    """The sampled faces of one-person ``clips`` (a ``clips.csv``, only ``persons`` when
    given) and of tracked ``videos``, one row each: :func:`sample_video_faces`'s columns plus
    ``identity`` (``person:NAME`` or the track), ``kind`` (``clip``/``track``), the track's
    ``first``/``last`` frame, a ``path`` key, each scorer's column, ``random``, the dlib
    ``descriptor`` and ``ok`` (dlib could place its shape)."""
    tables, crops = [], []
    if clips:
        for person, path in read_clips(clips, persons):
            f, c = sample_video_faces(path, detector, min_gap, per_identity)
            f["identity"], f["kind"] = f"person:{person}", "clip"
            f["first"] = f["last"] = -1
            tables.append(f)
            crops += c
    for v in videos:
        if not Path(v).is_file():
            raise ValueError(f"{v}: video does not exist")
        tracked = track_video(v, detector)
        f, c = sample_video_faces(v, detector, min_gap, per_identity, tracked)
        span = tracked.drop_duplicates("track_id").set_index("track_id")
        f["identity"], f["kind"] = f["track_id"], "track"
        f["first"] = f["track_id"].map(span["first"]).astype(int)
        f["last"] = f["track_id"].map(span["last"]).astype(int)
        tables.append(f)
        crops += c
    faces = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if faces.empty:
        raise ValueError("no faces found in the clips and videos")
    faces["path"] = [
        f"{v}#f{i:06d}#{t}"
        for v, i, t in zip(faces["video"], faces["frame_index"], faces["track_id"])
    ]
    stack = np.stack(crops)
    for name, score in scorers.items():
        faces[name] = score(stack)
    faces["random"] = np.random.default_rng(0).random(len(faces))
    desc, ok = [], []
    for crop in stack:
        try:
            desc.append(recognizer.image_descriptor(crop))
            ok.append(True)
        except RuntimeError:  # dlib could not place its shape on this crop
            desc.append(np.full(128, np.nan))
            ok.append(False)
    faces["descriptor"], faces["ok"] = desc, ok
    return faces


@dataclass
class FootageEvaluation:
    """What :func:`evaluate_footage` finds: the ``edc`` at ``threshold``, the ``best`` shot
    per measure, the failed genuine pairs per identity (``identities``), the
    ``min_frontalness`` levels (``pose``) and, when one identity holds over half of the
    failures, each measure's pAUC without it (``without``, else empty)."""

    faces: pd.DataFrame
    pairs: pd.DataFrame
    measures: tuple[str, ...]
    edc: pd.DataFrame
    threshold: float
    best: pd.DataFrame
    identities: pd.DataFrame
    pose: pd.DataFrame
    without: dict[str, float]

    def pauc(self) -> dict[str, float]:
        """Each measure's area under the EDC up to 30 % discarded."""
        return {m: pauc(self.edc, m) for m in self.measures}


def evaluate_footage(
    faces: pd.DataFrame,
    measures: Sequence[str] = VIDEO_MEASURES,
    min_gap: int = 10,
    fmr: float = 1e-2,
    threshold: float | None = None,
) -> FootageEvaluation:
    """The EDC and the best-shot measure on :func:`footage_faces`'s faces (see the module
    docstring); ``threshold`` is set from ``fmr`` when ``None``."""
    measures = tuple(measures)
    pairs = video_pairs(faces[faces["ok"]], min_gap)
    table, t = edc_table(faces, pairs, fmr=fmr, measures=measures, threshold=threshold)
    good = faces[faces["ok"]].set_index("path")
    best = best_shot_table(good, pairs, t, measures)
    ids = identity_table(good, pairs, t)
    pose = threshold_table(
        faces, pairs, t, POSE_LEVELS, measure="frontalness", rule="min_frontalness"
    )
    without = {}
    if len(ids) and ids.iloc[0].share_of_failures > 0.5:
        without = pauc_without(faces, pairs, ids.iloc[0].identity, t, measures)
    return FootageEvaluation(faces, pairs, measures, table, t, best, ids, pose, without)
