import numpy as np
import pandas as pd
import pytest

from workers.threshold import FRAME_COLUMNS, ThresholdConfig, ThresholdStage


def _faces(rows):
    cols = [
        "source",
        "frame_index",
        "face_index",
        "quality",
        "face_size",
        "det_prob",
        "status",
        "error",
        "timestamp_s",
    ]
    out = []
    for r in rows:
        d = dict(zip(cols, r + [np.nan] * (len(cols) - len(r))))
        d.setdefault("error", "")
        if not isinstance(d["error"], str):
            d["error"] = ""
        out.append(d)
    return pd.DataFrame(out)


FACES = _faces(
    [
        # source, frame, face, quality, size, det_prob, status
        ["v", 0, 0, 80.0, 100.0, 0.99, "ok"],
        ["v", 0, 1, 20.0, 30.0, 0.99, "ok"],
        ["v", 1, 0, 30.0, 120.0, 0.99, "ok"],
        ["v", 2, -1, np.nan, np.nan, np.nan, "no_face"],
        ["v", 3, -1, np.nan, np.nan, np.nan, "error", "v: frame 3 could not be decoded"],
        ["v", 4, 0, 60.0, 50.0, 0.80, "ok"],
        ["w", 0, 0, 90.0, 200.0, 0.999, "ok"],
    ]
)


def test_face_rules_and_reasons():
    st = ThresholdStage(ThresholdConfig(min_quality=40, min_face_size=40, min_det_prob=0.9))
    out = st({c: FACES[c].to_numpy() for c in FACES.columns})
    assert list(out["face_pass"]) == [True, False, False, False, False, False, True]
    r = list(out["face_reason"])
    assert r[1] == "quality 20.0 < 40" and r[2] == "quality 30.0 < 40"
    assert r[3] == "no face" and r[4] == "error" and r[5].startswith("det_prob 0.800")


def test_exposure_rule_and_its_absence():
    """Under-exposed faces are rejected with their own reason, after the other rules; a
    batch without ``exposure`` (a custom score stage) or a NaN there is not ruled on."""
    st = ThresholdStage(ThresholdConfig(min_quality=40, min_exposure=50))
    batch = {c: FACES[c].to_numpy() for c in FACES.columns}
    batch["exposure"] = np.array([30.0, 30.0, 200.0, np.nan, np.nan, np.nan, 120.0])
    out = st(batch)
    assert list(out["face_pass"]) == [False, False, False, False, False, True, True]
    assert out["face_reason"][0] == "exposure 30 < 50 (under-exposed)"
    assert out["face_reason"][1] == "quality 20.0 < 40"  # the model's reason comes first
    del batch["exposure"]
    assert st(batch)["face_pass"][0]
    faces, frames = st.decide(FACES.assign(exposure=batch["quality"] * 0 + 10.0))
    assert not faces.loc[faces["status"] == "ok", "keep"].any()
    assert frames.loc[0, "reason"] == "no face passes (exposure 10 < 50 (under-exposed))"


def test_frontalness_rule_off_by_default_and_its_reason():
    """A turned face is rejected with its own reason once ``min_frontalness`` is set; at the
    default 0 no face is, not even one in profile (frontalness below 0); NaN: not ruled on."""
    batch = {c: FACES[c].to_numpy() for c in FACES.columns}
    batch["frontalness"] = np.array([0.4, 0.9, 0.9, np.nan, np.nan, np.nan, -0.2])
    off = ThresholdStage(ThresholdConfig(min_quality=10, min_exposure=0))(batch)
    assert list(off["face_pass"]) == [True, True, True, False, False, True, True]
    on = ThresholdStage(ThresholdConfig(min_quality=10, min_exposure=0, min_frontalness=0.7))
    out = on(batch)
    assert list(out["face_pass"]) == [False, True, True, False, False, True, False]
    assert out["face_reason"][0] == "frontalness 0.40 < 0.7 (turned head)"
    faces, frames = on.decide(FACES.assign(frontalness=batch["frontalness"]))
    assert (
        frames.set_index(["source", "frame_index"])
        .loc[("w", 0), "reason"]
        .startswith("no face passes (frontalness -0.20 < 0.7")
    )


