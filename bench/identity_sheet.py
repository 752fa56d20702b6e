"""A contact sheet of the faces a run with identities flagged as another person: per person,
its three kept faces nearest its centre (green) and each flagged face (red) with its
distance, so the flags can be checked by eye.

    python -m bench.identity_sheet RUN_DIR --out sheet.png [--reason "another person"]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from face_iqa.images import load_image

SIDE = 96


def _face(src: str, box) -> np.ndarray:
    img = load_image(src)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    m = int(0.15 * max(x2 - x1, y2 - y1))
    h, w = img.shape[:2]
    c = img[max(0, y1 - m) : min(h, y2 + m), max(0, x1 - m) : min(w, x2 + m)]
    return cv2.resize(c, (SIDE, SIDE), interpolation=cv2.INTER_AREA)


def _tile(img: np.ndarray, colour, text: str) -> np.ndarray:
    t = np.full((SIDE + 22, SIDE + 6, 3), 255, np.uint8)
    t[: SIDE + 6] = colour
    t[3 : SIDE + 3, 3 : SIDE + 3] = img
    cv2.putText(t, text, (3, SIDE + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    return t


def sheet(run: Path, reason: str = "another person") -> tuple[np.ndarray, pd.DataFrame]:
    faces = pd.read_parquet(run / "faces.parquet")
    faces = faces[faces["face_index"] >= 0]
    flagged = faces[faces["reason"].astype(str).str.startswith(reason)]
    rows, listed = [], []
    for ident, g in flagged.groupby("identity", sort=True):
        ref = faces[(faces["identity"] == ident) & faces["keep"]].nsmallest(3, "identity_distance")
        tiles = [
            _tile(_face(r.source, r.box), (40, 170, 40), f"{r.identity_distance:.2f}")
            for r in ref.itertuples()
        ]
        tiles.append(np.full((SIDE + 22, 12, 3), 255, np.uint8))
        for r in g.itertuples():
            tiles.append(_tile(_face(r.source, r.box), (210, 50, 50), f"{r.identity_distance:.2f}"))
            listed.append({"identity": ident, "source": r.source, "distance": r.identity_distance})
        row = np.concatenate(tiles, axis=1)
        label = np.full((18, row.shape[1], 3), 255, np.uint8)
        cv2.putText(label, str(ident), (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
        rows.append(np.concatenate([label, row], axis=0))
    if not rows:
        return np.full((20, 200, 3), 255, np.uint8), pd.DataFrame(listed)
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, axis=0), pd.DataFrame(listed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--reason", default="another person")
    args = ap.parse_args()
    img, listed = sheet(args.run, args.reason)
    cv2.imwrite(str(args.out), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    listed.to_csv(args.out.with_suffix(".csv"), index=False)
    print(
        f"{len(listed)} faces of {listed['identity'].nunique() if len(listed) else 0} people -> {args.out}"
    )


if __name__ == "__main__":
    main()
