"""Recognition on identity photo sets (a CSV of photo and person, as a face dataset is):
the labelled person's face in every photo, the EDC per set and pooled with a bootstrap over
people, the failures per person, and the best photo of each person.

How the person's face is chosen in each photo, and what a failure to acquire is:
:mod:`face_iqa.faces.photo_sets`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from face_iqa.faces.photo_sets import (
    acquire_faces,
    choose_faces,
    impostor_threshold,
    pad_tight,
    read_identity_photos,
)
from face_iqa.judge.recognition import FRACTIONS, pauc
from face_iqa.judge.video import best_shot_table, identity_table

__all__ = [
    "PHOTO_MEASURES",
    "IdentityEvaluation",
    "acquire_faces",
    "beats_share",
    "bootstrap_pauc",
    "choose_faces",
    "evaluate_identities",
    "genuine_pairs",
    "impostor_threshold",
    "pad_tight",
    "read_identity_photos",
]

PHOTO_MEASURES = (
    "hyperiqa",
    "face_size",
    "sharpness",
    "det_prob",
    "frontalness",
    "exposure",
    "random",
)


def genuine_pairs(faces: pd.DataFrame) -> pd.DataFrame:
    """``a, b, same`` (all ``True``) over the ``path``s of each identity of ``faces``."""
    rows = []
    for _, g in faces.groupby("identity", sort=False):
        p = g["path"].to_numpy()
        i, j = np.triu_indices(len(p), 1)
        rows.append(pd.DataFrame({"a": p[i], "b": p[j]}))
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame({"a": [], "b": []})
    out["same"] = True
    return out


def _edc_rows(low: np.ndarray, fail: np.ndarray, w: np.ndarray, fractions) -> np.ndarray:
    """FNMR after discarding each fraction of the (weighted) genuine pairs with the lowest
    ``low``; weights ``w`` (a bootstrap's identity counts) of shape (R, P)."""
    order = np.argsort(low, kind="stable")
    w = w[:, order]
    f = fail[order].astype(float)
    cw = np.cumsum(w, axis=1)
    total = cw[:, -1:]
    cf = np.cumsum(w * f, axis=1)
    out = []
    for frac in fractions:
        cut = frac * total  # weight discarded
        k = np.array([np.searchsorted(c, t, side="right") for c, t in zip(cw, cut[:, 0])])
        gone_w = np.where(k > 0, cw[np.arange(len(k)), np.maximum(k - 1, 0)], 0.0)
        gone_f = np.where(k > 0, cf[np.arange(len(k)), np.maximum(k - 1, 0)], 0.0)
        left = total[:, 0] - gone_w
        out.append(np.where(left > 0, (cf[:, -1] - gone_f) / np.maximum(left, 1e-12), 0.0))
    return np.stack(out, axis=1)


def bootstrap_pauc(
    faces: pd.DataFrame,
    pairs: pd.DataFrame,
    threshold: float,
    measures: Sequence[str],
    n: int = 200,
    seed: int = 0,
    upto: float = 0.3,
    by: str = "identity",
) -> pd.DataFrame:
    """pAUC (0 to ``upto`` discarded) of each measure in ``n`` resamples of the groups
    ``faces[by]`` (drawn with replacement): one row per resample, one column per measure.
    A pair within one group counts once per draw of it (a person drawn twice brings all its
    genuine pairs twice); a pair across two groups drawn ``k`` and ``l`` times counts ``k *
    l`` times (``by`` a source photo whose damaged copies are compared with the person's
    other photos). ``faces`` indexed by ``path`` with ``by``, ``descriptor`` and the
    measures; ``pairs`` the genuine pairs."""
    ga = faces.loc[pairs["a"], by].to_numpy()
    gb = faces.loc[pairs["b"], by].to_numpy()
    uniq, codes = np.unique(np.concatenate([ga, gb]), return_inverse=True)
    ca, cb = codes[: len(ga)], codes[len(ga) :]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(uniq), (n, len(uniq)))
    counts = np.stack([np.bincount(d, minlength=len(uniq)) for d in draws]).astype(float)
    w = np.where(ca == cb, counts[:, ca], counts[:, ca] * counts[:, cb])
    da = np.stack(faces.loc[pairs["a"], "descriptor"].to_numpy())
    db = np.stack(faces.loc[pairs["b"], "descriptor"].to_numpy())
    fail = np.linalg.norm(da - db, axis=1) > threshold
    fr = FRACTIONS[FRACTIONS <= upto + 1e-9]
    out = {}
    for m in measures:
        low = np.minimum(
            faces.loc[pairs["a"], m].to_numpy(float), faces.loc[pairs["b"], m].to_numpy(float)
        )
        curves = _edc_rows(low, fail, w, fr)
        out[m] = np.trapezoid(curves, fr, axis=1)
    return pd.DataFrame(out)


