"""Sharpness of a face crop: the variance of its Laplacian, the classic focus measure and one
of the simple measures every quality model is compared with."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["sharpness"]


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey crop (the classic focus measure)."""
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())
