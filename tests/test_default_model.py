"""The embedded default model ranks face quality sensibly (issue: default model)."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import stats

from face_iqa.faces.align import align_face
from face_iqa.faces.detect import DetectorConfig, build_detector
from face_iqa.images import load_image
from face_iqa.model.scorer import ScorerConfig, build_scorer, default_checkpoint
from tests.conftest import shared_path

WEIGHTS = Path(default_checkpoint()).parent


@pytest.fixture(scope="module")
def scorer():
    return build_scorer(ScorerConfig(device="cpu"))


@pytest.fixture(scope="module")
def main_faces(detector, faces_csv):
    """The aligned main face of every single-face shared photo."""
    out = {}
    for row in faces_csv:
        if row["mtcnn_faces"] != "1":
            continue
        img = load_image(shared_path(row["file"]))
        det = detector.detect([img])[0]
        out[row["file"]] = align_face(img, det.landmarks[0], 224)[0]
    return out


def test_default_checkpoint_ships_small_and_carded():
    ck = default_checkpoint()
    assert ck.is_file() and ck.stat().st_size <= 25 * 2**20
    card = (WEIGHTS / "MODEL_CARD.md").read_text()
    for word in ("faceiqa train --config configs/train_face.yaml", "seed", "SRCC", "Limits"):
        assert word in card


def _ladder(scorer, detector):
    q = []
    for name in ("obama-240p.jpg", "obama-480p.jpg", "obama-720p.jpg", "obama-1080p.jpg"):
        img = load_image(shared_path("images", name))
        det = detector.detect([img])[0]
        main = int(np.argmax(det.boxes[:, 2] - det.boxes[:, 0]))  # the main (largest) face
        q.append(float(scorer(align_face(img, det.landmarks[main], 224)[0][None])[0]))
    return q


def test_resolution_ladder_lowest_rung_scores_lowest(scorer, detector):
    """240p far below the rest, 480p below 720p, and 480p-1080p within 7 points (asserted:
    < 8); the shipped model: 54.5, 85.2, 87.9, 89.0."""
    q = _ladder(scorer, detector)
    assert q[0] + 15 < min(q[1:]), q
    assert q[1] < q[2], q
    assert max(q[1:]) - min(q[1:]) < 8, q


def test_resolution_ladder_issue_target(scorer, detector):
    """Issue 4: the main face's score rises with the photo's resolution (the four files are
    kept out of the training's resolution ladders, configs/train_face.yaml)."""
    q = _ladder(scorer, detector)
    assert q[0] < q[1] < q[2] <= q[3], q


def _blur(c, s):
    return c if s == 0 else cv2.GaussianBlur(c, (0, 0), s)


def _jpeg(c, quality):
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(c, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


LEVELS = {"blur": [0, 1, 2, 3, 4, 6], "jpeg": [90, 50, 30, 15, 8]}


def _monotonicity(scorer, main_faces, kind):
    """Per face: (SRCC of score against degradation level, scores)."""
    fn = _blur if kind == "blur" else _jpeg
    out = {}
    for name, crop in main_faces.items():
        q = scorer(np.stack([fn(crop, v) for v in LEVELS[kind]]))
        out[name] = (float(stats.spearmanr(np.arange(len(q)), q).statistic), np.round(q, 1))
    return out


# The issue's target: blur and JPEG each lower the score with SRCC <= -0.9 on every one of
# the 22 single-face photos, and every face's score falls from the mildest to the strongest
# level. (The network alone, without averaging each face with its mirror, reaches JPEG on 20.)
@pytest.mark.parametrize("kind", ["blur", "jpeg"])
def test_degradation_lowers_score_on_every_photo(scorer, main_faces, kind):
    res = _monotonicity(scorer, main_faces, kind)
    assert len(res) >= 22
    bad = {n: r for n, r in res.items() if r[0] > -0.9 + 1e-9}
    assert not bad, bad
    assert all(q[-1] < q[0] for _, q in res.values())
    assert np.mean([rho for rho, _ in res.values()]) <= -0.9


@pytest.mark.slow
def test_held_out_identities_srcc(scorer, tmp_path):
    """Fresh degradations (the training recipe's kinds and resolutions, a seed training never
    used) of the faces of the identities the model never saw, labelled by recognition
    utility: SRCC >= 0.85."""
    from dataclasses import replace

    from face_iqa.learn.config import TrainConfig
    from face_iqa.learn.synthetic import build_synthetic_set
    from pipeline.config import load_into

    recipe = load_into(
        TrainConfig, Path(__file__).resolve().parents[1] / "configs" / "train_face.yaml"
    )
    held = json.loads((WEIGHTS / "heldout.json").read_text())
    images = [str(shared_path(*Path(p).parts[-2:])) for p in held["photos"]]
    labels = build_synthetic_set(
        replace(recipe.data.synthetic, images=tuple(images), videos=(), seed=12345),
        tmp_path / "set",
        log=lambda m: None,
    )
    import pandas as pd

    t = pd.read_parquet(labels)
    crops = np.stack([load_image(tmp_path / "set" / p) for p in t["path"]])
    rho = stats.spearmanr(scorer(crops), t["score"]).statistic
    assert len(t) >= 50 and rho >= 0.85, (len(t), rho)


def test_every_command_defaults_to_the_shipped_model():
    from face_iqa.model.scorer import ScorerConfig as SC

    assert SC().checkpoint is None  # None means the embedded default
    assert build_detector(DetectorConfig(device="cpu"))  # detector needs no flag either


@pytest.mark.slow
@pytest.mark.ray
def test_demo_sample_rejects_the_strongest_degradations(ray_local, tmp_path):
    """What `make demo` does, with the shipped default model and default thresholds."""
    import pandas as pd

    from pipeline.cli import main

    assert main(["sample", "--out", str(tmp_path / "sample")]) == 0
    assert (
        main(
            [
                "run",
                str(tmp_path / "sample" / "sample.mp4"),
                "--out",
                str(tmp_path / "run"),
                "--quiet",
                "--crops",
            ]
        )
        == 0
    )
    frames = pd.read_parquet(tmp_path / "run" / "frames.parquet")
    labels = pd.read_parquet(tmp_path / "sample" / "labels.parquet")
    m = frames.merge(labels, on="frame_index")
    assert len(m) == len(labels) == 48
    strong = m[m["degradation"].isin(["blur", "noise", "occlusion"]) & (m["severity"] >= 0.5)]
    clean = m[m["degradation"] == "clean"]
    assert len(strong) >= 12 and not strong["keep"].any(), strong[["degradation", "reason"]]
    assert clean["keep"].all(), clean[["frame_index", "reason"]]
    kept_q = m.loc[m["keep"], "best_quality"]
    assert m.loc[m["degradation"] == "noise", "best_quality"].max() < kept_q.min()
    assert any((tmp_path / "run" / "crops").glob("*.png"))
    dark = m[(m["degradation"] == "dark") & (m["severity"] >= 0.8)]
    # the darkest frame has no face left; the one before is rejected, and the exposure rule
    # rejects its face on its own (the quality model is nearly blind to light: it scores
    # that face 44.1, above the threshold of 35)
    assert len(dark) == 2 and not dark["keep"].any(), dark[["severity", "reason"]]
    from pipeline.config import load_config

    faces = pd.read_parquet(tmp_path / "run" / "faces.parquet")
    dark_faces = faces[faces["frame_index"].isin(dark["frame_index"]) & (faces["face_index"] >= 0)]
    assert len(dark_faces) >= 1
    assert (dark_faces["exposure"] < load_config().threshold.min_exposure).all(), dark_faces
    mild = m[(m["degradation"] == "dark") & (m["severity"] < 0.6)]
    assert mild["keep"].all(), mild[["severity", "reason"]]  # a dimmer scene is not rejected
