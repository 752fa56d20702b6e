import cv2
import numpy as np
import pytest

from face_iqa.faces.align import align_face
from face_iqa.faces.exposure import INNER_FACE, face_exposure
from face_iqa.images import load_image
from tests.conftest import shared_path
from workers.threshold import ThresholdConfig


def test_exposure_reads_the_inner_face_highlights_not_the_mean():
    crops = np.zeros((3, 224, 224, 3), np.uint8)
    crops[0] = 120  # flat grey
    x0, y0, x1, y1 = (round(v * 224) for v in INNER_FACE)
    # dark skin (mean luma ~40) with well-lit highlights on a tenth of the inner face
    crops[1] = 30
    crops[1, y0 : y0 + (y1 - y0) // 10, x0:x1] = 150
    # a bright border (hair, background, the crop's fill) around an under-exposed face
    crops[2] = 250
    crops[2, y0:y1, x0:x1] = 20
    e = face_exposure(crops)
    assert e.dtype == np.float32 and e.shape == (3,)
    np.testing.assert_allclose(e, [120.0, 150.0, 20.0], atol=0.5)
    assert crops[1, y0:y1, x0:x1].mean() < 50  # a mean-luma rule would reject this face
    # luma weights: pure green is brighter than pure blue
    g, b = np.zeros((2, 1, 112, 112, 3), np.uint8)
    g[..., 1], b[..., 2] = 200, 200
    assert face_exposure(g)[0] > face_exposure(b)[0]
    with pytest.raises(ValueError, match="uint8"):
        face_exposure(np.zeros((1, 8, 8, 3), np.float32))


@pytest.mark.parametrize("percentile", [95.0, 50.0, 0.0, 100.0, 33.3])
def test_exposure_is_the_percentile_of_8_bit_luma(percentile):
    """The histogram reading equals ``np.percentile`` of the crops' 8-bit luma, and lies
    within half a level of the percentile of unrounded BT.601 luma."""
    import cv2

    rng = np.random.default_rng(int(percentile))
    crops = rng.integers(0, 256, (4, 112, 96, 3), np.uint8)
    crops[1] = crops[1] // 8 + 20  # a narrow, dark histogram
    h, w = crops.shape[1:3]
    x0, y0, x1, y1 = INNER_FACE
    inner = crops[:, round(y0 * h) : round(y1 * h), round(x0 * w) : round(x1 * w)]
    grey = np.stack([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in inner])
    got = face_exposure(crops, percentile)
    np.testing.assert_allclose(
        got, np.percentile(grey.reshape(4, -1), percentile, axis=1), atol=1e-4
    )
    luma = inner.reshape(4, -1, 3).astype(np.float64) @ [0.299, 0.587, 0.114]
    np.testing.assert_allclose(got, np.percentile(luma, percentile, axis=1), atol=0.5 + 1e-4)


def test_well_lit_shared_photos_pass_the_default_exposure_rule(faces_csv, detector):
    """Every face in the shared photos (studio and press portraits, a group photo, a
    resolution ladder) is lit well enough for the default ``min_exposure``; a strongly
    dimmed copy of each (a fifth of the light, gamma 2.25) is not."""
    floor = ThresholdConfig().min_exposure
    seen = 0
    for row in faces_csv:
        if not row["file"].lower().endswith((".jpg", ".jpeg", ".png")):
            continue
        img = load_image(shared_path(row["file"]))
        det = detector.detect([img])[0]
        if not len(det):
            continue
        crops = np.stack([align_face(img, lm, 224)[0] for lm in det.landmarks])
        assert face_exposure(crops).min() >= floor + 10, row["file"]
        dim = (255.0 * (crops / 255.0) ** 2.25 * 0.2).astype(np.uint8)
        assert face_exposure(dim).max() < floor, row["file"]
        seen += len(crops)
    assert seen >= 30


def test_dark_skin_in_dim_light_is_not_under_exposed(detector):
    """The shared Hamilton clip: an audience in dim light, darker skin among it. Faces
    split in two well-separated groups: the unrecognisable dark ones far below the default
    floor, every other face clearly above it (no face near the floor)."""
    floor = ThresholdConfig().min_exposure
    cap = cv2.VideoCapture(str(shared_path("videos", "short_hamilton_clip.mp4")))
    values, k = [], 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if k % 10 == 0:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            det = detector.detect([rgb])[0]
            if len(det):
                crops = np.stack([align_face(rgb, lm, 224)[0] for lm in det.landmarks])
                values += face_exposure(crops).tolist()
        k += 1
    cap.release()
    v = np.array(values)
    assert len(v) >= 40
    assert ((v > floor - 15) & (v < floor + 10)).sum() == 0, np.sort(v)[:10]
    assert 0 < (v < floor).sum() <= 0.1 * len(v)
