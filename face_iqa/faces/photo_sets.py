"""Identity photo sets (a CSV of photo and person, as a face dataset is): every face
candidate of every photo with its descriptor and simple measures, which candidate is the
labelled person's, and dlib's threshold at a false match rate over the people of a set.
Both the recognition evaluation (:mod:`face_iqa.judge.identities`) and the real-face
quality labels (:mod:`face_iqa.learn.photos`) start here.

Which face is the person's: every face the detector finds in a photo is a candidate; the
candidate whose descriptor lies nearest (median distance) to the person's faces in their
other photos is chosen, when that distance is at most ``agree``. A photo where no candidate
agrees is a *failure to acquire*. The first choice in each photo is its largest face; two
rounds of re-choosing each photo's face against the others' current choices settle it (the
median keeps a minority of wrong choices from pulling). A person with one photo keeps its
largest face. ``agree`` (0.7) is looser than dlib's same-person threshold (0.6), so a true
face that is hard to recognise stays in while another person's face (dlib's impostor
distances lie mostly above 0.75) goes.

Tight crops (a photo whose longer side is at most ``pad_below`` pixels, such as 112 px
aligned faces) get a border of half their size on each side before detection, as MTCNN
needs context around a face; boxes and crops are taken from the padded photo.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from face_iqa.faces.align import face_crop
from face_iqa.faces.exposure import face_exposure
from face_iqa.faces.pose import frontalness
from face_iqa.faces.sharpness import sharpness
from face_iqa.images import ImageError, load_image

__all__ = [
    "acquire_faces",
    "choose_faces",
    "impostor_threshold",
    "pad_tight",
    "read_identity_photos",
]


def read_identity_photos(path: str | Path) -> pd.DataFrame:
    """``path``, ``identity``, ``set`` of an identities CSV (``path`` or ``file`` column,
    relative to the CSV's folder; ``set`` is ``all`` where the file has none)."""
    t = pd.read_csv(path)
    col = "path" if "path" in t.columns else "file" if "file" in t.columns else None
    if col is None or "identity" not in t.columns:
        raise ValueError(f"{path}: needs 'path' (or 'file') and 'identity' columns")
    base = Path(path).parent
    out = pd.DataFrame(
        {
            "path": [str(p if Path(p).is_absolute() else base / p) for p in t[col]],
            "identity": t["identity"].astype(str),
            "set": t["set"].astype(str) if "set" in t.columns else "all",
        }
    )
    return out


def pad_tight(img: np.ndarray, pad_below: int = 256) -> np.ndarray:
    """``img`` with a border of half its size on each side (its mean colour) when its longer
    side is at most ``pad_below``; else ``img`` itself."""
    h, w = img.shape[:2]
    if max(h, w) > pad_below:
        return img
    colour = [float(c) for c in img.reshape(-1, 3).mean(0)]
    return cv2.copyMakeBorder(
        img, h // 2, h // 2, w // 2, w // 2, cv2.BORDER_CONSTANT, value=colour
    )


def acquire_faces(
    photos: pd.DataFrame,
    detector,
    recognizer,
    pad_below: int = 256,
    log: Callable[[str], None] | None = None,
) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Every face candidate of every photo: one row per candidate (``path``, ``identity``,
    ``set``, ``cand``, ``n_cands``, ``box``, ``landmarks``, ``det_prob``, ``face_size``,
    ``frontalness``, ``exposure``, ``sharpness``, ``descriptor``), plus one row with
    ``cand = -1`` and an ``error`` for a photo that fails to load or has no usable face; and
    the candidates' aligned crops (in row order, none for the ``-1`` rows). ``log`` hears
    how far it got every 250 photos."""
    rows, crops = [], []
    for n, r in enumerate(photos.itertuples(index=False)):
        if log is not None and n and n % 250 == 0:
            log(f"  {n} of {len(photos)} photos described")
        base = {"path": r.path, "identity": r.identity, "set": r.set}
        try:
            img = pad_tight(load_image(r.path), pad_below)
            det = detector.detect([img])[0]
        except (ImageError, ValueError) as e:
            rows.append({**base, "cand": -1, "n_cands": 0, "error": str(e)})
            continue
        found = []
        for k in range(len(det)):
            box, lm = det.boxes[k], det.landmarks[k]
            crop = face_crop(img, box, lm)
            try:
                desc = recognizer.image_descriptor(crop)
            except RuntimeError:  # dlib could not place its shape on this crop
                continue
            found.append(
                {
                    "box": np.asarray(box, float).tolist(),
                    "landmarks": np.asarray(lm, float).tolist(),
                    "det_prob": float(det.probs[k]),
                    "face_size": float(min(box[2] - box[0], box[3] - box[1])),
                    "frontalness": frontalness(lm),
                    "exposure": float(face_exposure(crop[None])[0]),
                    "sharpness": sharpness(crop),
                    "descriptor": desc,
                    "crop": crop,
                }
            )
        if not found:
            rows.append({**base, "cand": -1, "n_cands": 0, "error": f"{r.path}: no face found"})
            continue
        for k, f in enumerate(found):
            crops.append(f.pop("crop"))
            rows.append({**base, "cand": k, "n_cands": len(found), "error": "", **f})
    return pd.DataFrame(rows), crops


def choose_faces(cands: pd.DataFrame, agree: float = 0.7, rounds: int = 2) -> pd.Series:
    """Which candidate row is the labelled person's face in each photo (see the module
    docstring): a boolean Series over ``cands`` rows, ``True`` on the chosen face. The
    ``agreement`` column (median distance of each candidate to the person's chosen faces in
    the other photos; NaN for a person with one photo) is added to ``cands``."""
    chosen = pd.Series(False, index=cands.index)
    cands["agreement"] = np.nan
    usable = cands[cands["cand"] >= 0]
    for _, person in usable.groupby("identity", sort=False):
        by_photo = {p: g.index.to_numpy() for p, g in person.groupby("path", sort=False)}
        desc = {i: np.asarray(d, float) for i, d in zip(person.index, person["descriptor"])}
        size = person["face_size"]
        pick = {p: idx[int(np.argmax(size.loc[idx].to_numpy()))] for p, idx in by_photo.items()}
        if len(by_photo) < 2:
            chosen.loc[list(pick.values())] = True
            continue
        med: dict[int, float] = {}
        for _ in range(rounds):
            for p, idx in by_photo.items():
                others = np.stack([desc[pick[q]] for q in by_photo if q != p])
                for i in idx:
                    med[i] = float(np.median(np.linalg.norm(others - desc[i], axis=1)))
            pick = {p: idx[int(np.argmin([med[i] for i in idx]))] for p, idx in by_photo.items()}
        cands.loc[list(med), "agreement"] = pd.Series(med)
        chosen.loc[[i for i in pick.values() if med[i] <= agree]] = True
    return chosen


def impostor_threshold(desc: np.ndarray, identity: np.ndarray, fmr: float) -> float:
    """The largest distance threshold whose false match rate over all pairs of different
    identities stays at or below ``fmr`` (computed in blocks: no pair table is built)."""
    desc = np.asarray(desc, np.float32)
    codes = pd.factorize(np.asarray(identity))[0]
    n = len(desc)
    n_imp = int(n * (n - 1) // 2 - sum(c * (c - 1) // 2 for c in np.bincount(codes)))
    k = int(np.floor(fmr * n_imp))  # the (k+1)-th smallest impostor distance
    keep = max(k + 1, 1)
    smallest = np.zeros(0, np.float32)
    sq = (desc**2).sum(1)
    for s in range(0, n, 512):
        block = desc[s : s + 512]
        d2 = sq[s : s + 512, None] + sq[None] - 2 * block @ desc.T
        d = np.sqrt(np.maximum(d2, 0))
        rows = np.arange(s, s + len(block))[:, None]
        mask = (np.arange(n)[None] > rows) & (codes[None] != codes[rows])
        v = d[mask]
        if len(v) > keep:
            v = np.partition(v, keep - 1)[:keep]
        smallest = np.concatenate([smallest, v])
        if len(smallest) > keep:
            smallest = np.partition(smallest, keep - 1)[:keep]
    smallest = np.sort(smallest)
    if k < len(smallest):
        return float(smallest[k] - 1e-6)
    return float(smallest[-1]) if len(smallest) else float("nan")
