"""Real-face quality labels from identity photo sets (face_iqa.learn.photos) and the footage
``match`` label with its false detections (face_iqa.learn.footage)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from face_iqa.learn.footage import match_labels
from face_iqa.learn.photos import (
    PhotoSetConfig,
    build_photo_set,
    heldout_people,
    label_photo_faces,
    match_share,
)


def _people(rng, spread: dict[str, float], n: int = 8) -> pd.DataFrame:
    """Faces of people around random centres, each person's faces ``spread`` apart."""
    rows, fid = [], 0
    for person, s in spread.items():
        centre = rng.normal(0, 0.05, 128)
        for _ in range(n):
            rows.append(
                {
                    "identity": person,
                    "face_id": fid,
                    "variant": 0,
                    "descriptor": (centre + rng.normal(0, s, 128)).astype(np.float32),
                }
            )
            fid += 1
    return pd.DataFrame(rows)


def test_match_share_falls_with_distance_and_is_nan_alone():
    x = np.zeros(128)
    near = np.tile(np.r_[0.3, np.zeros(127)], (3, 1))
    far = np.tile(np.r_[0.7, np.zeros(127)], (3, 1))
    assert match_share(x, near, 0.5, 0.05) > 0.95
    assert match_share(x, far, 0.5, 0.05) < 0.05
    mixed = match_share(x, np.vstack([near, far]), 0.5, 0.05)
    assert 0.45 < mixed < 0.55
    assert np.isnan(match_share(x, np.zeros((0, 128)), 0.5, 0.05))


def test_labels_rank_faces_across_people():
    """A person whose faces are all hard to match (spread out, as small dark photos are)
    must not get the same top labels as a person whose faces agree: one threshold for
    everyone, no per-person normalisation."""
    rng = np.random.default_rng(0)
    faces = _people(rng, {f"studio{k}": 0.015 for k in range(6)} | {"dim": 0.04})
    labelled, t = label_photo_faces(faces, fmr=1e-2, softness=0.05)
    assert 0.3 < t < 1.0
    dim = labelled.loc[labelled["identity"] == "dim", "score"]
    studio = labelled.loc[labelled["identity"] != "dim", "score"]
    assert dim.max() < studio.median()
    assert labelled["score"].between(0, 100).all()


def test_a_face_far_from_its_person_scores_lowest_of_them():
    rng = np.random.default_rng(1)
    faces = _people(rng, {"a": 0.02, "b": 0.02, "c": 0.02, "d": 0.02})
    i = faces.index[faces["identity"] == "a"][0]
    faces.at[i, "descriptor"] = faces.at[i, "descriptor"] + rng.normal(0, 0.06, 128).astype(
        np.float32
    )
    labelled, _ = label_photo_faces(faces, fmr=1e-2, softness=0.05)
    a = labelled[labelled["identity"] == "a"]
    assert a["score"].idxmin() == i


def test_footage_match_labels_damaged_copies_by_their_own_matching():
    rng = np.random.default_rng(2)
    faces = _people(rng, {"p": 0.02, "q": 0.02, "r": 0.02})
    desc = np.stack(faces["descriptor"].to_numpy())
    copies = np.stack([desc[0] + rng.normal(0, 0.01, 128), desc[0] + rng.normal(0, 0.08, 128)])
    m, q, cm, cq = match_labels(desc, faces["identity"].to_numpy(), 1e-2, 0.05, copies, [0, 0])
    assert np.allclose(q, 100 * m)
    assert cq[0] > cq[1]  # the heavier damage matches the person's other faces less


def test_heldout_people_are_drawn_per_set_and_repeatable():
    photos = pd.DataFrame(
        {
            "identity": [f"c{k}" for k in range(20)] + [f"y{k}" for k in range(5)],
            "set": ["celeba"] * 20 + ["yaleb"] * 5,
        }
    )
    a = heldout_people(photos, ("celeba:6", "yaleb:2"), seed=3)
    assert a == heldout_people(photos, ("celeba:6", "yaleb:2"), seed=3)
    assert sum(p.startswith("c") for p in a) == 6 and sum(p.startswith("y") for p in a) == 2
    assert a != heldout_people(photos, ("celeba:6", "yaleb:2"), seed=4)
    with pytest.raises(ValueError, match="glint:1"):
        heldout_people(photos, ("glint:1",), seed=0)
    with pytest.raises(ValueError, match="yaleb:9"):
        heldout_people(photos, ("yaleb:9",), seed=0)


