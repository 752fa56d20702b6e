"""Does the quality score predict recognition failures? The Error-versus-Discard
Characteristic (EDC, also ERC; ISO/IEC 29794-1, Grother and Tabassi).

Faces are compared with dlib's recogniser (descriptor distance). The decision threshold is
set once, from a target false match rate on all impostor pairs. Then, for each quality
measure, the genuine pairs are ordered by the lower of their two faces' qualities and the
lowest fraction is discarded (0 to 95 %); the false non-match rate of the rest is the EDC. A
measure that predicts recognition failures makes the FNMR fall fast: a small area under the
curve up to 30 % discarded (pAUC, lower is better).

Measures compared: the HyperIQA model, MTCNN's detection probability, face size, the
Laplacian-variance sharpness of the aligned crop, and a random order (the floor any measure
must beat).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from face_iqa.faces.align import align_face, crop_box, landmarks_plausible
from face_iqa.faces.sharpness import sharpness
from face_iqa.images import ImageError, load_image

__all__ = [
    "MEASURES",
    "PhotoEvaluation",
    "build_degraded_set",
    "described_genuine",
    "describe_faces",
    "edc_table",
    "evaluate_photos",
    "pairs_from_identities",
    "pauc",
    "plot_edc",
    "read_identities",
    "read_pairs",
    "threshold_table",
]

MEASURES = ("hyperiqa", "det_prob", "face_size", "sharpness", "random")
FRACTIONS = np.round(np.arange(0.0, 0.951, 0.05), 2)


def describe_faces(
    paths: Sequence[str | Path], detector, scorers, recognizer, seed: int = 0
) -> pd.DataFrame:
    """One row per image: its main (largest) face's measures and dlib descriptor.

    ``scorers``: ``{column: scorer}``, each model's scores in its own column (the model
    under test as ``hyperiqa``).

    Images without a face or that fail to load get ``ok=False`` and an ``error``; they take
    no part in comparisons (a recognition system would reject them too).
    """
    rng = np.random.default_rng(seed)
    rows, crops = [], []
    for p in paths:
        row = {"path": str(p), "ok": False, "error": ""}
        try:
            img = load_image(p)
            det = detector.detect([img])[0]
        except (ImageError, ValueError) as e:
            row["error"] = str(e)
            rows.append(row)
            continue
        if len(det) == 0:
            row["error"] = f"{p}: no face found"
            rows.append(row)
            continue
        sizes = np.minimum(det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1])
        k = int(np.argmax(sizes))
        if landmarks_plausible(det.boxes[k], det.landmarks[k]):
            crop = align_face(img, det.landmarks[k], 224)[0]
        else:
            crop = crop_box(img, det.boxes[k], 224)[0]
        try:
            desc = recognizer.image_descriptor(crop)
        except RuntimeError as e:
            row["error"] = f"{p}: no descriptor ({e})"
            rows.append(row)
            continue
        row.update(
            ok=True,
            det_prob=float(det.probs[k]),
            face_size=float(sizes[k]),
            sharpness=sharpness(crop),
            random=float(rng.random()),
            descriptor=desc,
        )
        rows.append(row)
        crops.append((len(rows) - 1, crop))
    df = pd.DataFrame(rows)
    for name in scorers:
        df[name] = np.nan
    if crops:
        rows_ok = [i for i, _ in crops]
        stack = np.stack([c for _, c in crops])
        for name, score in scorers.items():
            df.loc[rows_ok, name] = score(stack)
    return df


def pairs_from_identities(identities: pd.DataFrame) -> pd.DataFrame:
    """All pairs of ``path``s, ``same`` when their ``identity`` matches."""
    rows = [
        {"a": a.path, "b": b.path, "same": a.identity == b.identity}
        for a, b in itertools.combinations(identities.itertuples(index=False), 2)
    ]
    return pd.DataFrame(rows, columns=["a", "b", "same"])


def edc_table(
    faces: pd.DataFrame,
    pairs: pd.DataFrame,
    fmr: float = 0.01,
    measures: Sequence[str] = MEASURES,
    fractions: np.ndarray = FRACTIONS,
    threshold: float | None = None,
) -> tuple[pd.DataFrame, float]:
    """EDC of each measure: FNMR (rows: discarded fraction) and the distance threshold.

    The threshold is set at ``fmr`` on the impostor pairs unless given (a recogniser's
    operating point calibrated elsewhere). Pairs with a face that could not be described
    are left out.
    """
    f = faces[faces["ok"]].set_index("path")
    p = pairs[pairs["a"].isin(f.index) & pairs["b"].isin(f.index)].reset_index(drop=True)
    if p.empty or not p["same"].any() or p["same"].all():
        raise ValueError("need both genuine and impostor pairs of described faces")
    da = np.stack(f.loc[p["a"], "descriptor"].to_numpy())
    db = np.stack(f.loc[p["b"], "descriptor"].to_numpy())
    dist = np.linalg.norm(da - db, axis=1)
    same = p["same"].to_numpy(bool)
    impostor = np.sort(dist[~same])
    # the largest threshold whose false match rate stays at or below the target
    k = int(np.floor(fmr * len(impostor)))
    if threshold is None:
        threshold = float(impostor[k] - 1e-9) if k < len(impostor) else float(impostor[-1])
    gen_d = dist[same]
    table = {"discarded": fractions}
    for m in measures:
        qa = f.loc[p["a"], m].to_numpy(np.float64)[same]
        qb = f.loc[p["b"], m].to_numpy(np.float64)[same]
        order = np.argsort(np.minimum(qa, qb), kind="stable")  # worst pairs first
        fnmr = []
        for frac in fractions:
            kept = order[int(round(frac * len(order))) :]
            fnmr.append(float((gen_d[kept] > threshold).mean()) if len(kept) else 0.0)
        table[m] = fnmr
    return pd.DataFrame(table), threshold


def described_genuine(
    faces: pd.DataFrame, pairs: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The described faces (``ok``, indexed by ``path``) and the genuine pairs of two of
    them."""
    f = faces[faces["ok"]].set_index("path")
    g = pairs[pairs["same"].astype(bool) & pairs["a"].isin(f.index) & pairs["b"].isin(f.index)]
    return f, g