def test_frame_rules():
    any_f = ThresholdStage(ThresholdConfig(min_quality=40)).decide(FACES)[1]
    assert list(any_f.columns) == FRAME_COLUMNS
    assert list(any_f["keep"]) == [True, False, False, False, True, True]
    assert list(any_f["reason"])[:4] == [
        "a face passes",
        "no face passes (quality 30.0 < 40)",
        "no face",
        "error",
    ]
    assert any_f.loc[3, "error"] == "v: frame 3 could not be decoded"
    assert list(any_f["n_faces"]) == [2, 1, 0, 0, 1, 1]
    assert any_f.loc[0, "best_quality"] == 80.0
    all_f = ThresholdStage(ThresholdConfig(min_quality=40, frame_rule="all")).decide(FACES)[1]
    assert not all_f.loc[0, "keep"] and "not all faces pass" in all_f.loc[0, "reason"]
    big = ThresholdStage(ThresholdConfig(min_quality=40, frame_rule="largest")).decide(FACES)[1]
    assert big.loc[0, "keep"] and big.loc[0, "reason"] == "largest face passes"
    one = ThresholdStage(ThresholdConfig(min_quality=10, max_faces=1)).decide(FACES)[1]
    assert not one.loc[0, "keep"] and one.loc[0, "reason"] == "2 faces > max 1"


def test_face_keep_follows_frame_decision():
    faces, frames = ThresholdStage(ThresholdConfig(min_quality=40, frame_rule="all")).decide(FACES)
    # face 0 of frame 0 passes its own rules, but its frame is rejected
    assert not faces.loc[0, "keep"]
    assert faces.loc[0, "reason"].startswith("frame rejected: not all faces pass")
    assert faces.loc[6, "keep"] and faces.loc[6, "reason"] == "kept"


def test_top_k_and_quantile_per_source():
    rows = [["a", i, 0, float(q), 100.0, 0.99, "ok"] for i, q in enumerate([50, 90, 70, 60, 80])]
    rows += [["b", i, 0, float(q), 100.0, 0.99, "ok"] for i, q in enumerate([45, 95])]
    f = _faces(rows)
    top = ThresholdStage(ThresholdConfig(min_quality=40, policy="top_k", top_k=2)).decide(f)[1]
    kept = top[top["keep"]]
    assert set(zip(kept["source"], kept["frame_index"])) == {("a", 1), ("a", 4), ("b", 0), ("b", 1)}
    assert "not in the top 2" in top.loc[0, "reason"]
    q = ThresholdStage(ThresholdConfig(min_quality=40, policy="quantile", quantile=0.5)).decide(f)[
        1
    ]
    a = q[q["source"] == "a"]
    assert list(a["keep"]) == [False, True, True, False, True]
    assert "below its source's 0.5-quantile (70.0)" in a.iloc[0]["reason"]


@pytest.mark.parametrize(
    "bad",
    [
        {"frame_rule": "most"},
        {"policy": "best"},
        {"top_k": 0},
        {"quantile": 2.0},
        {"max_faces": 0},
        {"min_exposure": -1.0},
        {"min_exposure": 300.0},
        {"min_frontalness": -0.1},
        {"min_frontalness": 1.5},
    ],
)
def test_bad_config(bad):
    with pytest.raises(ValueError):
        ThresholdConfig(**bad)