def beats_share(boot: pd.DataFrame, model: str, others: Sequence[str]) -> float:
    """Share of the resamples of :func:`bootstrap_pauc` in which ``model``'s pAUC is below
    every one of ``others``."""
    return float((boot[model].to_numpy() < boot[list(others)].min(axis=1).to_numpy()).mean())


@dataclass
class IdentityEvaluation:
    """What :func:`evaluate_identities` finds, per set and pooled (``set`` ``pooled``):
    ``acquired`` (photos, faces chosen, failures to acquire and why), ``edc`` (long table:
    ``set``, ``discarded`` and one column per measure), ``pauc`` (per set and measure, with
    the bootstrap's share of resamples where the model beats the best other measure),
    ``thresholds`` (the distance threshold per set), ``identities`` (failed genuine pairs per
    person) and ``best_photo`` (each measure's best photo per person); ``pairs`` and
    ``pair_quality`` (each measure's lower quality of each genuine pair) are the pooled
    set's."""

    faces: pd.DataFrame
    pairs: pd.DataFrame
    pair_quality: pd.DataFrame
    acquired: pd.DataFrame
    edc: pd.DataFrame
    pauc: pd.DataFrame
    thresholds: dict[str, float]
    identities: pd.DataFrame
    best_photo: pd.DataFrame


