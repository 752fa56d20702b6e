"""Recognition on real footage: pairs from clips and tracks, the best-shot measure."""

import numpy as np
import pandas as pd
import pytest

from face_iqa.faces.pose import frontalness
from face_iqa.judge.recognition import edc_table, pauc
from face_iqa.judge.video import (
    best_shot_table,
    identity_table,
    pauc_without,
    plot_best_shot,
    video_pairs,
)


def _faces():
    rows = []
    for frame in (0, 5, 10, 20):
        rows.append(("A", "a.mp4", frame, "clip", -1, -1))
    for frame in (0, 10):
        rows.append(("B", "b.mp4", frame, "clip", -1, -1))
    for tid, first, last, frames in (
        ("t1", 0, 50, (0, 20, 40)),
        ("t2", 30, 80, (30, 60)),
        ("t3", 100, 120, (100, 115)),
    ):
        for f in frames:
            rows.append((tid, "v.mp4", f, "track", first, last))
    df = pd.DataFrame(rows, columns=["identity", "video", "frame_index", "kind", "first", "last"])
    df["path"] = [f"{v}#{f}#{i}" for v, f, i in zip(df["video"], df["frame_index"], df["identity"])]
    return df


def test_pairs_genuine_apart_impostors_only_across_people():
    faces = _faces()
    pairs = video_pairs(faces, min_gap=10)
    by = faces.set_index("path")
    a, b = by.loc[pairs["a"]].reset_index(), by.loc[pairs["b"]].reset_index()
    gen = pairs["same"].to_numpy()
    # genuine: one identity, at least the gap apart (A's frames 0 and 5 are not a pair)
    assert (a["identity"][gen].to_numpy() == b["identity"][gen].to_numpy()).all()
    assert (np.abs(a["frame_index"][gen] - b["frame_index"][gen]) >= 10).all()
    assert gen.sum() == 4 + 1 + 3 + 1 + 1  # A: 0-10 0-20 5-20 10-20; B; t1 3; t2; t3
    imp = ~gen
    assert (a["identity"][imp].to_numpy() != b["identity"][imp].to_numpy()).all()
    kinds = set(zip(a["kind"][imp], b["kind"][imp]))
    assert kinds <= {("clip", "clip"), ("track", "track")}  # no clip face against a track
    tracks = {frozenset(x) for x in zip(a["identity"][imp], b["identity"][imp]) if "t" in x[0]}
    assert tracks == {frozenset({"t1", "t2"})}  # t3 overlaps neither: maybe the same person
    assert (imp & (a["kind"] == "clip").to_numpy()).sum() == 4 * 2  # every A face x every B face


def test_best_shot_on_a_known_case():
    """Person X: three faces close together and one far (the recogniser fails on it).
    A measure that ranks the far face best misses; one that ranks a close face best hits;
    a random pick matches 3 times in 4; the best possible pick always."""
    desc = {"x0": [0.0], "x1": [0.1], "x2": [0.2], "x3": [2.0], "y0": [5.0], "y1": [5.1]}
    faces = pd.DataFrame(
        {
            "identity": ["X"] * 4 + ["Y"] * 2,
            "frame_index": [0, 20, 40, 60, 0, 20],
            "good": [1.0, 3.0, 2.0, 0.0, 1.0, 2.0],
            "bad": [0.0, 1.0, 2.0, 9.0, 1.0, 2.0],
        },
        index=list(desc),
    )
    faces["descriptor"] = [np.array(v) for v in desc.values()]
    faces["video"] = ["x.mp4"] * 4 + ["y.mp4"] * 2
    faces["kind"] = "clip"
    pairs = video_pairs(faces.rename_axis("path").reset_index(), min_gap=10)
    t = best_shot_table(faces, pairs, threshold=0.5, measures=("good", "bad")).set_index("measure")
    assert t.loc["good", "matched"] == 1.0  # X's pick x1 and Y's pick y1 both match
    assert t.loc["bad", "matched"] == 0.5  # X's pick x3 matches none of X's other faces
    assert t.loc["random_pick", "matched"] == pytest.approx((3 / 4 + 1) / 2)
    assert t.loc["best_possible", "matched"] == 1.0 and (t["identities"] == 2).all()
    # the finer view: x0-x2 each match 2 of X's 3 other faces, x3 none; y0, y1 each other
    rate = t["match_rate"]
    assert rate["good"] == pytest.approx((2 / 3 + 1) / 2) == rate["best_possible"]
    assert rate["bad"] == pytest.approx((0 + 1) / 2)
    assert rate["random_pick"] == pytest.approx((3 * 2 / 3 / 4 + 1) / 2)