def _frames_one_group_at_a_time(stage: ThresholdStage, f: pd.DataFrame, per_track: bool):
    """The frame decisions written the plain way, a pandas group per frame (the stage's
    implementation before it was vectorised): the reference for the test below."""
    c = stage.cfg
    rows = []
    for (src, idx), g in f.groupby(["source", "frame_index"], sort=True):
        fg = g[g["status"] == "ok"]
        n = len(fg)
        err = g["status"].eq("error") & g["face_index"].lt(0)
        status = "error" if err.any() else ("ok" if n else "no_face")
        error = "; ".join(m for m in g.loc[g["status"] == "error", "error"] if m)
        passing = fg[fg["face_pass"]]
        first = str(fg["face_reason"].iloc[0]) if n else ""
        if status == "error":
            keep, reason, score = False, "error", np.nan
        elif n == 0:
            keep, reason, score = False, "no face", np.nan
        elif c.max_faces is not None and n > c.max_faces:
            keep, reason, score = False, f"{n} faces > max {c.max_faces}", np.nan
        elif per_track:
            picks = fg[fg["_pick"]]
            keep = len(picks) > 0
            score = float(picks["quality"].max()) if keep else np.nan
            if keep:
                reason = "best shot of its track"
            elif len(passing):
                reason = f"no face among the best {c.track_k} of its track"
            else:
                reason = f"no face passes ({first})"
        elif c.frame_rule == "any":
            keep = len(passing) > 0
            score = float(passing["quality"].max()) if keep else np.nan
            reason = "a face passes" if keep else f"no face passes ({first})"
        elif c.frame_rule == "all":
            keep = len(passing) == n
            score = float(fg["quality"].min()) if keep else np.nan
            bad = fg[~fg["face_pass"]]
            reason = (
                "all faces pass" if keep else f"not all faces pass ({bad['face_reason'].iloc[0]})"
            )
        else:
            big = fg.loc[fg["_area"].idxmax()]
            keep = bool(big["face_pass"])
            score = float(big["quality"]) if keep else np.nan
            reason = "largest face passes" if keep else f"largest face: {big['face_reason']}"
        rows.append(
            {
                "source": src,
                "frame_index": int(idx),
                "timestamp_s": float(g["timestamp_s"].iloc[0]),
                "n_faces": n,
                "best_quality": float(fg["quality"].max()) if n else np.nan,
                "keep": bool(keep),
                "reason": reason,
                "status": status,
                "error": error,
                "_score": score,
            }
        )
    return rows


@pytest.mark.parametrize(
    "cfg",
    [
        dict(frame_rule="any"),
        dict(frame_rule="all", max_faces=3),
        dict(frame_rule="largest"),
        dict(policy="best_per_track", track_k=2, track_min_gap=3),
    ],
)
def test_frame_decisions_equal_the_per_frame_loop(cfg):
    """The vectorised frame decisions give, row for row, what a pandas group per frame
    gives: random sources with several faces, faceless and failed frames, error rows
    beside faces, equal face sizes (ties), missing qualities."""
    rng = np.random.default_rng(0)
    rows = []
    for src in ("b.mp4", "a.mp4"):
        for fi in rng.permutation(300):  # rows arrive out of frame order
            kind = rng.choice(["faces", "none", "error", "faces+error"], p=[0.7, 0.1, 0.1, 0.1])
            ts = fi / 25
            if kind == "none":
                rows.append([src, fi, -1, np.nan, np.nan, np.nan, "no_face", "", ts])
            if kind in ("error", "faces+error"):
                msg = "" if rng.random() < 0.3 else f"{src}: frame {fi} trouble"
                rows.append([src, fi, -1, np.nan, np.nan, np.nan, "error", msg, ts])
            if kind in ("faces", "faces+error"):
                for k in range(int(rng.integers(1, 5))):
                    q = np.nan if rng.random() < 0.05 else float(rng.integers(0, 100))
                    size = float(rng.choice([30.0, 60.0, 60.0, 120.0]))
                    rows.append([src, fi, k, q, size, rng.uniform(0.8, 1.0), "ok", "", ts])
    f = _faces(rows)
    f["track_id"] = np.where(
        f["face_index"] >= 0, f["source"] + "-" + f["face_index"].astype(str), ""
    )
    stage = ThresholdStage(ThresholdConfig(min_quality=40, min_face_size=40, **cfg))
    f["face_pass"], f["face_reason"] = stage.face_rules(
        f["status"].to_numpy(str),
        f["quality"].to_numpy(np.float64),
        f["face_size"].to_numpy(np.float64),
        f["det_prob"].to_numpy(np.float64),
        None,
    )
    is_face = f["status"] == "ok"
    f["_area"] = np.where(is_face, f["face_size"].fillna(0.0) ** 2, -1.0)
    per_track = stage.cfg.policy == "best_per_track"
    if per_track:
        f["_pick"] = stage._track_picks(f)
    want = pd.DataFrame(_frames_one_group_at_a_time(stage, f, per_track))
    got = pd.DataFrame(stage._frame_rows(f, per_track))
    assert len(got) == 600 and set(got["reason"]) == set(want["reason"])
    assert got["keep"].any() and not got["keep"].all()
    pd.testing.assert_frame_equal(got, want)
