"""Real-footage utility labels: the separation, its mapping to 0-100, labels of constructed
descriptors (no recogniser needed)."""

import numpy as np
import pytest

from face_iqa.learn.footage import footage_quality, label_faces, separation
from face_iqa.learn.utility import distance_to_quality


def test_separation_sign_and_order():
    rng = np.random.default_rng(0)
    imp = rng.normal(0.8, 0.05, 300)
    seps = [separation(rng.normal(m, 0.05, 40), imp) for m in (0.3, 0.45, 0.6, 0.75)]
    assert all(a > b for a, b in zip(seps, seps[1:]))  # genuine farther: less separation
    assert seps[0] == pytest.approx(0.5, abs=0.03)
    assert separation(rng.normal(0.9, 0.05, 40), imp) < 0  # impostors closer than genuine


def test_mapping_is_monotone_and_shares_the_synthetic_scale():
    sep = np.linspace(-1.0, 1.0, 401)
    q = footage_quality(sep, 0.5)
    assert np.all(np.diff(q) >= 0)
    assert np.all((q > 0) & (q <= 100))
    assert np.all(q[sep >= 0.5] == 100)
    # a face 0.6 of separation short of its person's reference scores as a synthetic face
    # that a degradation moved 0.6 from its clean self
    assert footage_quality(-0.1, 0.5) == pytest.approx(distance_to_quality(0.6))


def _people(rng, n_people=4, n_faces=8, spread=0.02):
    centres = rng.normal(0, 1, (n_people, 128))
    centres *= 0.55 / np.linalg.norm(centres, axis=1, keepdims=True)  # ~0.78 apart
    desc = np.concatenate([c + rng.normal(0, spread, (n_faces, 128)) for c in centres])
    ident = np.repeat([f"p{i}" for i in range(n_people)], n_faces)
    return desc, ident, centres


def test_labels_rank_a_face_drifting_from_its_person_last():
    rng = np.random.default_rng(1)
    desc, ident, centres = _people(rng)
    # face 3 of person 0 is pulled towards person 1 (a turned head, say)
    desc[3] = 0.5 * desc[3] + 0.5 * centres[1]
    sep, q, _, _ = label_faces(desc, ident, 16, 0.9, np.random.default_rng(0))
    own = ident == "p0"
    assert np.argmin(q[own]) == 3
    assert q[3] < 50 < np.median(q[own])
    # every person's best faces reach 100: the label ranks faces, not people
    for p in np.unique(ident):
        assert q[ident == p].max() == pytest.approx(100.0)


def test_damaged_copies_are_labelled_by_their_own_matching():
    rng = np.random.default_rng(2)
    desc, ident, _ = _people(rng)
    direction = rng.normal(0, 1, 128)
    direction /= np.linalg.norm(direction)
    copies = np.stack([desc[5] + s * direction for s in (0.05, 0.2, 0.4)])
    _, q, csep, cq = label_faces(
        desc, ident, 16, 0.9, np.random.default_rng(0), copies, np.array([5, 5, 5])
    )
    assert np.all(np.diff(csep) < 0) and np.all(np.diff(cq) < 0)  # more damage, lower label
    assert cq[-1] < q[5]


def test_a_person_with_one_face_gets_no_label():
    rng = np.random.default_rng(3)
    desc, ident, _ = _people(rng, n_people=2, n_faces=3)
    ident = ident.copy()
    ident[0] = "alone"
    _, q, _, _ = label_faces(desc, ident, 8, 0.9, np.random.default_rng(0))
    assert np.isnan(q[0]) and np.isfinite(q[1:]).all()


def test_label_footage_command_on_two_real_clips(tmp_path):
    import pandas as pd

    from pipeline.cli import main
    from tests.conftest import shared_path

    clips = str(shared_path("clips.csv"))
    out = tmp_path / "labels"
    args = ["label-footage", "--clips", clips, "--out", str(out), "--copies", "1"]
    args += ["--persons", "liveportrait_driving_d0", "retalking_5", "--per-identity", "4"]
    assert main([*args, "--min-gap", "15"]) == 0
    t = pd.read_parquet(out / "labels.parquet")
    assert set(t["identity"]) == {"person:liveportrait_driving_d0", "person:retalking_5"}
    assert set(t["variant"]) == {0, 1} and (t["degradation"] == "clean").sum() == 8
    assert t["score"].between(0, 100, inclusive="right").all()
    clean = t[t["variant"] == 0]
    assert (clean.groupby("identity")["score"].max() == 100).all()
    assert all((out / p).is_file() for p in t["path"])
    # the same command again reuses the set
    mtime = (out / "labels.parquet").stat().st_mtime_ns
    assert main([*args, "--min-gap", "15"]) == 0
    assert (out / "labels.parquet").stat().st_mtime_ns == mtime