def test_identity_table_says_where_the_failures_are():
    """X's far face fails its 3 genuine pairs, Y's two faces match; Z has one face (no
    pair). The table counts per identity and puts X first with every failure."""
    desc = {"x0": 0.0, "x1": 0.1, "x2": 0.2, "x3": 2.0, "y0": 5.0, "y1": 5.1, "z0": 9.0}
    faces = pd.DataFrame(
        {"identity": ["X"] * 4 + ["Y"] * 2 + ["Z"], "frame_index": [0, 20, 40, 60, 0, 20, 0]},
        index=list(desc),
    )
    faces["descriptor"] = [np.array([v]) for v in desc.values()]
    faces["video"] = ["x.mp4"] * 4 + ["y.mp4"] * 2 + ["z.mp4"]
    faces["kind"] = "clip"
    pairs = video_pairs(faces.rename_axis("path").reset_index(), min_gap=10)
    t = identity_table(faces, pairs, threshold=0.5).set_index("identity")
    assert list(t.index) == ["X", "Y", "Z"]
    assert t.loc["X", ["faces", "genuine_pairs", "failed_pairs"]].tolist() == [4, 6, 3]
    assert t.loc["X", "fnmr"] == pytest.approx(0.5) and t.loc["X", "share_of_failures"] == 1.0
    assert t.loc["Y", ["genuine_pairs", "failed_pairs"]].tolist() == [1, 0]
    assert t.loc["Z", "genuine_pairs"] == 0 and np.isnan(t.loc["Z", "fnmr"])
    # a stricter threshold fails more pairs, and the shares still add up to one
    strict = identity_table(faces, pairs, threshold=0.05).set_index("identity")
    assert strict["failed_pairs"].sum() == 6 + 1
    assert strict["share_of_failures"].sum() == pytest.approx(1.0)


def test_pauc_without_an_identity_ranks_the_rest():
    """X fails on its far face x3 and Y on y2. ``good`` scores x3 and y2 lowest; ``odd``
    scores x3 lowest but y2 highest. Without X only Y's order is left: ``good`` finds Y's
    failures, ``odd`` does not, and the figures are the EDC of Y and Z alone."""
    pos = {"x0": 0.0, "x1": 0.1, "x2": 0.2, "x3": 2.0, "y0": 5.0, "y1": 5.1, "y2": 7.0}
    pos |= {"z0": 9.0, "z1": 9.1}
    faces = pd.DataFrame({"path": list(pos), "identity": [k[0].upper() for k in pos]})
    faces["frame_index"] = [0, 20, 40, 60, 0, 20, 40, 0, 20]
    faces["descriptor"] = [np.array([v]) for v in pos.values()]
    faces["video"] = faces["identity"] + ".mp4"
    faces["kind"], faces["ok"] = "clip", True
    faces["good"] = [3, 2, 1, 0, 2, 1, 0, 5, 5]
    faces["odd"] = [3, 2, 1, 0, 1, 0, 9, 5, 5]
    pairs = video_pairs(faces, min_gap=10)
    got = pauc_without(faces, pairs, "X", 0.5, ("good", "odd"))
    assert got["good"] < got["odd"]
    rest = faces[faces["identity"] != "X"]
    sub = pairs[pairs["a"].isin(rest["path"]) & pairs["b"].isin(rest["path"])]
    table, _ = edc_table(rest, sub, measures=("good", "odd"), threshold=0.5)
    assert got == {m: pauc(table, m) for m in ("good", "odd")}
    # leaving out everyone but one clip leaves no impostor pair: nothing to rank
    assert pauc_without(faces[faces["identity"] != "Z"], pairs, "Y", 0.5, ("good",)) == {}


