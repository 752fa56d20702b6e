import numpy as np
import pytest

from face_iqa.faces.detect import DetectorConfig
from face_iqa.faces.track import frame_signature
from face_iqa.images import load_image
from face_iqa.schema import FACE_COLUMNS, check_batch
from tests.conftest import shared_path
from workers.detect import DetectStage, DetectStageConfig


@pytest.fixture(scope="module")
def stage():
    return DetectStage(DetectStageConfig(detector=DetectorConfig(device="cpu"), crop_size=112))


def test_rows_for_faces_faceless_and_failed_frames(stage):
    two = load_image(shared_path("images", "two_people.jpg"))
    frames = np.empty(4, dtype=object)
    frames[:] = [two, np.zeros((200, 300, 3), np.uint8), None, np.zeros((50, 50), np.float32)]
    batch = {
        "source": np.array(["a.jpg", "blank.png", "broken.mp4", "weird.png"]),
        "frame_index": np.array([0, 3, 7, 1]),
        "frame": frames,
        "status": np.array(["ok", "ok", "error", "ok"]),
        "error": np.array(["", "", "broken.mp4: cannot decode frame 7", ""]),
    }
    out = stage(batch)
    n = check_batch(out, [c for c in FACE_COLUMNS if c != "timestamp_s"] + ["timestamp_s"], "t")
    assert n == 2 + 1 + 1 + 1  # two faces, one faceless row, two error rows
    assert list(out["source"]) == ["a.jpg", "a.jpg", "blank.png", "broken.mp4", "weird.png"]
    assert list(out["status"]) == ["ok", "ok", "no_face", "error", "error"]
    assert list(out["face_index"]) == [0, 1, -1, -1, -1]
    assert out["error"][3] == "broken.mp4: cannot decode frame 7"
    assert "weird.png" in out["error"][4] and "uint8 HxWx3" in out["error"][4]
    assert out["crop"].shape == (5, 112, 112, 3) and out["crop"].dtype == np.uint8
    assert out["crop"][:2].mean() > 30 and out["crop"][2:].max() == 0
    assert np.isnan(out["box"][2:]).all() and np.isfinite(out["box"][:2]).all()
    assert (out["face_size"][:2] > 20).all()
    assert set(out["align"][:2]) <= {"landmarks", "box"}
    assert (out["frame_width"][:2] == two.shape[1]).all()
    # each row carries its frame's signature for the tracker's cuts; failed frames none
    np.testing.assert_array_equal(out["frame_sig"][0], frame_signature(two))
    np.testing.assert_array_equal(out["frame_sig"][1], out["frame_sig"][0])
    np.testing.assert_array_equal(out["frame_sig"][2], frame_signature(frames[1]))
    assert np.isnan(out["frame_sig"][3:]).all()


def test_dense_frame_array_and_empty_batch(stage):
    img = load_image(shared_path("images", "obama-240p.jpg"))
    dense = np.stack([img, img])
    out = stage({"source": np.array(["v", "v"]), "frame_index": np.array([0, 1]), "frame": dense})
    assert list(out["frame_index"]) == [0, 1] and list(out["status"]) == ["ok", "ok"]
    np.testing.assert_array_equal(out["crop"][0], out["crop"][1])
    empty = stage(
        {
            "source": np.array([], str),
            "frame_index": np.array([], np.int64),
            "frame": np.empty(0, object),
        }
    )
    assert len(empty["status"]) == 0 and empty["crop"].shape == (0, 112, 112, 3)
    assert empty["frame_sig"].shape[0] == 0


def test_box_alignment_mode():
    st = DetectStage(DetectStageConfig(detector=DetectorConfig(device="cpu"), align="box"))
    img = load_image(shared_path("images", "obama-240p.jpg"))
    out = st({"source": np.array(["x"]), "frame_index": np.array([0]), "frame": np.stack([img])})
    assert list(out["align"]) == ["box"] and out["crop"].shape == (1, 224, 224, 3)


def test_missing_column_is_named(stage):
    with pytest.raises(ValueError, match="frame_index"):
        stage({"source": np.array(["x"]), "frame": np.zeros((1, 10, 10, 3), np.uint8)})
