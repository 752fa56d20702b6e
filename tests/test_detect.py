import numpy as np
import pandas as pd
import pytest
from PIL import Image

from face_iqa.faces.detect import Detections, DetectorConfig, build_detector
from face_iqa.images import load_image
from pipeline.cli import main
from tests.conftest import shared_path
from tests.util import match_boxes


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory, faces_csv):
    """`faceiqa detect` over every shared image, once for the module."""
    out = tmp_path_factory.mktemp("detect") / "faces.parquet"
    images = shared_path("images")
    assert (
        main(
            [
                "detect",
                str(images),
                "--out",
                str(out),
                "--quiet",
                "--set",
                "detect.detector.device=cpu",
            ]
        )
        == 0
    )
    return pd.read_parquet(out)


@pytest.fixture(scope="module")
def reference_mtcnn():
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, device="cpu")


@pytest.mark.slow
def test_cli_counts_and_boxes_match_facenet(shared_run, faces_csv, reference_mtcnn):
    assert set(shared_run["status"]) == {"ok"}
    for row in faces_csv:
        path = shared_path(row["file"])
        ours = shared_run[shared_run["source"] == str(path)]
        assert len(ours) == int(row["mtcnn_faces"]), row["file"]
        ref_boxes, ref_probs = reference_mtcnn.detect(Image.open(path).convert("RGB"))
        ref_boxes = np.asarray(ref_boxes, float).reshape(-1, 4)
        our_boxes = np.stack(ours["box"].map(lambda b: np.asarray(b, float)).to_list())
        pairs = match_boxes(our_boxes, ref_boxes)
        assert len(pairs) == len(ref_boxes) == len(our_boxes), row["file"]
        assert min(v for _, _, v in pairs) >= 0.99, (row["file"], pairs)
        # probabilities come out sorted, highest first
        assert (np.diff(ours["det_prob"].to_numpy()) <= 0).all()


def test_detections_schema(detector):
    img = load_image(shared_path("images", "two_people.jpg"))
    det = detector.detect([img])[0]
    assert isinstance(det, Detections) and len(det) == 2
    assert det.boxes.dtype == np.float32 and det.boxes.shape == (2, 4)
    assert det.probs.dtype == np.float32 and det.probs.shape == (2,)
    assert det.landmarks.dtype == np.float32 and det.landmarks.shape == (2, 5, 2)
    assert ((det.probs > 0.7) & (det.probs <= 1.0)).all()
    # landmarks of each face lie near its box
    for b, lm in zip(det.boxes, det.landmarks):
        assert (lm[:, 0] > b[0] - 5).all() and (lm[:, 0] < b[2] + 5).all()


def test_mixed_sizes_batch_equals_one_by_one(detector):
    names = ["obama-240p.jpg", "two_people.jpg", "obama-480p.jpg", "obama_small.jpg"]
    imgs = [load_image(shared_path("images", n)) for n in names]
    imgs.append(imgs[0].copy())  # two frames of one size share a batch
    together = detector.detect(imgs)
    for img, det in zip(imgs, together):
        alone = detector.detect([img])[0]
        assert len(alone) == len(det)
        np.testing.assert_allclose(alone.boxes, det.boxes, atol=1e-3)


def test_downscale_maps_boxes_back_to_full_resolution(detector):
    img = load_image(shared_path("images", "obama-1080p.jpg"))
    full = detector.detect([img])[0]
    small_det = build_detector(DetectorConfig(device="cpu", max_side=640))
    small = small_det.detect([img])[0]
    assert len(full) == len(small) == 1
    pairs = match_boxes(full.boxes, small.boxes)
    assert pairs[0][2] > 0.85
    assert np.abs(full.landmarks[0] - small.landmarks[0]).max() < 0.03 * img.shape[1]


@pytest.mark.parametrize("shape", [(1, 1, 3), (5, 9, 3), (11, 300, 3)])
def test_too_small_for_a_face_gives_zero_faces(detector, shape):
    det = detector.detect([np.full(shape, 128, np.uint8)])[0]
    assert len(det) == 0 and det.boxes.shape == (0, 4) and det.landmarks.shape == (0, 5, 2)


def test_blank_frame_has_no_face(detector):
    assert len(detector.detect([np.zeros((240, 320, 3), np.uint8)])[0]) == 0


def test_rejects_non_rgb_uint8(detector):
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        detector.detect([np.zeros((100, 100), np.uint8)])
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        detector.detect([np.zeros((100, 100, 3), np.float32)])


def test_config_validation():
    with pytest.raises(ValueError, match="factor"):
        DetectorConfig(factor=1.5)
    with pytest.raises(ValueError, match="thresholds"):
        DetectorConfig(thresholds=(0.6, 0.7))
