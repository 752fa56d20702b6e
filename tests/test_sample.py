import cv2
import numpy as np
import pandas as pd

from face_iqa.sample import SAMPLE_SEGMENTS, make_sample_frames
from pipeline.sample_job import write_sample


def test_sample_is_deterministic_and_labelled():
    a, b = make_sample_frames(), make_sample_frames()
    assert len(a) == 6 * len(SAMPLE_SEGMENTS)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
    kinds = {f.degradation for f in a}
    assert kinds == {"clean", "blur", "noise", "dark", "occlusion"}
    assert all((f.severity == 0) == (f.degradation == "clean") for f in a)
    # a degraded frame really differs from its clean counterpart's statistics
    blur = [f for f in a if f.degradation == "blur"][-1].image
    clean = a[0].image
    assert cv2.Laplacian(blur, cv2.CV_64F).var() < 0.2 * cv2.Laplacian(clean, cv2.CV_64F).var()


def test_write_sample(tmp_path):
    paths = write_sample(tmp_path / "s")
    assert len(list(paths["frames"].glob("*.png"))) == 48
    cap = cv2.VideoCapture(str(paths["video"]))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 48
    labels = pd.read_parquet(paths["labels"])
    assert list(labels["frame_index"]) == list(range(48))
