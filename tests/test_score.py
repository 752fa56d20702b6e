import numpy as np
import pandas as pd
import pytest
import torch

from face_iqa.faces.detect import DetectorConfig
from face_iqa.images import load_image
from face_iqa.model.scorer import ScorerConfig, build_scorer
from pipeline.cli import main
from tests.conftest import shared_path
from workers.detect import DetectStage, DetectStageConfig
from workers.score import ScoreStage, ScoreStageConfig


@pytest.fixture(scope="module")
def tiny_ckpt(tiny_checkpoint):
    return tiny_checkpoint


@pytest.fixture(scope="module")
def crops():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(5, 224, 224, 3), dtype=np.uint8)


def test_scorer_deterministic_and_batch_independent(tiny_ckpt, crops):
    s = build_scorer(ScorerConfig(checkpoint=str(tiny_ckpt), device="cpu", cpu_batch_size=2))
    a = s(crops)
    assert a.dtype == np.float32 and a.shape == (5,)
    np.testing.assert_array_equal(a, s(crops))
    # a face's score does not depend on what else is in its batch
    np.testing.assert_allclose(s(crops[3:4]), a[3:4], atol=1e-5)
    assert len(set(np.round(a, 5))) == 5  # different faces, different scores


def test_fixed_shapes_pads_the_pass_not_the_scores(tiny_ckpt, crops):
    """On a GPU each pass is padded to ``batch_size`` faces; the padding changes no score
    and the model only ever sees that shape (forced on here, on the CPU)."""
    cfg = ScorerConfig(checkpoint=str(tiny_ckpt), device="cpu", cpu_batch_size=4)
    plain = build_scorer(cfg)
    assert not plain.pad_shapes  # CPU: off
    padded = build_scorer(cfg)
    padded.pad_shapes = True
    seen = []
    padded.model.register_forward_hook(lambda m, i, o: seen.append(len(i[0])))
    for n in (1, 3, 5):
        np.testing.assert_allclose(padded(crops[:n]), plain(crops[:n]), atol=1e-5)
    # flip doubles each pass: 1, 3 -> 4; 5 -> 4 + 1 -> 4 + 4
    assert seen == [8, 8, 8, 8], seen


