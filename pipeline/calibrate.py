"""``faceiqa calibrate``: propose quality thresholds from scores a run (or a scorer) produced.

Three ways to choose:

- a target discard rate: the ``min_quality`` below which that fraction of faces falls (the
  threshold sits halfway between two observed scores, so re-running the same inputs discards
  the fraction as closely as the number of faces allows);
- a target FNMR on a labelled set: from ``faceiqa eval-recognition``'s output, the smallest
  discarded fraction of genuine pairs at which the model's EDC reaches the target, turned into
  the quality of the pair at that point;
- per-source quantiles: ``policy: quantile`` and the per-source thresholds it implies.

Each writes a YAML snippet that ``faceiqa run --config`` accepts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

__all__ = ["for_discard", "for_fnmr", "load_scores", "per_source", "write_snippet"]


def load_scores(run: str | os.PathLike[str] | None, scores: str | os.PathLike[str] | None):
    """Face rows with a finite ``quality``: a run folder's ``faces.parquet``, or a Parquet/CSV
    score table (``faceiqa score`` output, or any table with a ``quality`` column)."""
    if (run is None) == (scores is None):
        raise ValueError("give one of --run DIR or --scores FILE")
    path = Path(run) / "faces.parquet" if run is not None else Path(scores)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    df = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    if "quality" not in df.columns:
        raise ValueError(f"{path}: no 'quality' column")
    if "status" in df.columns:
        df = df[df["status"] == "ok"]
    df = df[np.isfinite(df["quality"].to_numpy(np.float64))]
    if df.empty:
        raise ValueError(f"{path}: no scored faces")
    return df


def for_discard(quality: np.ndarray, rate: float) -> float:
    """A ``min_quality`` that rejects ``rate`` of these faces (as nearly as their count and
    ties allow)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"discard rate must be in [0, 1), got {rate}")
    q = np.sort(np.asarray(quality, np.float64))
    k = int(round(rate * len(q)))
    if k == 0:
        return float(np.floor(q[0] * 100) / 100)
    return float((q[k - 1] + q[k]) / 2) if k < len(q) else float(q[-1] + 1e-3)


def for_fnmr(edc_dir: str | os.PathLike[str], target: float) -> tuple[float, float]:
    """``(min_quality, discarded fraction)`` at which the model's EDC reaches ``target`` FNMR,
    from an ``eval-recognition`` output folder (``edc.csv``, ``pair_quality.csv``)."""
    d = Path(edc_dir)
    table = pd.read_csv(d / "edc.csv")
    pq = pd.read_csv(d / "pair_quality.csv")["hyperiqa"].to_numpy(np.float64)
    ok = table[table["hyperiqa"] <= target]
    if ok.empty:
        raise ValueError(
            f"the model's FNMR never reaches {target} (lowest "
            f"{table['hyperiqa'].min():.3f} at up to {table['discarded'].max():.0%} discarded)"
        )
    frac = float(ok["discarded"].iloc[0])
    return for_discard(pq, frac), frac


def per_source(df: pd.DataFrame, quantile: float) -> pd.DataFrame:
    """The threshold each source would get under ``policy: quantile``."""
    if "source" not in df.columns:
        raise ValueError("per-source thresholds need a 'source' column (use --run)")
    return (
        df.groupby("source")["quality"]
        .quantile(quantile)
        .rename("threshold")
        .reset_index()
        .sort_values("source")
    )


def write_snippet(threshold: dict[str, Any], path: str | os.PathLike[str], note: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump({"threshold": threshold}, sort_keys=False)
    path.write_text(f"# {note}\n{body}")
    return path
