"""Find the detector's false detections (prints, hands, clothing, background) in one-person
clips and multi-person videos, for checking by eye.

In a one-person clip every detection of a sampled frame is compared with the clip's robust
centre (the person); one farther than ``--distance`` is a candidate, and so is every
detection of a frame but the one nearest the person (a printed skull can come within the
distance: the recogniser is not made for non-faces). In a multi-person video
a detection is a candidate when it matches no detection of any other sampled frame (a real
person is seen again; a flicker on the background is not) or when MTCNN is unsure of it.
Candidates go to ``candidates.csv`` (source, frame_index, box, det_prob, distance) and to a
contact sheet ``sheet.png`` (numbered as the rows), so a person can confirm each.

``--check FIXTURE`` instead scores the confirmed ones (``source, frame_index, x0, y0, x1,
y1, what``; sources relative to ``--data``) beside the real faces of the same source: in a
clip the detection of each frame nearest the clip's person, when within ``--distance``; in
a video every face the recogniser finds again in another sampled frame (a real person is
seen again).

    python -m bench.nonfaces --clips CLIPS.csv [MORE.csv] --videos V.mp4 ... --out DIR
    python -m bench.nonfaces --check tests/fixtures/nonfaces.csv --data DATA [--checkpoint CKPT]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from face_iqa.faces.clips import read_clips, sample_video_faces
from face_iqa.faces.identity import robust_centre


def _described(path, detector, recognizer, min_gap):
    faces, crops = sample_video_faces(path, detector, min_gap, None, every_face=True)
    keep, desc, kept = [], [], []
    for k, crop in enumerate(crops):
        try:
            desc.append(recognizer.image_descriptor(crop))
        except RuntimeError:
            continue
        keep.append(k)
        kept.append(crop)
    return faces.iloc[keep].reset_index(drop=True), np.array(desc), kept


def mine(clips: list[str], videos: list[str], min_gap: int, distance: float, log=print):
    from face_iqa.faces.detect import DetectorConfig, build_detector
    from face_iqa.faces.recognizer import DlibRecognizer

    detector = build_detector(DetectorConfig(device="cpu", max_side=1280))
    recognizer = DlibRecognizer()
    rows, sheet = [], []
    sources = [(p, "clip") for f in clips for _, p in read_clips(f)]
    sources += [(Path(v), "video") for v in videos]
    for path, kind in sources:
        faces, desc, crops = _described(path, detector, recognizer, min_gap)
        if not len(faces):
            continue
        if kind == "clip":
            centre, _ = robust_centre(desc)
            dist = np.linalg.norm(desc - centre, axis=1)
            cand = dist > distance
            frame = faces["frame_index"].to_numpy()
            for fi in np.unique(frame):  # a frame's second detection is not the person
                idx = np.flatnonzero(frame == fi)
                cand[idx[idx != idx[int(np.argmin(dist[idx]))]]] = True
        else:
            frame = faces["frame_index"].to_numpy()
            d = np.linalg.norm(desc[:, None] - desc[None], axis=2)
            d[frame[:, None] == frame[None]] = np.inf
            dist = d.min(axis=1)
            cand = (dist > distance) | (faces["det_prob"].to_numpy() < 0.9)
        for k in np.flatnonzero(cand):
            rows.append(
                {
                    "source": str(path),
                    "kind": kind,
                    "frame_index": int(faces.at[k, "frame_index"]),
                    "box": [round(float(v), 1) for v in faces.at[k, "box"]],
                    "det_prob": float(faces.at[k, "det_prob"]),
                    "face_size": float(faces.at[k, "face_size"]),
                    "distance": float(dist[k]),
                }
            )
            sheet.append(crops[k])
        log(f"{path.name}: {len(faces)} detections, {int(cand.sum())} candidates")
    return pd.DataFrame(rows), sheet


def _iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area if area > 0 else 0.0


def check(fixture, data, scorer, detector, recognizer, min_gap=5, distance=0.7) -> pd.DataFrame:
    """Every sampled detection of the fixture's sources with ``kind`` (``nonface``, ``face``
    or ``other``: neither listed nor a real face by the rule above) and ``score``. A
    ``ValueError`` names a listed false detection the detector no longer finds."""
    listed = pd.read_csv(fixture)
    out = []
    for source, want in listed.groupby("source", sort=False):
        path = Path(data) / source
        faces, crops = sample_video_faces(path, detector, min_gap, None, every_face=True)
        desc = []
        for crop in crops:
            try:
                desc.append(recognizer.image_descriptor(crop))
            except RuntimeError:
                desc.append(np.full(128, np.nan))
        desc = np.array(desc)
        frame = faces["frame_index"].to_numpy()
        kind = np.array(["other"] * len(faces), dtype=object)
        if source.startswith("clips/"):
            ok = np.isfinite(desc).all(axis=1)
            centre, _ = robust_centre(desc[ok])
            dist = np.nan_to_num(np.linalg.norm(desc - centre, axis=1), nan=np.inf)
            for fi in np.unique(frame):  # one person: at most one of a frame's detections
                idx = np.flatnonzero(frame == fi)
                best = idx[int(np.argmin(dist[idx]))]
                if dist[best] <= distance:
                    kind[best] = "face"
        else:
            d = np.linalg.norm(desc[:, None] - desc[None], axis=2)
            d[frame[:, None] == frame[None]] = np.inf
            kind[np.nan_to_num(d, nan=np.inf).min(axis=1) <= 0.6] = "face"
        for w in want.itertuples():
            box = (w.x0, w.y0, w.x1, w.y1)
            hit = [
                k
                for k in np.flatnonzero(frame == w.frame_index)
                if _iou(faces.at[k, "box"], box) > 0.7
            ]
            if not hit:
                raise ValueError(
                    f"{fixture}: {source} frame {w.frame_index}: {w.what} not detected"
                )
            kind[hit] = "nonface"
        scores = scorer(np.stack(crops)) if crops else np.zeros(0)
        t = faces[["frame_index", "face_size", "det_prob"]].copy()
        t.insert(0, "source", source)
        t["kind"], t["score"] = kind, scores
        out.append(t)
    return pd.concat(out, ignore_index=True)


def kept_strangers(run_dir, recognizer, distance: float = 0.7) -> pd.DataFrame:
    """The faces of a ``faceiqa run`` over one-person clips, each with its dlib distance to
    its clip's robust centre (``stranger`` when farther than ``distance``: a false detection
    or another person) and whether the run kept it."""
    from face_iqa.faces.align import face_crop

    faces = pd.read_parquet(Path(run_dir) / "faces.parquet")
    faces = faces[faces["status"] == "ok"].reset_index(drop=True)
    out = []
    for source, g in faces.groupby("source", sort=False):
        cap = cv2.VideoCapture(str(source))
        want = set(g["frame_index"])
        frames, i = {}, 0
        while cap.grab():
            if i in want:
                frames[i] = cv2.cvtColor(cap.retrieve()[1], cv2.COLOR_BGR2RGB)
            i += 1
        cap.release()
        desc = []
        for r in g.itertuples():
            lm = np.array([np.asarray(p, float) for p in r.landmarks])
            crop = face_crop(frames[r.frame_index], np.asarray(r.box, float), lm)
            try:
                desc.append(recognizer.image_descriptor(crop))
            except RuntimeError:
                desc.append(np.full(128, np.nan))
        desc = np.array(desc)
        ok = np.isfinite(desc).all(axis=1)
        centre, _ = robust_centre(desc[ok])
        t = g[["source", "frame_index", "face_size", "quality", "keep"]].copy()
        t["distance"] = np.linalg.norm(desc - centre, axis=1)
        t["stranger"] = ~(t["distance"] <= distance)
        out.append(t)
    return pd.concat(out, ignore_index=True)


def contact_sheet(crops: list[np.ndarray], cols: int = 10, side: int = 112) -> np.ndarray:
    rows = max(1, -(-len(crops) // cols))
    out = np.full((rows * (side + 16), cols * side, 3), 255, np.uint8)
    for i, c in enumerate(crops):
        r, q = divmod(i, cols)
        y, x = r * (side + 16), q * side
        out[y + 16 : y + 16 + side, x : x + side] = cv2.resize(c, (side, side))
        cv2.putText(out, str(i), (x + 2, y + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", nargs="*", default=[])
    ap.add_argument("--videos", nargs="*", default=[])
    ap.add_argument("--min-gap", type=int, default=5)
    ap.add_argument("--distance", type=float, default=0.7)
    ap.add_argument("--out")
    ap.add_argument("--check", help="a fixture of confirmed false detections to score")
    ap.add_argument("--data", help="the folder the fixture's sources are relative to")
    ap.add_argument("--checkpoint", default=None, help="model (default: the shipped one)")
    ap.add_argument("--run", help="a faceiqa run over one-person clips: its kept strangers")
    a = ap.parse_args(argv)
    if a.run:
        from face_iqa.faces.recognizer import DlibRecognizer

        t = kept_strangers(a.run, DlibRecognizer(), a.distance)
        for source, g in t.groupby("source", sort=False):
            s, k = g["stranger"], g["keep"]
            print(
                f"{Path(source).name}: {len(g)} faces, {int(s.sum())} far from the person "
                f"({int((s & k).sum())} kept); the person's {int((~s).sum())} ({int((~s & k).sum())} kept)"
            )
        print(f"kept far from the person: {int((t['stranger'] & t['keep']).sum())}")
        return 0
    if a.check:
        from face_iqa.faces.detect import DetectorConfig, build_detector
        from face_iqa.faces.recognizer import DlibRecognizer
        from face_iqa.model.scorer import ScorerConfig, build_scorer

        scorer = build_scorer(ScorerConfig(checkpoint=a.checkpoint, device="cpu"))
        det = build_detector(DetectorConfig(device="cpu", max_side=1280))
        t = check(a.check, a.data, scorer, det, DlibRecognizer(), a.min_gap, a.distance)
        for source, g in t.groupby("source", sort=False):
            nf, fc = g[g["kind"] == "nonface"], g[g["kind"] == "face"]
            print(
                f"{source}: non-faces {len(nf)} scored max {nf['score'].max():.1f}; real faces "
                f"{len(fc)} scored min {fc['score'].min():.1f} (below the top non-face: "
                f"{int((fc['score'] <= nf['score'].max()).sum())})"
            )
        if a.out:
            Path(a.out).mkdir(parents=True, exist_ok=True)
            t.to_csv(Path(a.out) / "nonface_scores.csv", index=False)
        return 0
    if not a.out:
        ap.error("--out is needed to mine candidates")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    table, crops = mine(a.clips, a.videos, a.min_gap, a.distance)
    table.to_csv(out / "candidates.csv")
    if crops:
        cv2.imwrite(str(out / "sheet.png"), cv2.cvtColor(contact_sheet(crops), cv2.COLOR_RGB2BGR))
    print(f"{len(table)} candidates -> {out}/candidates.csv, sheet.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