def test_scorer_preprocessing_from_card(tiny_ckpt, crops):
    """The card's mean/std are what the model sees: compare with a manual forward pass."""
    s = build_scorer(ScorerConfig(checkpoint=str(tiny_ckpt), device="cpu", flip=False))
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(s.card.mean).view(1, 3, 1, 1)
    std = torch.tensor(s.card.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        manual = s.model((x - mean) / std).numpy()
    np.testing.assert_allclose(s(crops), manual, atol=1e-4)


def test_flip_averages_the_face_and_its_mirror(tiny_ckpt, crops):
    """The default score is the mean of the network's scores of the crop and of its mirror
    image, so a face and its mirror score the same."""
    plain = build_scorer(ScorerConfig(checkpoint=str(tiny_ckpt), device="cpu", flip=False))
    both = build_scorer(ScorerConfig(checkpoint=str(tiny_ckpt), device="cpu"))
    assert both.cfg.flip  # on by default
    mirror = np.ascontiguousarray(crops[:, :, ::-1])
    np.testing.assert_allclose(both(crops), (plain(crops) + plain(mirror)) / 2, atol=1e-4)
    np.testing.assert_allclose(both(crops), both(mirror), atol=1e-4)
    assert np.abs(plain(crops) - plain(mirror)).max() > 1e-3  # so the check is not trivial


def test_folded_scorer_matches_the_unfolded_model(crops):
    """The scorer folds the backbone's batch norms: the embedded model's scores must be
    those of the checkpoint as loaded (to float rounding, far below a score point), averaged
    over each crop and its mirror image."""
    from face_iqa.model.checkpoint import build_model
    from face_iqa.model.scorer import default_checkpoint

    s = build_scorer(ScorerConfig(device="cpu"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in s.model.modules())
    model, card = build_model(default_checkpoint())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(card.mean).view(1, 3, 1, 1)
    std = torch.tensor(card.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        x = (x - mean) / std
        want = ((model(x) + model(x.flip(-1))) / 2).numpy()
    got = s(crops)
    np.testing.assert_allclose(got, want, atol=1e-3)
    assert np.ptp(want) > 0.1  # distinct faces, so agreement is not trivial


def test_multi_crop_is_deterministic_and_differs(tiny_ckpt, crops):
    one = build_scorer(ScorerConfig(checkpoint=str(tiny_ckpt), device="cpu", resize=256))
    many = build_scorer(
        ScorerConfig(checkpoint=str(tiny_ckpt), device="cpu", resize=256, n_crops=5, seed=3)
    )
    assert len(set(many.offsets)) > 1
    a, b = many(crops), many(crops)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, one(crops))
    with pytest.raises(ValueError, match="uint8"):
        one(crops.astype(np.float32))


def test_score_stage_adds_quality(tiny_ckpt):
    det = DetectStage(DetectStageConfig(detector=DetectorConfig(device="cpu")))
    img = load_image(shared_path("images", "two_people.jpg"))
    frames = np.empty(2, dtype=object)
    frames[:] = [img, np.zeros((100, 100, 3), np.uint8)]
    faces = det({"source": np.array(["a", "b"]), "frame_index": np.array([0, 0]), "frame": frames})
    stage = ScoreStage(ScoreStageConfig(ScorerConfig(checkpoint=str(tiny_ckpt), device="cpu")))
    out = stage(faces)
    assert out["quality"].dtype == np.float32
    assert np.isfinite(out["quality"][:2]).all() and np.isnan(out["quality"][2])
    assert list(out["status"]) == ["ok", "ok", "no_face"]
    assert "crop" in out and (out["score_s"] >= 0).all()
    # the pose of each face from its own landmarks; none for the frame without a face
    from face_iqa.faces.pose import frontalness

    assert out["frontalness"][:2] == pytest.approx([frontalness(m) for m in faces["landmarks"][:2]])
    assert (out["frontalness"][:2] > 0.5).all() and np.isnan(out["frontalness"][2])


def test_score_cli(tmp_path, tiny_ckpt, capsys):
    out = tmp_path / "q.parquet"
    img = shared_path("images", "two_people.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    assert (
        main(
            [
                "score",
                str(img),
                str(bad),
                "--out",
                str(out),
                "--checkpoint",
                str(tiny_ckpt),
                "--quiet",
                "--set",
                "detect.detector.device=cpu",
            ]
        )
        == 0
    )
    t = pd.read_parquet(out)
    assert list(t["status"]) == ["ok", "ok", "error"]
    assert t["quality"].iloc[:2].notna().all() and pd.isna(t["quality"].iloc[2])
    # --aligned: each image is one face; scores equal the scorer's on the resized crop
    crops = tmp_path / "crops"
    assert (
        main(
            [
                "detect",
                str(img),
                "--out",
                str(tmp_path / "d.parquet"),
                "--crops",
                str(crops),
                "--quiet",
                "--set",
                "detect.detector.device=cpu",
            ]
        )
        == 0
    )
    out2 = tmp_path / "q2.parquet"
    assert (
        main(
            [
                "score",
                str(crops),
                "--aligned",
                "--out",
                str(out2),
                "--checkpoint",
                str(tiny_ckpt),
                "--quiet",
            ]
        )
        == 0
    )
    t2 = pd.read_parquet(out2)
    assert len(t2) == 2 and t2["quality"].notna().all()
    np.testing.assert_allclose(np.sort(t2["quality"]), np.sort(t["quality"].iloc[:2]), atol=1e-3)
    assert "2 faces scored" in capsys.readouterr().out


def test_score_cli_bad_checkpoint_exits_nonzero(tmp_path, capsys):
    ck = tmp_path / "broken.pt"
    ck.write_bytes(b"\x00" * 100)
    code = main(
        [
            "score",
            str(shared_path("images", "obama-240p.jpg")),
            "--out",
            str(tmp_path / "o.parquet"),
            "--checkpoint",
            str(ck),
            "--quiet",
        ]
    )
    assert code != 0 and "broken.pt" in capsys.readouterr().err