def evaluate_identities(
    faces: pd.DataFrame,
    measures: Sequence[str] = PHOTO_MEASURES,
    fmr: float = 1e-3,
    bootstrap: int = 200,
    model: str = "hyperiqa",
    threshold: float | None = None,
    rivals: Sequence[str] | None = None,
) -> IdentityEvaluation:
    """The EDC, bootstrap, failures and best photo of chosen faces (one row per photo,
    ``ok`` where a face was acquired; :func:`photo_faces`), per ``set`` and pooled. Each
    set's distance threshold is set at ``fmr`` on its own impostor pairs (every pair of
    photos of two people), unless ``threshold`` is given. ``beats_best_other`` compares
    ``model`` with the best of ``rivals`` in each resample (default: every other measure;
    the command passes the simple measures, so a compared model is not a rival)."""
    measures = tuple(measures)
    good = faces[faces["ok"]].copy()
    sets = ["pooled", *sorted(good["set"].unique())] if good["set"].nunique() > 1 else ["pooled"]
    edcs, paucs, thresholds, ident_tabs, best_tabs = [], [], {}, [], []
    pooled_pairs, pair_quality = pd.DataFrame(columns=["a", "b", "same"]), pd.DataFrame()
    for s in sets:
        sub = good if s == "pooled" else good[good["set"] == s]
        t = threshold
        if t is None:
            t = impostor_threshold(
                np.stack(sub["descriptor"].to_numpy()), sub["identity"].to_numpy(), fmr
            )
        thresholds[s] = t
        pairs = genuine_pairs(sub)
        if pairs.empty:
            continue
        f = sub.set_index("path")
        da = np.stack(f.loc[pairs["a"], "descriptor"].to_numpy())
        db = np.stack(f.loc[pairs["b"], "descriptor"].to_numpy())
        fail = np.linalg.norm(da - db, axis=1) > t
        table = {"set": s, "discarded": FRACTIONS}
        one = np.ones((1, len(pairs)))
        if s == "pooled":
            pooled_pairs = pairs
            pair_quality = pd.DataFrame(
                {
                    m: np.minimum(
                        f.loc[pairs["a"], m].to_numpy(float), f.loc[pairs["b"], m].to_numpy(float)
                    )
                    for m in measures
                }
            )
        for m in measures:
            low = np.minimum(
                f.loc[pairs["a"], m].to_numpy(float), f.loc[pairs["b"], m].to_numpy(float)
            )
            table[m] = _edc_rows(low, fail, one, FRACTIONS)[0]
        edc = pd.DataFrame(table)
        edcs.append(edc)
        boot = bootstrap_pauc(f, pairs, t, measures, n=bootstrap) if bootstrap else None
        others = [m for m in (measures if rivals is None else rivals) if m != model]
        for m in measures:
            row = {
                "set": s,
                "measure": m,
                "pauc": pauc(edc, m),
                "genuine_pairs": len(pairs),
                "fnmr": float(fail.mean()),
                "threshold": t,
            }
            if boot is not None and m == model and others:
                row["beats_best_other"] = beats_share(boot, m, others)
            paucs.append(row)
        it = identity_table(f, pairs, t)
        it.insert(0, "set", s)
        ident_tabs.append(it)
        bt = best_shot_table(f, pairs, t, measures)
        bt.insert(0, "set", s)
        best_tabs.append(bt)
    acquired = _acquired_table(faces, sets)
    return IdentityEvaluation(
        faces=faces,
        pairs=pooled_pairs,
        pair_quality=pair_quality,
        acquired=acquired,
        edc=pd.concat(edcs, ignore_index=True) if edcs else pd.DataFrame(),
        pauc=pd.DataFrame(paucs),
        thresholds=thresholds,
        identities=pd.concat(ident_tabs, ignore_index=True) if ident_tabs else pd.DataFrame(),
        best_photo=pd.concat(best_tabs, ignore_index=True) if best_tabs else pd.DataFrame(),
    )


def _acquired_table(faces: pd.DataFrame, sets: list[str]) -> pd.DataFrame:
    rows = []
    for s in sets:
        sub = faces if s == "pooled" else faces[faces["set"] == s]
        rows.append(
            {
                "set": s,
                "photos": len(sub),
                "people": sub["identity"].nunique(),
                "acquired": int(sub["ok"].sum()),
                "no_face": int((sub["why"] == "no face").sum()),
                "no_agreement": int((sub["why"] == "no agreement").sum()),
                "unreadable": int((sub["why"] == "unreadable").sum()),
            }
        )
    return pd.DataFrame(rows)


def photo_faces(
    cands: pd.DataFrame, crops: list[np.ndarray], chosen: pd.Series, scorers: dict, seed: int = 0
) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """One row per photo: the chosen face's measures and each scorer's score (``ok``), or
    ``ok=False`` with ``why`` (``unreadable``, ``no face``, ``no agreement``); and the
    chosen faces' crops, in the order of the ``ok`` rows."""
    crop_of = dict(zip(cands.index[cands["cand"] >= 0], crops))
    rows, kept = [], []
    for _, g in cands.groupby("path", sort=False):
        pick = g[chosen.loc[g.index]]
        first = g.iloc[0]
        if len(pick):
            r = pick.iloc[0].to_dict()
            r.update(ok=True, why="")
            kept.append(crop_of[pick.index[0]])
        else:
            r = {k: first[k] for k in ("path", "identity", "set", "n_cands", "error")}
            bad_file = first["cand"] < 0 and "no face" not in str(first["error"])
            why = "unreadable" if bad_file else "no face" if first["cand"] < 0 else "no agreement"
            r.update(ok=False, why=why)
        rows.append(r)
    faces = pd.DataFrame(rows)
    faces["random"] = np.random.default_rng(seed).random(len(faces))
    ok = faces.index[faces["ok"]]
    for name, score in scorers.items():
        faces[name] = np.nan
        if kept:
            faces.loc[ok, name] = score(np.stack(kept))
    return faces, kept
