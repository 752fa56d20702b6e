"""Labelled face quality sets: :func:`load_labelled` reads a CSV or Parquet file of ``path,
score`` (optional ``identity``, ``split``); scores in any range are normalised to [0, 100] and
the original range is recorded. Paths are face images (crops); relative ones are relative to
the file. :func:`assign_splits` splits by identity, :func:`cluster_identities` groups faces
into identities by their descriptors where none are given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["LabelledSet", "assign_splits", "cluster_identities", "load_labelled"]


@dataclass(frozen=True)
class LabelledSet:
    """A table with absolute ``path``, ``score`` in [0, 100], ``identity``, ``split`` and the
    original score range (``score_min``, ``score_max``) it was normalised from."""

    table: pd.DataFrame
    score_min: float
    score_max: float
    source: str


def load_labelled(path: str | os.PathLike[str]) -> LabelledSet:
    """Read a labelled set; raise ``ValueError`` naming the file on a bad table."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: labelled set not found")
    if p.suffix.lower() == ".parquet":
        t = pd.read_parquet(p)
    elif p.suffix.lower() == ".csv":
        t = pd.read_csv(p)
    else:
        raise ValueError(f"{p}: expected a .csv or .parquet file")
    for col in ("path", "score"):
        if col not in t.columns:
            raise ValueError(f"{p}: missing column {col!r} (has {list(t.columns)})")
    t = t.copy()
    t["score"] = pd.to_numeric(t["score"], errors="coerce")
    if t["score"].isna().any():
        bad = int(t["score"].isna().sum())
        raise ValueError(f"{p}: {bad} rows have a missing or non-numeric score")
    if len(t) < 2:
        raise ValueError(f"{p}: needs at least 2 rows")
    lo, hi = float(t["score"].min()), float(t["score"].max())
    if hi <= lo:
        raise ValueError(f"{p}: all scores are equal ({lo})")
    t["score"] = 100.0 * (t["score"] - lo) / (hi - lo)
    t["path"] = [str(q if Path(q).is_absolute() else (p.parent / q)) for q in t["path"]]
    if "identity" not in t.columns:
        t["identity"] = t["path"]  # no identities: every image is its own group
    t["identity"] = t["identity"].fillna("").astype(str)
    t.loc[t["identity"] == "", "identity"] = t.loc[t["identity"] == "", "path"]
    if "split" not in t.columns:
        t["split"] = ""
    t["split"] = t["split"].fillna("").astype(str)
    return LabelledSet(t, lo, hi, str(p))


def assign_splits(
    table: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int
) -> pd.DataFrame:
    """Fill empty ``split`` cells with train/val/test, grouped so that no group spans two
    splits. The group is the ``group`` column when present, else ``identity``. Rows that
    already carry a split keep it.

    Groups are dealt in a seeded random order to test, then val, while they fit within the
    split's target share; a group that does not fit goes to train, so a held-out split is
    never one oversized group.
    """
    t = table.copy()
    key = "group" if "group" in t.columns else "identity"
    todo = t["split"] == ""
    groups = sorted(t.loc[todo, key].astype(str).unique())
    rng = np.random.default_rng(seed)
    rng.shuffle(groups)
    sizes = t.loc[todo].groupby(t.loc[todo, key].astype(str)).size()
    total = float(sizes.sum())
    targets = {"test": test_fraction * total, "val": val_fraction * total}
    filled = {"test": 0.0, "val": 0.0}
    split_of: dict[str, str] = {}
    for g in groups:
        n = float(sizes[g])
        split_of[g] = "train"
        for name in ("test", "val"):
            if filled[name] + n <= targets[name]:
                split_of[g] = name
                filled[name] += n
                break
    t.loc[todo, "split"] = t.loc[todo, key].astype(str).map(split_of)
    return t


def cluster_identities(descriptors: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Group face descriptors into identities: single-linkage at ``threshold`` (dlib
    distance). Returns an ``int`` label per row, numbered in first-seen order."""
    n = len(descriptors)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if n:
        d = np.linalg.norm(descriptors[:, None, :] - descriptors[None, :, :], axis=2)
        for i, j in zip(*np.nonzero(np.triu(d < threshold, 1))):
            parent[find(i)] = find(j)
    roots = [find(i) for i in range(n)]
    first: dict[int, int] = {}
    return np.array([first.setdefault(r, len(first)) for r in roots], np.int64)
