"""Candidate near-duplicates already present in an identity photo set, for checking by eye.

The cleaning benchmark (:mod:`bench.clean_bench`) injects copies and counts them as the
duplicates to find; a scraped set already holds some of its own (one photo cropped twice, a
framed copy, two shots of one moment), which the injected truth does not know. This lists,
within each person, the pairs of photos whose largest faces' dlib descriptors lie within
``--distance`` or whose whole-image perceptual hashes differ in at most ``--hamming`` bits,
and draws them side by side. The pairs confirmed by eye go to ``source_duplicates.csv``.

    python -m bench.source_duplicates --photos-csv ../data/photos_wild/identities.csv \\
        --out runs/source_duplicates
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from face_iqa.faces.identity import hamming64, phash64


def describe(paths: list[str]) -> pd.DataFrame:
    """Each photo's whole-image hash and its largest face's descriptor (None without one)."""
    from face_iqa import DetectorConfig, build_detector, load_image
    from face_iqa.faces.align import face_crop
    from face_iqa.faces.recognizer import DlibRecognizer

    det = build_detector(DetectorConfig(max_side=1280))
    rec = DlibRecognizer()
    rows = []
    for p in paths:
        img = load_image(p)
        desc = None
        d = det.detect([img])[0]
        if len(d):
            k = int(np.argmax((d.boxes[:, 2] - d.boxes[:, 0]) * (d.boxes[:, 3] - d.boxes[:, 1])))
            try:
                desc = rec.image_descriptor(face_crop(img, d.boxes[k], d.landmarks[k]))
            except RuntimeError:
                pass
        rows.append({"path": p, "phash": phash64(img), "descriptor": desc})
    return pd.DataFrame(rows)


def candidates(photos: pd.DataFrame, distance: float, hamming: int) -> pd.DataFrame:
    """Pairs of one person's photos (``photos``: ``file``, ``identity``, ``phash``,
    ``descriptor``) within ``distance`` or ``hamming``."""
    out = []
    for person, g in photos.groupby("identity", sort=True):
        g = g.reset_index(drop=True)
        for i in range(len(g)):
            for j in range(i + 1, len(g)):
                a, b = g.loc[i], g.loc[j]
                bits = int(hamming64(a["phash"], b["phash"]))
                dist = (
                    float(np.linalg.norm(np.asarray(a["descriptor"]) - b["descriptor"]))
                    if a["descriptor"] is not None and b["descriptor"] is not None
                    else np.nan
                )
                if bits <= hamming or dist <= distance:
                    out.append(
                        {
                            "a": a["file"],
                            "b": b["file"],
                            "identity": person,
                            "hamming": bits,
                            "distance": dist,
                        }
                    )
    return pd.DataFrame(out, columns=["a", "b", "identity", "hamming", "distance"])


def sheet(pairs: pd.DataFrame, root: Path, side: int = 160) -> np.ndarray:
    """The pairs side by side, one row each, numbered as in the table."""
    rows = []
    for r in pairs.itertuples():
        tiles = []
        for f in (r.a, r.b):
            img = cv2.imread(str(root / f))
            h, w = img.shape[:2]
            s = side / max(h, w)
            img = cv2.resize(img, (max(1, int(w * s)), max(1, int(h * s))))
            tile = np.full((side, side, 3), 255, np.uint8)
            tile[: img.shape[0], : img.shape[1]] = img
            tiles.append(tile)
        row = np.hstack([tiles[0], np.full((side, 4, 3), 255, np.uint8), tiles[1]])
        label = f"{r.Index} {r.hamming}b {r.distance:.2f}"
        cv2.putText(row, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 255), 1)
        rows.append(np.vstack([row, np.full((4, row.shape[1], 3), 255, np.uint8)]))
    return np.vstack(rows) if rows else np.full((side, side, 3), 255, np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos-csv", type=Path, required=True)
    ap.add_argument("--set", default="celeba")
    ap.add_argument("--distance", type=float, default=0.2)
    ap.add_argument("--hamming", type=int, default=12)
    ap.add_argument("--out", type=Path, default=Path("runs/source_duplicates"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t = pd.read_csv(args.photos_csv)
    t = t[t["set"] == args.set] if args.set else t
    root = args.photos_csv.parent
    cache = args.out / "described.parquet"
    if cache.is_file():
        d = pd.read_parquet(cache)
        d["descriptor"] = [None if x is None else np.asarray(x) for x in d["descriptor"]]
    else:
        d = describe([str(root / f) for f in t["file"]])
        d.to_parquet(cache, index=False)
    t = t.assign(phash=d["phash"].to_numpy(), descriptor=d["descriptor"].to_list())
    pairs = candidates(t, args.distance, args.hamming)
    pairs.to_csv(args.out / "candidates.csv", index=False)
    for k in range(0, len(pairs), 25):
        cv2.imwrite(str(args.out / f"sheet_{k // 25:02d}.png"), sheet(pairs.iloc[k : k + 25], root))
    print(f"{len(pairs)} candidate pairs among {len(t)} photos: {args.out / 'candidates.csv'}")


if __name__ == "__main__":
    main()
