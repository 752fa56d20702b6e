"""Face tracks: linking, gaps, re-linking, per-track selection, independence of sources."""

import numpy as np
import pandas as pd
import pytest

from face_iqa.faces.track import (
    SIGNATURE_BINS,
    TrackerConfig,
    frame_signature,
    shot_starts,
    track_faces,
)
from workers.threshold import ThresholdConfig, ThresholdStage
from workers.track import TrackStage, track_prefix


def _face(x: float, y: float, s: float = 60.0):
    box = np.array([x, y, x + s, y + s])
    lms = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]]) * s + np.array(
        [x, y]
    )
    return box, lms


def _tracks(faces, cfg=None, desc=None, cuts=None):
    pos = np.array([p for p, _, _ in faces])
    boxes = np.stack([_face(x, y)[0] for _, x, y in faces])
    lms = np.stack([_face(x, y)[1] for _, x, y in faces])
    return track_faces(pos, boxes, lms, cfg or TrackerConfig(), desc, cuts)


def test_two_walkers_crossing_paths_keep_their_tracks():
    # A walks right, B walks left, on different rows; they pass each other at frame 10
    faces = []
    for p in range(20):
        faces.append((p, 100 + 20 * p, 100))
        faces.append((p, 500 - 20 * p, 190))
    t = _tracks(faces)
    a, b = t[0::2], t[1::2]
    assert len(set(a)) == 1 and len(set(b)) == 1 and a[0] != b[0]


def test_fast_motion_linked_by_velocity_and_landmarks():
    # a walker speeds up to 55 px a frame (60 px face): the step's IoU with the last box
    # is 0.04 and the landmarks move 0.92 face sizes, but the constant-velocity
    # prediction keeps the link
    xs = [100, 115, 130, 185, 240, 295, 350, 405]
    assert len(set(_tracks([(p, x, 100) for p, x in enumerate(xs)]))) == 1
    # the same 55 px step from standing still is not linked (no evidence of motion)
    assert len(set(_tracks([(0, 100, 100), (1, 155, 100)], TrackerConfig(min_faces=1)))) == 2


def test_short_tracks_are_dropped():
    # a person in 5 frames, and a one-frame false detection elsewhere
    faces = [(p, 100 + 2 * p, 100) for p in range(5)] + [(2, 700, 400)]
    t = _tracks(faces, TrackerConfig(min_faces=3))
    assert list(t) == [0, 0, 0, 0, 0, -1]


def test_gaps_tolerated_then_track_ends():
    short_gap = [(0, 100, 100), (1, 102, 100), (4, 104, 100)]  # 2 frames missed
    assert len(set(_tracks(short_gap, TrackerConfig(max_gap=2, min_faces=1)))) == 1
    long_gap = [(0, 100, 100), (1, 102, 100), (9, 104, 100)]  # 7 frames missed
    t = _tracks(long_gap, TrackerConfig(max_gap=2, min_faces=1))
    assert t[0] == t[1] != t[2]


def test_reid_relinks_a_returning_person_only_when_descriptors_match():
    faces = [(0, 100, 100), (1, 102, 100), (20, 600, 300), (21, 602, 300)]
    me = np.zeros(128)
    me[0] = 1.0
    other = np.zeros(128)
    other[1] = 1.0
    same = np.stack([me, me, me + 0.01, me])
    cfg = TrackerConfig(max_gap=3, reid=True, min_faces=1)
    t = _tracks(faces, cfg, same)
    assert len(set(t)) == 1
    t = _tracks(faces, cfg, np.stack([me, me, other, other]))
    assert len(set(t)) == 2
    assert len(set(_tracks(faces, TrackerConfig(max_gap=3, min_faces=1), same))) == 2  # reid off


def _source_rows(source, faces):
    rows = []
    for p, x, y in faces:
        box, lms = _face(x, y)
        rows.append(
            dict(source=source, frame_index=p, face_index=0, box=box, landmarks=lms, status="ok")
        )
    return rows


def test_tracks_end_at_a_shot_cut():
    """A face at frames 0-9; at frame 10 the shot cuts to someone else 15 px away, who is
    linked by position alone. With the cut the two are two tracks; ``reid`` joins the two
    sides of a cut again only when the descriptors say it is the same person."""
    faces = [(p, 100 + 2 * p, 100) for p in range(10)] + [(p, 135, 100) for p in range(10, 20)]
    assert len(set(_tracks(faces))) == 1  # no cut known: one track, two people
    t = _tracks(faces, cuts=np.array([10]))
    assert len(set(t[:10])) == 1 and len(set(t[10:])) == 1 and t[0] != t[10]
    assert len(set(_tracks(faces, cuts=np.array([25])))) == 1  # a cut after the faces
    cfg = TrackerConfig(reid=True)
    same = np.zeros((20, 128))
    other = same.copy()
    other[10:, 0] = 1.0  # descriptors 1.0 apart across the cut
    assert len(set(_tracks(faces, cfg, same, np.array([10])))) == 1
    assert len(set(_tracks(faces, cfg, other, np.array([10])))) == 2


