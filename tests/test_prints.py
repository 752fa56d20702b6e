"""Drawn face-like graphics as training non-faces (face_iqa.learn.prints)."""

import numpy as np
import pandas as pd
import pytest

from face_iqa.faces.align import face_template
from face_iqa.learn.config import DataConfig, TrainConfig
from face_iqa.learn.data import RankPairs, resolve_data
from face_iqa.learn.prints import KINDS, PRINT_FACE_ID, build_print_set, capture, draw_print


def _patch(img, p, r):
    x, y = (int(v) for v in p)
    return img[y - r : y + r + 1, x - r : x + r + 1].mean(axis=2)


@pytest.mark.parametrize("kind", ["skull", "smiley", "cartoon"])
def test_a_print_has_its_eyes_where_the_aligned_face_has_them(kind):
    """Eye, nose and mouth marks sit on the crop's 5-point template, in ink that stands out
    from the head they are drawn on (the pattern a detector and the alignment take for a
    face)."""
    t = face_template(224)
    between = (t[0] + t[1]) / 2  # the head between the eyes
    for seed in range(6):
        img = draw_print(kind, np.random.default_rng(seed))
        assert img.shape == (224, 224, 3) and img.dtype == np.uint8
        head = float(np.median(_patch(img, between, 3)))
        for eye in t[:2]:
            assert np.abs(_patch(img, eye, 8) - head).max() > 60, (kind, seed)
        assert np.abs(_patch(img, between, 3) - head).max() < 20  # plain head between


def test_prints_vary_and_capture_damages_them():
    rng = np.random.default_rng(0)
    a, b = draw_print("skull", rng), draw_print("skull", rng)
    assert np.abs(a.astype(int) - b).mean() > 5  # colours, ground and placement drawn anew
    c = capture(a, np.random.default_rng(1))
    assert c.shape == a.shape and c.dtype == np.uint8
    assert 1 < np.abs(c.astype(int) - a).mean() < 60  # changed, still the same graphic
    with pytest.raises(ValueError, match="print kind 'star'"):
        draw_print("star", rng)


def test_print_set_is_labelled_zero_as_non_faces_and_reused(tmp_path):
    logs = []
    labels = build_print_set(8, tmp_path / "p", seed=3, log=logs.append)
    t = pd.read_parquet(labels)
    assert len(t) == 8 and (t["score"] == 0).all() and (t["degradation"] == "nonface").all()
    assert set(t["source"]) == {f"print:{k}" for k in KINDS}
    assert t["face_id"].min() == PRINT_FACE_ID and t["face_id"].is_unique
    assert all((labels.parent / p).is_file() for p in t["path"])
    stamp = labels.stat().st_mtime_ns
    assert build_print_set(8, tmp_path / "p", seed=3, log=logs.append) == labels
    assert labels.stat().st_mtime_ns == stamp and "reusing" in logs[-1]
    build_print_set(4, tmp_path / "p", seed=3)
    assert len(pd.read_parquet(labels)) == 4  # another size: built again


def test_training_adds_prints_as_non_faces_with_their_own_weight(tmp_path):
    """data.prints: the drawn non-faces join the table (part ``prints``, label 0, a tenth
    in val), drawn ``prints_weight`` times as often as a synthetic row, and never the base
    of a ranked pair."""
    rows = [{"path": f"f{i}.png", "score": float(i), "identity": f"p{i % 5}"} for i in range(20)]
    pd.DataFrame(rows).to_csv(tmp_path / "l.csv", index=False)
    data = DataConfig(
        labels=str(tmp_path / "l.csv"),
        val_fraction=0.2,
        test_fraction=0.0,
        prints=20,
        prints_dir=str(tmp_path / "prints"),
        prints_weight=2.5,
    )
    table, info = resolve_data(TrainConfig(data=data), lambda m: None)
    pr = table[table["part"] == "prints"]
    assert len(pr) == 20 and (pr["score"] == 0).all()
    assert (pr["split"] == "val").sum() == 2
    assert str(tmp_path / "prints" / "labels.parquet") in info["label_files"]
    w = data.row_weights(table)
    assert (w[(table["part"] == "prints").to_numpy()] == 2.5).all()
    assert (w[(table["part"] != "prints").to_numpy()] == 1.0).all()
    bases = RankPairs.bases(table, TrainConfig().rank)
    assert not set(pr["path"]) & set(bases) and len(bases) == 20
    with pytest.raises(ValueError, match="prints >= 0"):
        DataConfig(prints=-1)