def test_best_shot_plot_draws_each_measure_to_scale(tmp_path):
    import cv2

    from face_iqa.judge.recognition import _COLOURS

    best = pd.DataFrame(
        {
            "measure": ["det_prob", "hyperiqa", "random_pick", "best_possible"],
            "match_rate": [0.4, 0.8, 0.5, 0.9],
        }
    )
    img = cv2.imread(str(plot_best_shot(best, tmp_path / "b.png")))
    assert img is not None and img.shape[1] == 720

    def length(name):  # pixels of the measure's colour along its bar's middle row
        hit = np.all(img == np.array(_COLOURS[name], np.uint8), axis=2)
        return hit.sum(axis=1).max()

    assert length("hyperiqa") / length("det_prob") == pytest.approx(2.0, rel=0.05)
    assert length("hyperiqa") == pytest.approx(0.8 * (720 - 40 - 150), rel=0.05)


def test_frontalness_falls_as_the_head_turns():
    frontal = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], float)
    values = []
    for shift in (0, 5, 10, 20):
        lm = frontal.copy()
        lm[2, 0] += shift  # the nose moves towards one cheek
        values.append(frontalness(lm))
    assert values[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(values, values[1:]))
    rolled = frontal @ np.array([[0.8, -0.6], [0.6, 0.8]])  # a tilted frontal face
    assert frontalness(rolled) == pytest.approx(1.0)
    # a stack of faces gives each face's value; no landmarks (NaN) give NaN, not 1 or 0
    profile = frontal.copy()
    profile[2, 0] += 40  # the nose beyond the eye: seen from the side
    stack = np.stack([frontal, rolled, profile, np.full((5, 2), np.nan), np.zeros((5, 2))])
    got = frontalness(stack)
    assert got.shape == (5,) and got[:2] == pytest.approx([1.0, 1.0])
    assert got[2] == pytest.approx(frontalness(profile)) and got[2] < 0
    assert np.isnan(got[3]) and got[4] == 0.0


def test_eval_recognition_on_three_real_clips_with_a_compared_model(tmp_path):
    """The command on three one-person clips: every measure's EDC column and best-shot row,
    faces of one clip at least --min-gap frames apart, and a compared model (the first one
    again) giving the first one's curve."""
    from face_iqa.judge.video import VIDEO_MEASURES
    from face_iqa.model.scorer import default_checkpoint
    from pipeline.cli import main
    from tests.conftest import shared_path

    args = ["eval-recognition", "--clips", str(shared_path("clips.csv")), "--device", "cpu"]
    args += ["--persons", "liveportrait_driving_d0", "retalking_5", "liveportrait_source_s13"]
    args += ["--per-identity", "5", "--min-gap", "12", "--out", str(tmp_path)]
    assert main([*args, "--compare", f"twin={default_checkpoint()}"]) == 0
    table = pd.read_csv(tmp_path / "edc.csv")
    assert set(table.columns) == {"discarded", *VIDEO_MEASURES, "twin"}
    assert np.array_equal(table["twin"], table["hyperiqa"])
    faces = pd.read_parquet(tmp_path / "faces.parquet")
    assert faces["identity"].nunique() == 3 and faces.groupby("identity").size().max() <= 5
    for _, g in faces.groupby("identity"):
        assert np.diff(np.sort(g["frame_index"].to_numpy())).min() >= 12
    best = pd.read_csv(tmp_path / "best_shot.csv").set_index("measure")
    assert {*VIDEO_MEASURES, "twin", "best_possible"} <= set(best.index)
    assert (tmp_path / "best_shot.png").stat().st_size > 1000
    ids = pd.read_csv(tmp_path / "identities.csv")
    assert sorted(ids["identity"]) == sorted(faces["identity"].unique())
    assert (ids["failed_pairs"] <= ids["genuine_pairs"]).all()
    assert best.loc["twin", "match_rate"] == best.loc["hyperiqa", "match_rate"]
    assert (best["match_rate"] <= best.loc["best_possible", "match_rate"] + 1e-12).all()
    # what each min_frontalness would keep: level 0 is no rule, stricter levels keep fewer
    from face_iqa.faces.pose import POSE_LEVELS

    pose = pd.read_csv(tmp_path / "pose_thresholds.csv")
    assert list(pose["min_frontalness"]) == [0.0, *POSE_LEVELS]
    assert pose["faces_kept"].iloc[0] == 1.0 and pose["faces_kept"].is_monotonic_decreasing
    kept = faces[faces["ok"]]
    assert pose["faces_kept"].iloc[-1] == pytest.approx((kept["frontalness"] >= 0.9).mean())