def threshold_table(
    faces: pd.DataFrame,
    pairs: pd.DataFrame,
    threshold: float,
    levels: Sequence[float] = (10.0, 20.0, 35.0, 50.0, 70.0),
    measure: str = "hyperiqa",
    rule: str = "min_quality",
) -> pd.DataFrame:
    """What a ``min_quality`` (or another rule on ``measure``, named ``rule``) means on this
    set: for each level, the share of described faces at or above it, the share of genuine
    pairs whose two faces both are, and the FNMR of those pairs at the fixed distance
    ``threshold`` (from :func:`edc_table`).

    Columns: ``rule`` (``min_quality`` unless told), ``faces_kept``,
    ``genuine_pairs_kept``, ``fnmr`` (NaN where no genuine pair is left).
    """
    f, g = described_genuine(faces, pairs)
    dist = np.linalg.norm(
        np.stack(f.loc[g["a"], "descriptor"].to_numpy())
        - np.stack(f.loc[g["b"], "descriptor"].to_numpy()),
        axis=1,
    )
    low = np.minimum(f.loc[g["a"], measure].to_numpy(float), f.loc[g["b"], measure].to_numpy(float))
    q = f[measure].to_numpy(float)
    rows = []
    for t in [0.0, *levels]:  # the first row: no rule (0 turns every rule off)
        kept = low >= t if t else np.ones(len(low), bool)
        rows.append(
            {
                rule: float(t),
                "faces_kept": float((q >= t).mean()) if t else 1.0,
                "genuine_pairs_kept": float(kept.mean()),
                "fnmr": float((dist[kept] > threshold).mean()) if kept.any() else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def pauc(table: pd.DataFrame, measure: str, upto: float = 0.3) -> float:
    """Area under the EDC from 0 to ``upto`` discarded (trapezoids); lower is better."""
    t = table[table["discarded"] <= upto + 1e-9]
    x, y = t["discarded"].to_numpy(), t[measure].to_numpy()
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


_COLOURS = {  # BGR
    "hyperiqa": (40, 40, 220),
    "det_prob": (200, 120, 0),
    "face_size": (30, 160, 30),
    "sharpness": (160, 40, 160),
    "random": (120, 120, 120),
    "frontalness": (0, 140, 255),
}


def plot_edc(table: pd.DataFrame, path: str | Path, title: str = "EDC") -> Path:
    """Draw the EDC curves (FNMR against the discarded fraction) as a PNG."""
    w, h, m = 720, 480, 60
    img = np.full((h, w, 3), 255, np.uint8)
    measures = [c for c in table.columns if c != "discarded"]
    ymax = max(float(table[measures].to_numpy().max()), 1e-3) * 1.1

    def xy(x: float, y: float) -> tuple[int, int]:
        return int(m + x / 0.95 * (w - 2 * m)), int(h - m - y / ymax * (h - 2 * m))

    cv2.rectangle(img, (m, m), (w - m, h - m), (0, 0, 0), 1)
    for x in (0.0, 0.3, 0.6, 0.9):
        cv2.putText(img, f"{x:.1f}", (xy(x, 0)[0] - 10, h - m + 20), 0, 0.45, (0, 0, 0), 1)
    cv2.line(img, xy(0.3, 0), xy(0.3, ymax), (200, 200, 200), 1)
    for y in np.linspace(0, ymax / 1.1, 4):
        cv2.putText(img, f"{y:.2f}", (8, xy(0, y)[1] + 5), 0, 0.45, (0, 0, 0), 1)
    cv2.putText(img, "fraction of genuine pairs discarded", (w // 2 - 140, h - 15), 0, 0.5, 0, 1)
    cv2.putText(img, f"{title}: FNMR", (m, m - 20), 0, 0.6, (0, 0, 0), 1)
    for i, name in enumerate(measures):
        colour = _COLOURS.get(name, (0, 0, 0))
        pts = np.array([xy(x, y) for x, y in zip(table["discarded"], table[name])], np.int32)
        cv2.polylines(img, [pts], False, colour, 2, cv2.LINE_AA)
        cv2.putText(img, name, (w - m - 120, m + 20 + 20 * i), 0, 0.5, colour, 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"{path}: cannot write the plot")
    return path


def build_degraded_set(
    photos: Sequence[tuple[str | Path, str]], out_dir: str | Path
) -> pd.DataFrame:
    """Each photo plus degraded copies (blur, noise, JPEG, downscale, under/over exposure,
    two strengths each), written to ``out_dir``; returns ``path, identity, photo`` (the
    source photo's index, shared by its copies)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i, (photo, identity) in enumerate(photos):
        img = load_image(photo)
        scale = max(img.shape[:2]) / 640.0  # severities in pixels of a 640 px image
        copies = {"clean": img}
        for s in (1.5, 4.0):
            copies[f"blur{s:g}"] = cv2.GaussianBlur(img, (0, 0), s * scale)
        for s in (20, 50):
            noisy = img.astype(np.float32) + rng.normal(0, s, img.shape)
            copies[f"noise{s}"] = np.clip(noisy, 0, 255).astype(np.uint8)
        for q in (15, 4):
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [1, q])
            copies[f"jpeg{q}"] = cv2.cvtColor(cv2.imdecode(buf, 1), cv2.COLOR_BGR2RGB)
        for f in (0.25, 0.1):
            hh, ww = img.shape[:2]
            small = cv2.resize(img, (max(8, int(ww * f)), max(8, int(hh * f))), cv2.INTER_AREA)
            copies[f"down{f:g}"] = cv2.resize(small, (ww, hh), interpolation=cv2.INTER_LINEAR)
        for g in (2.5, 0.3):
            lut = (255.0 * (np.arange(256) / 255.0) ** g).astype(np.uint8)
            copies[f"gamma{g:g}"] = lut[img]
        for name, arr in copies.items():
            p = out / f"{i:03d}_{name}.png"
            cv2.imwrite(str(p), cv2.cvtColor(arr, cv2.COLOR_RGB2BGR))
            rows.append({"path": str(p), "identity": identity, "photo": i})
    return pd.DataFrame(rows)


def _resolved(paths: pd.Series, base: Path) -> list[str]:
    return [str(p if Path(p).is_absolute() else base / p) for p in paths]


def read_identities(path: str | Path) -> pd.DataFrame:
    """``path, identity`` of an identities CSV, paths made absolute from the CSV's folder;
    a ``ValueError`` names the file when a column is missing."""
    ids = pd.read_csv(path)
    if not {"path", "identity"} <= set(ids.columns):
        raise ValueError(f"{path}: needs 'path' and 'identity' columns")
    ids["path"] = _resolved(ids["path"], Path(path).parent)
    return ids


def read_pairs(path: str | Path) -> pd.DataFrame:
    """``a, b, same`` of a pairs CSV, paths made absolute from the CSV's folder."""
    pairs = pd.read_csv(path)
    if not {"a", "b", "same"} <= set(pairs.columns):
        raise ValueError(f"{path}: needs 'a', 'b' and 'same' columns")
    for c in ("a", "b"):
        pairs[c] = _resolved(pairs[c], Path(path).parent)
    pairs["same"] = pairs["same"].astype(bool)
    return pairs


@dataclass
class PhotoEvaluation:
    """What :func:`evaluate_photos` finds. ``faces``: one row per image
    (:func:`describe_faces`); ``edc``: :func:`edc_table`'s; ``threshold``: the distance
    threshold used; ``pair_quality``: per genuine pair, each measure's lower quality;
    ``levels``: :func:`threshold_table` at the ``min_quality`` levels."""

    faces: pd.DataFrame
    pairs: pd.DataFrame
    measures: tuple[str, ...]
    edc: pd.DataFrame
    threshold: float
    pair_quality: pd.DataFrame
    levels: pd.DataFrame

    def pauc(self) -> dict[str, float]:
        """Each measure's area under the EDC up to 30 % discarded."""
        return {m: pauc(self.edc, m) for m in self.measures}


def evaluate_photos(
    paths: Sequence[str],
    pairs: pd.DataFrame,
    detector,
    scorers: dict,
    recognizer,
    fmr: float = 1e-3,
    threshold: float | None = None,
    levels: Sequence[float] = (10.0, 20.0, 35.0, 50.0, 70.0),
) -> PhotoEvaluation:
    """The EDC of every measure on photos: ``scorers`` (``{column: scorer}``, the model under
    test first) and the simple :data:`MEASURES`, over ``pairs`` (``a, b, same``) of
    ``paths``. ``threshold`` (a descriptor distance) is set from ``fmr`` when ``None``;
    ``levels``: the ``min_quality`` levels of the threshold table."""
    measures = (*MEASURES, *list(scorers)[1:])
    faces = describe_faces(paths, detector, scorers, recognizer)
    table, t = edc_table(faces, pairs, fmr=fmr, threshold=threshold, measures=measures)
    f, g = described_genuine(faces, pairs)
    pair_quality = pd.DataFrame(
        {m: np.minimum(f.loc[g["a"], m].to_numpy(), f.loc[g["b"], m].to_numpy()) for m in measures}
    )
    kept = threshold_table(faces, pairs, t, levels)
    return PhotoEvaluation(faces, pairs, measures, table, t, pair_quality, kept)
