"""Off-face crops around real faces as training non-faces (face_iqa.learn.context)."""

import numpy as np
import pandas as pd
import pytest

from face_iqa.faces.align import align_face, face_template
from face_iqa.learn.config import DataConfig, TrainConfig
from face_iqa.learn.context import (
    CONTEXT_FACE_ID,
    build_context_set,
    inside_share,
    moved_landmarks,
    worn_print,
)
from face_iqa.learn.data import resolve_data
from tests.conftest import shared_path

# a face of about 100 px (eyes 40 px apart) in the middle of a 640 x 480 frame
FACE = face_template(112).astype(np.float64) * 0.9 + np.array([270.0, 120.0])


def test_moved_landmarks_leave_the_face_downwards_or_sideways():
    centre = FACE.mean(axis=0)
    eye_mouth = np.linalg.norm(FACE[3:].mean(axis=0) - FACE[:2].mean(axis=0))
    eyes = np.linalg.norm(FACE[1] - FACE[0])
    for seed in range(20):
        rng = np.random.default_rng(seed)
        down = moved_landmarks(FACE, rng, down=True)
        d = down.mean(axis=0) - centre
        assert d[1] >= 1.5 * 2.2 * eye_mouth - 1e-6  # a face height and a half below at least
        side = moved_landmarks(FACE, rng, down=False)
        assert abs(side.mean(axis=0)[0] - centre[0]) >= 1.6 * 2.2 * eyes - 1e-6
        for lm in (down, side):  # the same shape, scaled by 0.8-1.8
            ratio = np.linalg.norm(lm[1] - lm[0]) / eyes
            assert 0.8 - 1e-6 <= ratio <= 1.8 + 1e-6
            assert lm[0, 0] < lm[1, 0] and lm[:2, 1].mean() < lm[3:, 1].mean()


def test_inside_share_is_the_part_of_the_crop_the_frame_covers():
    frame = np.zeros((480, 640, 3), np.uint8)
    _, m = align_face(frame, FACE, 224)
    assert inside_share(m, 224, frame.shape) == 1.0
    _, m = align_face(frame, FACE + np.array([0.0, 1000.0]), 224)
    assert inside_share(m, 224, frame.shape) == 0.0
    _, m = align_face(frame, FACE - np.array([FACE[:, 0].mean(), 0.0]), 224)  # centred on x=0
    assert 0.4 < inside_share(m, 224, frame.shape) < 0.6


def test_a_worn_print_changes_the_middle_of_the_cloth_not_its_size():
    rng = np.random.default_rng(0)
    cloth = np.full((224, 224, 3), 60, np.uint8)
    changed = 0
    for _ in range(6):
        out = worn_print(cloth, rng)
        assert out.shape == cloth.shape and out.dtype == np.uint8
        mid = np.abs(out[72:152, 72:152].astype(int) - 60).mean()
        changed += mid > 10
    assert changed >= 4  # a print's marks stand out from plain cloth


def test_context_set_around_real_faces_is_labelled_zero_with_the_clips_person(tmp_path):
    clip = shared_path("clips", "asl_book.mkv")  # a signer framed to the waist
    ft = pd.DataFrame(
        {
            "source": [str(clip)] * 3 + [str(clip)],
            "frame_index": [0, 20, 40, 0],
            "identity": ["person:signer"] * 4,
            "degradation": ["clean", "clean", "clean", "blur"],  # a damaged copy: not used
        }
    )
    ft.to_parquet(tmp_path / "footage.parquet")
    logs = []
    labels = build_context_set(tmp_path / "footage.parquet", 6, tmp_path / "c", 1, log=logs.append)
    t = pd.read_parquet(labels)
    assert 3 <= len(t) <= 6  # up to 3 around each of the 3 clean faces, at most 6
    assert (t["score"] == 0).all() and (t["degradation"] == "nonface").all()
    assert (t["identity"] == "person:signer").all()
    assert set(t["source"]) <= {"context:torso", "context:side", "context:print"}
    assert t["face_id"].min() >= CONTEXT_FACE_ID and t["face_id"].is_unique
    assert sorted(p.name for p in (tmp_path / "c" / "crops").iterdir()) == sorted(
        p.split("/")[-1] for p in t["path"]
    )  # the crops not drawn are removed
    stamp = labels.stat().st_mtime_ns
    assert build_context_set(tmp_path / "footage.parquet", 6, tmp_path / "c", 1) == labels
    assert labels.stat().st_mtime_ns == stamp


def test_training_adds_context_crops_with_their_own_weight_and_needs_footage(tmp_path):
    rows = [{"path": f"f{i}.png", "score": float(i), "identity": f"p{i % 5}"} for i in range(20)]
    pd.DataFrame(rows).to_csv(tmp_path / "l.csv", index=False)
    data = DataConfig(labels=str(tmp_path / "l.csv"), val_fraction=0.2, context=5)
    with pytest.raises(ValueError, match="data.context .* data.footage"):
        resolve_data(TrainConfig(data=data), lambda m: None)
    table = pd.DataFrame({"part": ["synthetic", "context", "prints"], "degradation": "nonface"})
    w = DataConfig(context_weight=2.5, prints_weight=0.5).row_weights(table)
    assert list(w) == [1.0, 2.5, 0.5]
    with pytest.raises(ValueError, match="context >= 0"):
        DataConfig(context=-1)