def test_shot_starts_from_frame_signatures():
    red, blue = np.zeros((90, 160, 3), np.uint8), np.zeros((90, 160, 3), np.uint8)
    red[..., 0], blue[..., 2] = 200, 200
    red[:, :80, 1] = 60  # some texture; shifting it by a few pixels is motion, not a cut
    moved = np.roll(red, 4, axis=1)
    sig = np.stack([frame_signature(f) for f in (red, moved, red, blue, blue)])
    assert sig.shape == (5, SIGNATURE_BINS) and np.allclose(sig.sum(axis=1), 1.0)
    assert list(shot_starts(sig, 0.3)) == [3]
    assert list(shot_starts(sig, 0.0)) == []  # off
    unknown = sig.copy()
    unknown[3] = np.nan  # the first blue frame failed to decode: the cut shows at the next
    assert list(shot_starts(unknown, 0.3)) == [4]
    with pytest.raises(ValueError, match="cut_threshold"):
        TrackerConfig(cut_threshold=1.5)


def test_track_stage_reads_the_cuts_from_frame_signatures():
    """The detect stage's ``frame_sig`` column: a face that stays put across a cut from a
    red shot to a blue one is two tracks; a faceless frame's row carries its signature."""
    red, blue = np.zeros((36, 64, 3), np.uint8), np.zeros((36, 64, 3), np.uint8)
    red[..., 0], blue[..., 2] = 200, 200
    rows = []
    for i in range(12):
        sig = frame_signature(red if i < 6 else blue)
        if i == 6:
            rows.append(dict(frame_index=i, face_index=-1, box=None, landmarks=None,
                             status="no_face", frame_sig=sig))  # fmt: skip
            continue
        box, lms = _face(100, 100)
        rows.append(dict(frame_index=i, face_index=0, box=box, landmarks=lms, status="ok",
                         frame_sig=sig))  # fmt: skip
    df = pd.DataFrame(rows).assign(source="cut.mp4")
    batch = {c: df[c].to_numpy() for c in df.columns}
    ids = TrackStage()(batch)["track_id"]
    assert len({ids[i] for i in range(6)}) == 1 and len({ids[i] for i in range(7, 12)}) == 1
    assert ids[0] != ids[7] and ids[6] == ""
    off = TrackStage(TrackerConfig(cut_threshold=0.0))(batch)["track_id"]
    assert len(set(off) - {""}) == 1
    no_sig = {c: v for c, v in batch.items() if c != "frame_sig"}  # older rows: no cuts
    assert len(set(TrackStage()(no_sig)["track_id"]) - {""}) == 1


def test_track_stage_ids_depend_on_the_source_alone():
    a = _source_rows("/v/a.mp4", [(p, 100 + 5 * p, 100) for p in range(10)])
    b = _source_rows("/v/b.mp4", [(p, 300, 100 + 5 * p) for p in range(10)])

    def run(rows):
        batch = {
            k: np.array([r[k] for r in rows] if k not in ("box", "landmarks") else None)
            for k in rows[0]
        }
        batch["box"] = np.empty(len(rows), object)
        batch["landmarks"] = np.empty(len(rows), object)
        for i, r in enumerate(rows):
            batch["box"][i], batch["landmarks"][i] = r["box"], r["landmarks"]
        return TrackStage()(batch)["track_id"]

    assert set(run(a[:2])) == {""}  # too short for a track (min_faces 3)
    alone = run(a)
    assert set(alone) == {f"{track_prefix('/v/a.mp4')}-t000"}
    assert set(run(b)) != set(alone)  # ids are unique across sources
    assert list(run(a[::-1]))[::-1] == list(alone)  # row order does not matter
    with pytest.raises(ValueError, match="one source"):
        run(a + b)


def test_track_prefix_is_folder_safe():
    p = track_prefix("../../etc/pass wd.mp4")
    assert "/" not in p and ".." not in p and " " not in p


def _faces_table(qualities, track="t1", frames=None):
    n = len(qualities)
    frames = list(range(n)) if frames is None else frames
    return pd.DataFrame(
        {
            "source": "s.mp4",
            "frame_index": frames,
            "timestamp_s": np.arange(n) / 25.0,
            "face_index": 0,
            "track_id": track,
            "status": "ok",
            "error": "",
            "quality": qualities,
            "face_size": 80.0,
            "det_prob": 0.99,
        }
    )


def test_best_per_track_keeps_top_k_with_gap_and_min_quality():
    q = [30, 90, 89, 88, 50, 70, 35]
    cfg = ThresholdConfig(policy="best_per_track", track_k=2, track_min_gap=2, min_quality=40)
    faces, frames = ThresholdStage(cfg).decide(_faces_table(q))
    kept = faces.loc[faces["keep"], "frame_index"].tolist()
    assert kept == [1, 3]  # 90, then 88 (89 is 1 frame from 90: too close)
    assert frames.loc[frames["keep"], "frame_index"].tolist() == [1, 3]
    r = dict(zip(faces["frame_index"], faces["reason"]))
    assert r[2] == "not among the best 2 of its track" and r[0].startswith("quality")
    # every face below min_quality: nothing kept, even as a track's best
    faces, _ = ThresholdStage(cfg).decide(_faces_table([10, 20, 30]))
    assert not faces["keep"].any()


def test_best_per_track_needs_track_ids():
    with pytest.raises(ValueError, match="track ids"):
        ThresholdStage(ThresholdConfig(policy="best_per_track")).decide(
            _faces_table([50.0]).drop(columns=["track_id"])
        )
