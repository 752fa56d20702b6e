"""The main job on real videos and images, through a real Ray instance."""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from face_iqa.faces.detect import DetectorConfig, build_detector
from pipeline.config import load_config
from pipeline.run_job import run
from tests.conftest import shared_path
from tests.util import match_boxes
from workers.detect import DetectStage

pytestmark = pytest.mark.ray  # (the resource plan test needs no Ray, harmless)

FAST = ["detect.detector.max_side=640", "ray.num_cpus=2"]


def _cfg(ckpt, *extra):
    return load_config(
        None,
        [
            f"score.scorer.checkpoint={ckpt}",
            "detect.detector.device=cpu",
            "score.scorer.device=cpu",
            *FAST,
            *extra,
        ],
    )


def _frames_of(video: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    out = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return out


@pytest.fixture(scope="module")
def video_run(ray_local, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("videos")
    videos = [
        shared_path("videos", "short_hamilton_clip.mp4"),
        shared_path("videos", "facenet_example.mp4"),
    ]
    cfg = _cfg(tiny_checkpoint, "decode.chunk_frames=40")
    frames = run([str(v) for v in videos], out, cfg, progress=False)
    return videos, out, frames, cfg


def test_no_track_crosses_a_shot_cut(video_run):
    """The stage video cuts between shots three times (frames 20, 82 and 211); a face of
    the next shot near a face of the last would otherwise continue its track."""
    from tests.test_track_video import STAGE_CUTS

    videos, out, _, _ = video_run
    tracks = pd.read_parquet(out / "tracks.parquet")
    stage = tracks[tracks["source"] == str(videos[0])]
    assert len(stage) >= 4
    for cut in STAGE_CUTS:
        across = stage[(stage["first_frame"] < cut) & (stage["last_frame"] >= cut)]
        assert across.empty, (cut, across[["track_id", "first_frame", "last_frame"]])


@pytest.mark.slow
def test_tracks_are_the_same_alone_and_with_other_sources(video_run, tmp_path):
    """...and, alone, with ``best_per_track``: k crops per track under crops/TRACK_ID/."""
    from dataclasses import replace

    from workers.threshold import ThresholdConfig

    videos, out, _, cfg = video_run
    src = str(videos[1])
    best = ThresholdConfig(policy="best_per_track", track_k=2, track_min_gap=5, min_quality=0)
    cfg_best = replace(cfg, threshold=best, output=replace(cfg.output, crops=True))
    run([src], tmp_path / "alone", cfg_best, progress=False)

    def tracks(folder):
        t = pd.read_parquet(folder / "tracks.parquet")
        t = t[t["source"] == src].reset_index(drop=True)
        return t.drop(columns=["n_kept", "kept_face_ids"])  # those depend on the policy

    def face_tracks(folder):
        f = pd.read_parquet(folder / "faces.parquet")
        f = f[(f["source"] == src) & (f["face_index"] >= 0)]
        return f.set_index(["frame_index", "face_index"])["track_id"].sort_index()

    together, alone = tracks(out), tracks(tmp_path / "alone")
    assert len(alone) >= 5  # a crowd: several people tracked
    # same tracks; best_quality to float noise (a face's score moves by ~1e-5 with the other
    # faces of its scorer pass, and the video is cut into other chunks when alone)
    pd.testing.assert_frame_equal(together, alone, check_exact=False, rtol=0, atol=1e-4)
    pd.testing.assert_series_equal(face_tracks(out), face_tracks(tmp_path / "alone"))
    # every face of a track is in faces.parquet with that track id
    f = pd.read_parquet(out / "faces.parquet")
    counts = f[f["track_id"] != ""].groupby("track_id").size()
    t_all = pd.read_parquet(out / "tracks.parquet").set_index("track_id")["n_faces"]
    pd.testing.assert_series_equal(counts.sort_index(), t_all.sort_index(), check_names=False)
    # best_per_track: each track keeps its 2 best faces, >= 5 frames apart, as crops
    t = pd.read_parquet(tmp_path / "alone" / "tracks.parquet")
    fa = pd.read_parquet(tmp_path / "alone" / "faces.parquet")
    for r in t.itertuples():  # the best passing face, plus one more if any is >= 5 frames away
        g = fa[(fa["track_id"] == r.track_id) & fa["reason"].str.contains("of its track")]
        if g.empty:
            assert r.n_kept == 0, r
            continue
        best = int(g.loc[g["quality"].idxmax(), "frame_index"])
        assert r.n_kept == 1 + int((abs(g["frame_index"] - best) >= 5).any()), r
    assert (t["n_kept"] == 2).sum() >= 3
    for r in t.itertuples():
        files = sorted(p.name for p in (tmp_path / "alone" / "crops" / r.track_id).glob("*.png"))
        assert [f[-14:-4] for f in files] == sorted(r.kept_face_ids)
        frames_kept = [int(k[1:7]) for k in r.kept_face_ids]
        assert len(frames_kept) < 2 or abs(frames_kept[0] - frames_kept[1]) >= 5


@pytest.mark.slow
def test_two_calls_per_worker_give_the_same_faces(video_run, tmp_path):
    """``ray.worker_calls=2``: each worker runs two tasks at once on threads sharing its
    models; every face gets the box and score it gets one call at a time."""
    from dataclasses import replace

    videos, out, _, cfg = video_run
    src = str(videos[0])
    cfg2 = replace(cfg, ray=replace(cfg.ray, worker_calls=2))
    run([src], tmp_path / "two", cfg2, progress=False)

    def faces(folder):
        f = pd.read_parquet(folder / "faces.parquet")
        f = f[(f["source"] == src) & (f["face_index"] >= 0)]
        f = f.sort_values(["frame_index", "face_index"])
        return f[["frame_index", "face_index"]].to_numpy(), np.stack(f["box"]), f["quality"]

    (keys1, box1, q1), (keys2, box2, q2) = faces(out), faces(tmp_path / "two")
    assert len(keys1) > 50
    np.testing.assert_array_equal(keys1, keys2)
    np.testing.assert_allclose(box1, box2, atol=1e-3)
    np.testing.assert_allclose(q1, q2, atol=1e-3)


@pytest.mark.slow
def test_every_video_frame_once_and_faces_match_detector(video_run):
    videos, out, frames, cfg = video_run
    faces = pd.read_parquet(out / "faces.parquet")
    assert frames.equals(pd.read_parquet(out / "frames.parquet"))
    det = build_detector(DetectorConfig(device="cpu", max_side=640))
    for v in videos:
        ref_frames = _frames_of(v)
        got = frames[frames["source"] == str(v)]
        assert list(got["frame_index"]) == list(range(len(ref_frames)))  # once, in order
        assert set(got["status"]) <= {"ok", "no_face"}
        fps = cv2.VideoCapture(str(v)).get(cv2.CAP_PROP_FPS)
        np.testing.assert_allclose(got["timestamp_s"], np.arange(len(ref_frames)) / fps)
        vf = faces[(faces["source"] == str(v)) & (faces["status"] == "ok")]
        # the detector alone, on every 7th frame (chunk borders included), finds the same faces
        for i in range(0, len(ref_frames), 7):
            ref = det.detect([ref_frames[i]])[0]
            ours = vf[vf["frame_index"] == i]
            assert len(ours) == len(ref), (v.name, i)
            if len(ref):
                boxes = np.stack(ours["box"].map(np.asarray).to_list())
                assert min(x for _, _, x in match_boxes(boxes, ref.boxes)) > 0.999
        n_faces = vf.groupby("frame_index").size().reindex(got["frame_index"], fill_value=0)
        np.testing.assert_array_equal(n_faces.to_numpy(), got["n_faces"].to_numpy())


def test_summary_and_reasons(video_run):
    import json

    _, out, frames, _ = video_run
    s = json.loads((out / "summary.json").read_text())
    assert s["counts"]["frames"] == len(frames) == 275 + 105
    assert s["counts"]["frames_kept"] + s["counts"]["frames_rejected"] == len(frames)
    assert len(s["model"]["sha256"]) == 64 and "torch" in s["versions"]
    assert s["config"]["detect"]["detector"]["max_side"] == 640
    for k in ("decode_s", "detect_s", "align_s", "score_s", "write_s", "finish_s", "wall"):
        assert s["timing_s"][k] > 0
    # results came in several batches: the start-up and the rate after it are known
    st = s["stream"]
    assert 0 < st["first_result_s"] < s["timing_s"]["wall"]
    assert 0 < st["frames_after_first"] < len(frames) and st["fps_after_first"] > 0
    assert frames["reason"].str.len().gt(0).all()


def test_bad_inputs_are_error_rows(ray_local, tiny_checkpoint, tmp_path):
    src = shared_path("videos", "short_hamilton_clip.mp4")
    data = src.read_bytes()
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "corrupt.mp4").write_bytes(os.urandom(50_000))
    (inp / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (inp / "notes.jpg").write_text("not an image")
    shutil.copy(shared_path("images", "obama-240p.jpg"), inp / "good.jpg")
    out = tmp_path / "out"
    from pipeline.cli import main

    code = main(
        [
            "run",
            str(inp),
            "--out",
            str(out),
            "--quiet",
            "--set",
            f"score.scorer.checkpoint={tiny_checkpoint}",
            *sum([["--set", s] for s in FAST], []),
        ]
    )
    assert code == 0
    frames = pd.read_parquet(out / "frames.parquet")
    by = frames.groupby(frames["source"].map(lambda s: Path(s).name))
    corrupt = by.get_group("corrupt.mp4")
    assert list(corrupt["status"]) == ["error"] and "corrupt.mp4" in corrupt["error"].iloc[0]
    notes = by.get_group("notes.jpg")
    assert list(notes["status"]) == ["error"] and "not a recognised image" in notes["error"].iloc[0]
    assert list(by.get_group("good.jpg")["status"]) == ["ok"]
    trunc = by.get_group("truncated.mp4")
    # a truncated MP4 either fails to open (one error row) or yields the frames before the cut
    assert (list(trunc["status"]) == ["error"]) or (trunc["frame_index"].min() == 0)
    import json

    s = json.loads((out / "summary.json").read_text())
    assert s["counts"]["frame_errors"] >= 2


def test_matroska_clips_run_without_false_errors(ray_local, tiny_checkpoint, tmp_path):
    """Two shared clips whose container lists one frame more than they hold: no error rows,
    every decoded frame in the manifest, both counts in the summary; a copy cut short still
    gets its error row."""
    import json

    clips = [shared_path("clips", n) for n in ("asl_again.mkv", "asl_brother.mkv")]
    data = shared_path("clips", "asl_book.mkv").read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 2 // 3])
    out = tmp_path / "out"
    cfg = _cfg(tiny_checkpoint, "decode.chunk_frames=24", "threshold.min_quality=-1000")
    frames = run([*map(str, clips), str(cut)], out, cfg, progress=False)
    by = {Path(s).name: g for s, g in frames.groupby("source")}
    summary = json.loads((out / "summary.json").read_text())
    for clip, n in zip(clips, (77, 65)):
        g = by[clip.name]
        assert set(g["status"]) == {"ok"} and list(g["frame_index"]) == list(range(n))
        assert summary["videos"][str(clip)] == {"frames_listed": n + 1, "frames_decoded": n}
    c = by["cut.mkv"]
    err = c[c["status"] == "error"]
    assert len(err) == 1 and "truncated or corrupt" in err["error"].iloc[0]
    decoded = summary["videos"][str(cut)]["frames_decoded"]
    assert decoded == (c["status"] == "ok").sum() < summary["videos"][str(cut)]["frames_listed"]
    assert summary["counts"]["frame_errors"] == 1
    assert set(pd.read_parquet(out / "frames.parquet").columns) == set(frames.columns)
    assert "frames_listed" not in frames.columns


def test_missing_input_and_bad_config_fail_before_work(tmp_path, capsys):
    from pipeline.cli import main

    assert main(["run", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.mp4" in capsys.readouterr().err
    img = shared_path("images", "obama-240p.jpg")
    assert (
        main(["run", str(img), "--out", str(tmp_path / "o"), "--set", "threshold.min_qualty=3"])
        == 2
    )
    assert "min_qualty" in capsys.readouterr().err
    assert not (tmp_path / "o" / "frames.parquet").exists()


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """200 small photos made from the shared images (seeded random crops)."""
    from bench.photos import make_photos

    folder = tmp_path_factory.mktemp("photos")
    make_photos(200, folder, seed=3, side=160, images=shared_path("images"))
    return folder


@pytest.mark.slow
def test_resume_after_interruption_equals_clean_run(
    ray_local, tiny_checkpoint, tmp_path, photo_folder, monkeypatch
):
    """One execution for a 200-photo folder: a few part files; interrupted (Ctrl-C) after
    about half of it was saved, ``--resume`` skips the saved sources and gives exactly the
    tables of one clean run."""
    import json

    import pipeline.run_job as rj

    cfg = _cfg(tiny_checkpoint, "threshold.min_quality=-1000")
    clean = run([str(photo_folder)], tmp_path / "clean", cfg, progress=False)
    assert len(clean) == 200
    # one flush of the default 500 sources: faces and frames parts, no files per source
    assert sorted(p.name for p in (tmp_path / "clean" / ".parts").iterdir()) == [
        "part-00000.faces.parquet",
        "part-00000.frames.parquet",
    ]

    cfg_small = _cfg(tiny_checkpoint, "threshold.min_quality=-1000", "output.flush_sources=30")
    real = rj._Finisher.finish
    seen = {"n": 0}

    def interrupted(self, ready, **kw):
        if seen["n"] >= 100:
            raise KeyboardInterrupt  # Ctrl-C once about half the folder is finished
        seen["n"] += len(ready)
        return real(self, ready, **kw)

    monkeypatch.setattr(rj._Finisher, "finish", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run([str(photo_folder)], tmp_path / "resumed", cfg_small, progress=False)
    out = tmp_path / "resumed"
    assert not (out / "frames.parquet").exists()
    saved = pd.concat(pd.read_parquet(f) for f in (out / ".parts").glob("part-*.frames.parquet"))
    assert 90 <= saved["source"].nunique() < 200
    monkeypatch.setattr(rj._Finisher, "finish", real)
    resumed = run([str(photo_folder)], out, cfg, resume=True, progress=False)
    s = json.loads((out / "summary.json").read_text())
    assert s["resumed_sources"] == saved["source"].nunique()
    pd.testing.assert_frame_equal(clean, resumed)
    for name in ("faces.parquet", "tracks.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "clean" / name), pd.read_parquet(out / name)
        )


class _Recording:
    """A dataset stand-in that records every batch the driver's iterator hands over."""

    def __init__(self, ds, seen):
        self.ds, self.seen = ds, seen

    def iter_batches(self, **kw):
        for b in self.ds.iter_batches(**kw):
            self.seen.append({k: np.asarray(v) for k, v in b.items()})
            yield b


@pytest.mark.slow
@pytest.mark.parametrize("crops", [False, True])
def test_no_pixels_reach_the_driver(ray_local, tiny_checkpoint, tmp_path, monkeypatch, crops):
    """Frames and crops stay in the workers (they write the crops themselves); the driver's
    iterator gets rows of a few numbers each."""
    import pipeline.graph as graph

    seen: list[dict] = []
    real = graph.build_dataset
    monkeypatch.setattr(graph, "build_dataset", lambda *a, **k: _Recording(real(*a, **k), seen))
    inputs = [
        str(shared_path("images", "two_people.jpg")),
        str(shared_path("videos", "short_hamilton_clip.mp4")),
    ]
    cfg = _cfg(
        tiny_checkpoint, "threshold.min_quality=-1000", "decode.stride=25", f"output.crops={crops}"
    )
    frames = run(inputs, tmp_path / "o", cfg, progress=False)
    assert seen and sum(len(b["source"]) for b in seen) >= len(frames)
    for b in seen:
        assert not {"frame", "crop"} & set(b), sorted(b)
        for name, col in b.items():
            assert col.dtype != np.uint8, name
            per_row = np.asarray(col[0]).size if col.dtype == object else col[0].size
            assert per_row <= 128, (name, col.shape)  # a box, landmarks, a descriptor at most
    written = sorted((tmp_path / "o").rglob("*.png"))
    if crops:  # the workers wrote every kept face's crop; the rest were deleted
        faces = pd.read_parquet(tmp_path / "o" / "faces.parquet")
        assert len(written) == int(faces["keep"].sum()) > 3
        assert not (tmp_path / "o" / ".parts" / "crops_staging").exists()
    else:
        assert written == []


@pytest.mark.slow
def test_default_run_prints_only_progress_and_summary(tiny_checkpoint, tmp_path):
    """A default ``faceiqa run`` (its own Ray): stderr holds the progress bar alone (Ray's
    warnings and log lines went to run.log), stdout the summary."""
    exe = Path(sys.executable).with_name("faceiqa")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = tmp_path / "o"
    img = shared_path("images", "two_people.jpg")
    res = subprocess.run(
        [
            str(exe),
            "run",
            str(img),
            "--out",
            str(out),
            "--set",
            f"score.scorer.checkpoint={tiny_checkpoint}",
            *sum([["--set", s] for s in FAST], []),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in re.split(r"[\r\n]+", res.stderr) if ln.strip()]
    assert lines, "no progress bar"
    for ln in lines:
        assert re.match(r"faceiqa run: +\d+%\|.*\| *\d+/1 \[", ln), ln
    assert "1/1" in lines[-1] and "frames/s" in lines[-1]
    assert res.stdout.startswith("1 frames from 1 sources:") and "manifest:" in res.stdout
    log = (out / "run.log").read_text()
    assert "WARNING" in log or "core_worker" in log  # Ray did speak, into the log


class DyingDetect(DetectStage):
    """Kills its own worker process the first time it sees frame 39 (fault injection)."""

    marker: str = ""

    def __call__(self, batch):
        if 39 in set(int(i) for i in batch["frame_index"]) and not os.path.exists(self.marker):
            Path(self.marker).write_text("died")
            os._exit(1)
        return super().__call__(batch)


@pytest.mark.slow
def test_killed_worker_loses_and_duplicates_nothing(ray_local, tiny_checkpoint, tmp_path):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker = tmp_path / "died.txt"
    dying = type("DyingDetectHere", (DyingDetect,), {"marker": str(marker)})
    video = shared_path("videos", "short_hamilton_clip.mp4")
    cfg = _cfg(tiny_checkpoint, "decode.stride=3", "decode.chunk_frames=10")
    frames = run(
        [str(video)], tmp_path / "out", cfg, progress=False, stage_classes={"detect": dying}
    )
    assert marker.exists()  # the worker really died
    assert list(frames["frame_index"]) == list(range(0, 275, 3))
    assert not frames.duplicated(["source", "frame_index"]).any()


# It runs a second Ray cluster beside the session's: kept after the other Ray tests.
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_against_a_real_ray_head(tiny_checkpoint, tmp_path):
    port = _free_port()
    ray_exe = Path(sys.executable).with_name("ray")
    # Loopback only, and this throwaway head needs no token authentication. Ray's Unix
    # socket paths must stay short: pytest's tmp_path is too long for its temp dir.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    ray_tmp = tempfile.mkdtemp(prefix="rayhead", dir="/tmp")
    head = subprocess.Popen(
        [
            str(ray_exe),
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--block",
            "--include-dashboard=false",
            f"--temp-dir={ray_tmp}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        time.sleep(8)
        out = tmp_path / "out"
        exe = Path(sys.executable).with_name("faceiqa")
        log = tmp_path / "client.log"
        with open(log, "w") as f:
            r = subprocess.run(
                [
                    str(exe),
                    "run",
                    str(shared_path("images", "two_people.jpg")),
                    "--out",
                    str(out),
                    "--ray-address",
                    f"127.0.0.1:{port}",
                    "--quiet",
                    "--set",
                    f"score.scorer.checkpoint={tiny_checkpoint}",
                ],
                stdout=f,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=240,
                env=env,
            )
        text = log.read_text()
        assert r.returncode == 0, text[-3000:]
        assert "Started a local Ray instance" not in text  # it joined the head
        frames = pd.read_parquet(out / "frames.parquet")
        assert len(frames) == 1 and frames["n_faces"].iloc[0] == 2
    finally:
        os.killpg(head.pid, 15)  # the head's whole process group: gcs, raylet, workers
        head.wait(timeout=60)
        shutil.rmtree(ray_tmp, ignore_errors=True)