def test_build_photo_set_on_real_photos_holds_people_out_and_resumes(tmp_path, detector):
    from tests.conftest import shared_path

    ids = pd.read_csv(shared_path("photos_wild", "identities.csv"))
    people = sorted(ids.loc[ids["set"] == "celeba", "identity"].unique())[:5]
    small = ids[ids["identity"].isin(people)].groupby("identity").head(4)
    small = small.assign(file=[str(shared_path("photos_wild", f)) for f in small["file"]])
    csv = tmp_path / "ids.csv"
    small.to_csv(csv, index=False)
    cfg = PhotoSetConfig(identities=str(csv), holdout=("celeba:1",), degraded_copies=1)
    out = tmp_path / "set"
    logs: list[str] = []
    labels = pd.read_parquet(build_photo_set(cfg, out, logs.append, detector=detector))
    held = pd.read_csv(out / "heldout.csv")
    assert held["identity"].nunique() == 1
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in held["path"])
    assert not set(held["identity"]) & set(labels["identity"])
    assert labels["identity"].nunique() == 4
    clean = labels[labels["variant"] == 0]
    assert len(clean) >= 12 and (labels["variant"] == 1).sum() >= 10
    assert labels["score"].between(0, 100).all() and labels["score"].std() > 0
    assert all((out / p).is_file() for p in labels["path"])
    # each person is kept as it is done: a build that stopped half way goes on from there
    (out / "labels.parquet").unlink()
    (out / "people" / "000003.parquet").unlink()
    again = pd.read_parquet(build_photo_set(cfg, out, logs.append, detector=detector))
    pd.testing.assert_frame_equal(
        again.sort_values("path").reset_index(drop=True),
        labels.sort_values("path").reset_index(drop=True),
    )
    with pytest.raises(ValueError, match="other settings"):
        build_photo_set(PhotoSetConfig(identities=str(csv), holdout=("celeba:2",)), out)

    # resolution ladders of the larger faces: the set's own face found again in its photo
    from face_iqa.images import load_image
    from face_iqa.learn.data import ladder_table
    from face_iqa.learn.photos import build_photo_ladders

    big = clean[clean["face_size"] >= 60]
    assert len(big) >= 3
    lad = pd.read_parquet(
        build_photo_ladders(out / "labels.parquet", labels, 4, 60, logs.append, detector)
    )
    assert set(lad["face_id"]) <= set(big["face_id"]) and lad["face_id"].nunique() >= 3
    for fid, g in lad.groupby("face_id"):
        g = g.sort_values("rung")
        assert len(g) == 4 and g["scale"].iloc[0] == 1.0
        assert (np.diff(g["scale"]) < 0).all() and (np.diff(g["zoom"]) > 0).all()
        own = load_image(out / big.loc[big["face_id"] == fid, "path"].iloc[0]).astype(float)
        top = load_image(out / g["path"].iloc[0]).astype(float)
        assert np.abs(own - top).mean() < 2.0  # the set's crop, rendered at scale 1
    assert not any("reusing" in m for m in logs[-3:])
    build_photo_ladders(out / "labels.parquet", labels, 4, 60, logs.append, detector)
    assert "reusing" in logs[-1]
    tab = ladder_table(
        [str(tmp_path / "none" / "labels.parquet"), str(out / "labels.parquet")], big
    )
    assert len(tab) == len(lad) and all(Path(p).is_file() for p in tab["path"])

    # copies of one kind, each labelled by its own matching against the person's other faces
    from face_iqa.faces.recognizer import DlibRecognizer
    from face_iqa.learn.photos import build_photo_copies

    rec = DlibRecognizer()
    cp_path = build_photo_copies(
        out / "labels.parquet", "low_light", 2, tmp_path / "cp", 0, logs.append, rec
    )
    cp = pd.read_parquet(cp_path)
    assert set(cp["variant"]) == {100, 101} and cp["degradation"].str.startswith("low_light@").all()
    assert len(cp) == 2 * cp["face_id"].nunique() and cp["face_id"].nunique() >= 10
    assert set(cp["face_id"]) <= set(clean["face_id"]) and cp["score"].between(0, 100).all()
    people = pd.concat([pd.read_parquet(p) for p in sorted((out / "people").glob("*.parquet"))])
    und = people[people["variant"] == 0]
    info = json.loads((out / "info.json").read_text())
    for r in cp.iloc[:3].itertuples():
        own = und[und["face_id"] == r.face_id].iloc[0]
        shape = rec.chip_shape(load_image(out / own["path"]))
        d = rec.descriptor(load_image(tmp_path / "cp" / r.path), shape)
        partners = und[(und["identity"] == r.identity) & (und["face_id"] != r.face_id)]
        want = 100 * match_share(d, np.stack(partners["descriptor"]), info["threshold"], 0.05)
        assert abs(r.score - want) < 1e-3, (r.score, want)
    build_photo_copies(out / "labels.parquet", "low_light", 2, tmp_path / "cp", 0, logs.append, rec)
    assert "reusing" in logs[-1]
    with pytest.raises(ValueError, match="unknown kind"):
        build_photo_copies(out / "labels.parquet", "low_lite", 1, tmp_path / "cq")


@pytest.mark.slow
def test_footage_takes_the_person_not_the_printed_skull(tmp_path, detector):
    """asl_again.mkv: the signer's own face is about 64 px, the skull printed on the hoodie
    about 140 px and detected in some frames. With ``nonfaces`` the person's face of each
    frame is the one nearest the clip's centre, and the skull enters with the label 0."""
    from face_iqa.learn.footage import FootageConfig, build_footage_set
    from tests.conftest import shared_path

    clips = pd.read_csv(shared_path("clips_more.csv"))
    keep = clips[clips["file"].isin(["clips/asl_again.mkv", "clips/asl_milk.mkv"])].copy()
    keep["file"] = [str(shared_path(f)) for f in keep["file"]]
    csv = tmp_path / "clips.csv"
    keep.to_csv(csv, index=False)
    cfg = FootageConfig(
        clips=str(csv),
        min_gap=5,
        per_identity=16,
        degraded_copies=0,
        label="match",
        fmr=1e-2,
        nonfaces=True,
    )
    t = pd.read_parquet(build_footage_set(cfg, tmp_path / "set", lambda m: None, detector))
    again = t[t["source"].str.endswith("asl_again.mkv")]
    person = again[again["degradation"] == "clean"]
    others = again[again["degradation"] == "nonface"]
    assert len(person) >= 10 and person["face_size"].max() < 100
    assert (others["face_size"] > 100).sum() >= 3  # the skull (once also a hand over it)
    assert (others["score"] == 0).all() and person["score"].between(0, 100).all()
    assert person["score"].max() > 50
