"""Agreement between predicted quality and labels: SRCC, PLCC, KRCC, RMSE."""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["iqa_metrics"]


def iqa_metrics(pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Spearman (SRCC), Pearson (PLCC) and Kendall (KRCC) correlations and the RMSE of
    ``pred`` against ``label``. Correlations are NaN when either side is constant."""
    p = np.asarray(pred, np.float64).ravel()
    y = np.asarray(label, np.float64).ravel()
    if p.shape != y.shape or len(p) < 2:
        raise ValueError(f"need two equal-length vectors of >= 2 values, got {p.shape}, {y.shape}")
    rmse = float(np.sqrt(np.mean((p - y) ** 2)))
    if np.ptp(p) == 0 or np.ptp(y) == 0:
        return {"srcc": float("nan"), "plcc": float("nan"), "krcc": float("nan"), "rmse": rmse}
    return {
        "srcc": float(stats.spearmanr(p, y).statistic),
        "plcc": float(stats.pearsonr(p, y).statistic),
        "krcc": float(stats.kendalltau(p, y).statistic),
        "rmse": rmse,
    }
