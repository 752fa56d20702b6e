"""What every user relies on: the score's range, normal file permissions, --version."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.writers import write_parquet, write_png
from tests.conftest import shared_path


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        a = write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "t.parquet")
        b = write_png(np.zeros((4, 4, 3), np.uint8), tmp_path / "c.png")
    finally:
        os.umask(old)
    assert _mode(a) == expected and _mode(b) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "t.parquet"]  # no temp left


@pytest.mark.ray
def test_run_outputs_are_readable_by_others_under_umask_022(ray_local, tiny_checkpoint, tmp_path):
    from pipeline.config import load_config
    from pipeline.run_job import run

    cfg = load_config(
        None,
        [
            f"score.scorer.checkpoint={tiny_checkpoint}",
            "detect.detector.device=cpu",
            "score.scorer.device=cpu",
            "threshold.min_quality=-1000000",
            "output.crops=true",
        ],
    )
    old = os.umask(0o022)
    try:
        run([str(shared_path("images", "two_people.jpg"))], tmp_path / "o", cfg, progress=False)
    finally:
        os.umask(old)
    out = tmp_path / "o"
    files = [p for p in out.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"faces.parquet", "frames.parquet", "tracks.parquet", "summary.json"} <= names
    assert any(p.suffix == ".png" for p in files)
    assert {p.name: oct(_mode(p)) for p in files} == {p.name: "0o644" for p in files}


@pytest.fixture(scope="module")
def default_scorer():
    from face_iqa.model.scorer import ScorerConfig, build_scorer

    return build_scorer(ScorerConfig(device="cpu"))


_kinds = st.sampled_from(["noise", "flat", "blur", "dark", "bright", "jpeg", "stripes"])


def _crop(kind: str, seed: int, level: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    if kind == "flat":
        return np.full((224, 224, 3), level, np.uint8)
    if kind == "stripes":
        x = (np.arange(224) // max(1, level % 8 + 1)) % 2 * 255
        return np.repeat(np.tile(x, (224, 1))[..., None], 3, 2).astype(np.uint8)
    face = _face()
    if kind == "blur":
        return cv2.GaussianBlur(face, (0, 0), 0.5 + level / 16)
    if kind == "dark":
        return (face * (level / 2550)).astype(np.uint8)
    if kind == "bright":
        return np.clip(face.astype(int) + level, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", face, [cv2.IMWRITE_JPEG_QUALITY, 1 + level % 30])
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


_FACE: list[np.ndarray] = []


def _face() -> np.ndarray:
    """An aligned real face (the shared 480p portrait), made once."""
    if not _FACE:
        from face_iqa.faces.align import align_face
        from face_iqa.faces.detect import DetectorConfig, build_detector
        from face_iqa.images import load_image

        img = load_image(shared_path("images", "obama-480p.jpg"))
        det = build_detector(DetectorConfig(device="cpu")).detect([img])[0]
        _FACE.append(align_face(img, det.landmarks[0], 224)[0])
    return _FACE[0]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kinds=st.lists(_kinds, min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
    level=st.integers(0, 255),
)
def test_quality_is_always_within_0_and_100(default_scorer, kinds, seed, level):
    """Random, flat, striped and badly degraded crops: the embedded model's score is a
    finite number in [0, 100] (the network's raw output is clipped to its card's range)."""
    crops = np.stack([_crop(k, seed + i, level) for i, k in enumerate(kinds)])
    q = default_scorer(crops)
    assert q.dtype == np.float32 and q.shape == (len(kinds),)
    assert np.isfinite(q).all() and (q >= 0).all() and (q <= 100).all(), (kinds, q)


def test_raw_scores_outside_the_range_are_clipped_and_nan_is_an_error(default_scorer, monkeypatch):
    """The clipping is real (a raw -7 and 130 become 0 and 100), and a face the network
    gives no finite score is an error row, never an ok face without a real quality."""
    import torch

    from workers.score import ScoreStage

    raw = torch.tensor([-7.0, 130.0, float("nan")])
    monkeypatch.setattr(default_scorer, "model", lambda x: raw.repeat(len(x) // 3 + 1)[: len(x)])
    crops = np.zeros((3, 224, 224, 3), np.uint8)
    stage = ScoreStage(scorer=default_scorer)
    out = stage({"status": np.array(["ok"] * 3), "crop": crops, "source": np.array(["a.jpg"] * 3)})
    q = out["quality"]
    assert list(out["status"]) == ["ok", "ok", "error"], out["error"]
    assert q[0] == 0.0 and q[1] == 100.0 and "no finite score" in out["error"][2]


def test_version_prints_package_and_model_checksum(capsys):
    from pipeline.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    import importlib.metadata as md

    assert out.startswith(f"faceiqa {md.version('face-iqa-pipeline')}\n")
    from face_iqa.model.checkpoint import file_sha256
    from face_iqa.model.scorer import default_checkpoint

    sha = re.search(r"sha256 ([0-9a-f]{64})", out).group(1)
    assert sha == file_sha256(default_checkpoint())
