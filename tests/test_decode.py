import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.containers import presentation_times
from tests.conftest import shared_path
from workers.decode import DecodeConfig, DecodeStage, make_tasks, probe_video, stream_short


def _run(tasks):
    cols = {k: np.array([t[k] for t in tasks], dtype=object) for k in tasks[0]}
    return DecodeStage()(cols)


def test_chunks_cover_every_frame_once_and_match_sequential_decode():
    video = shared_path("videos", "short_hamilton_clip.mp4")
    tasks = make_tasks([video], DecodeConfig(chunk_frames=50))
    assert len(tasks) == 6 and tasks[-1]["stop"] == -1
    out = _run(tasks)
    assert list(out["frame_index"]) == list(range(275))
    cap = cv2.VideoCapture(str(video))
    for i in range(275):
        ok, bgr = cap.read()
        if i % 45 == 0 or i in (49, 50, 51, 274):  # chunk borders included
            np.testing.assert_array_equal(out["frame"][i], cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    np.testing.assert_allclose(out["timestamp_s"][:3], np.arange(3) / 29.97, rtol=1e-3)


def test_short_clips_are_split_for_a_pool_and_still_cover_every_frame_once():
    """``min_tasks`` shrinks chunks (not below ``min_chunk``) so that a pool of workers
    shares a short clip; sampling by stride is kept; long inputs are left alone."""
    video = shared_path("videos", "short_hamilton_clip.mp4")  # 275 frames
    cfg = DecodeConfig(stride=5, chunk_frames=32)  # 55 sampled frames: 2 chunks of 32
    assert len(make_tasks([video], cfg)) == 2
    tasks = make_tasks([video], cfg, min_tasks=4, min_chunk=8)
    assert len(tasks) == 4 and [t["last"] for t in tasks] == [False, False, False, True]
    assert list(_run(tasks)["frame_index"]) == list(range(0, 275, 5))
    floored = make_tasks([video], cfg, min_tasks=50, min_chunk=8)  # chunks of 8, not 2
    assert len(floored) == 7
    assert list(_run(floored)["frame_index"]) == list(range(0, 275, 5))
    assert len(make_tasks([video], DecodeConfig(chunk_frames=32), min_tasks=4)) == 9


def test_stride_and_fps_sampling():
    video = shared_path("videos", "short_hamilton_clip.mp4")
    out = _run(make_tasks([video], DecodeConfig(stride=10, chunk_frames=7)))
    assert list(out["frame_index"]) == list(range(0, 275, 10))
    out = _run(make_tasks([video], DecodeConfig(fps=5.0, chunk_frames=8)))
    idx = out["frame_index"]
    assert len(idx) == len(set(idx)) and idx[0] == 0
    assert abs(len(idx) - 275 / 29.97 * 5) <= 2  # about 5 frames per second
    assert np.all(np.diff(idx) >= 5) and np.all(np.diff(idx) <= 7)


def test_bad_sources_become_error_rows(tmp_path):
    bad = tmp_path / "fake.mp4"
    bad.write_bytes(b"\x00" * 1000)
    img = tmp_path / "fake.png"
    img.write_text("no")
    out = _run(make_tasks([bad, img], DecodeConfig()))
    assert list(out["status"]) == ["error", "error"]
    assert "fake.mp4" in out["error"][0] and "fake.png" in out["error"][1]
    assert out["frame"][0].shape == (0, 0, 3)


def _decode_all(videos, cfg=None):
    return _run(make_tasks([Path(v) for v in videos], cfg or DecodeConfig()))


def test_matroska_estimated_counts_are_no_errors():
    """Matroska lists a frame count estimated from the duration (a frame too many in 9 of
    the 19 shared clips): every clip decodes to its end without an error row, every decoded
    frame appears once, and its last row says how many frames the decoder returned."""
    clips = sorted(shared_path("clips").glob("*.mkv"))
    assert len(clips) == 19
    overcounted = 0
    for clip in clips:
        listed = probe_video(clip)[0]
        out = _decode_all([clip])
        assert set(out["status"]) == {"ok"}, (clip.name, set(out["error"]))
        n = len(out["frame_index"])
        assert list(out["frame_index"]) == list(range(n))
        ends = out["stream_frames"][out["stream_frames"] >= 0]
        assert list(ends) == [n] and out["stream_frames"][-1] == n
        overcounted += listed > n
    assert overcounted >= 5  # the case this guards is really in the data


def test_time_sampling_and_strides_carry_the_stream_length_once():
    clip = shared_path("clips", "asl_again.mkv")  # 77 frames, the container lists 78
    for cfg in (DecodeConfig(stride=5, chunk_frames=4), DecodeConfig(fps=4.0, chunk_frames=3)):
        out = _decode_all([clip], cfg)
        assert set(out["status"]) == {"ok"}
        assert list(out["stream_frames"][out["stream_frames"] >= 0]) == [77]


def test_a_cut_matroska_file_keeps_its_error_row(tmp_path):
    data = shared_path("clips", "asl_book.mkv").read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 2 // 3])
    out = _decode_all([cut])
    ok = out["status"] == "ok"
    assert 0 < ok.sum() < 100 and list(out["frame_index"][ok]) == list(range(ok.sum()))
    assert out["status"][-1] == "error" and "cut.mkv" in out["error"][-1]
    assert "truncated or corrupt" in out["error"][-1]
    assert out["stream_frames"][-1] == ok.sum()


def test_stream_short_needs_both_frames_and_time_missing():
    assert not stream_short(77, 78, 76 / 30, 30.0)  # Matroska's estimate, one frame over
    assert not stream_short(30, 61, 2.0, 30.0)  # variable rate: fewer frames, time reaches the end
    assert stream_short(67, 110, 66 / 30, 30.0)  # a third of the file cut off
    assert stream_short(10, 40, float("nan"), 10.0)  # no times: the count decides
    assert not stream_short(5, 0, 0.4, 10.0)  # nothing listed: nothing to miss


def _ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("ffmpeg is missing (.ci/run installs Debian's ffmpeg)")
        pytest.skip("ffmpeg is not installed (CI installs it)")
    return exe


def _ff(*args):
    subprocess.run([_ffmpeg(), "-loglevel", "error", "-y", *map(str, args)], check=True)


def test_rotated_phone_video_decodes_upright(tmp_path, detector):
    """A portrait phone video stores its pixels sideways with a rotation in the container:
    the frames come out upright, and the detector finds the face where it is in the
    upright original."""
    src = shared_path("clips", "asl_again.mkv")
    up, side, tagged = tmp_path / "up.mp4", tmp_path / "side.mp4", tmp_path / "tagged.mp4"
    enc = ["-frames:v", 6, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", 16]
    _ff("-i", src, *enc, up)
    _ff("-i", src, "-vf", "transpose=1", *enc, side)  # the pixels turned a quarter
    _ff("-i", side, "-c", "copy", "-metadata:s:v:0", "rotate=90", tagged)  # and tagged
    raw = cv2.VideoCapture(str(tagged))
    raw.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
    stored = raw.read()[1]
    want, got = _decode_all([up]), _decode_all([tagged])
    assert stored.shape[:2] == want["frame"][0].shape[:2][::-1]  # really stored sideways
    assert list(got["status"]) == ["ok"] * 6
    for a, b in zip(want["frame"], got["frame"]):
        assert a.shape == b.shape
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 4
    d_up, d_rot = detector.detect([want["frame"][0], got["frame"][0]])
    assert len(d_up) == len(d_rot) >= 1
    a, b = d_up.boxes[0], d_rot.boxes[0]
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    assert w * h / (area - w * h) > 0.85  # the same face in the same place


def test_variable_frame_rate_keeps_presentation_times(tmp_path):
    """A variable-frame-rate file (30 fps, then 10 fps): ``timestamp_s`` is each frame's
    presentation time (within a frame of ffprobe's), and ``decode.fps`` samples the first
    frame at or after each multiple of the period by those times."""
    src = shared_path("clips", "asl_again.mkv")
    vfr = tmp_path / "vfr.mkv"
    rule = "setpts='if(lt(N,15),N/30,0.5+(N-15)/10)/TB'"
    _ff("-i", src, "-frames:v", 30, "-vf", rule, "-fps_mode", "vfr", "-c:v", "libx264", vfr)
    pts = presentation_times(vfr)
    assert len(pts) == 30 and np.ptp(np.diff(pts)) > 0.05  # the rate really varies
    out = _decode_all([vfr], DecodeConfig(chunk_frames=7))
    assert set(out["status"]) == {"ok"} and len(out["timestamp_s"]) == 30
    np.testing.assert_allclose(out["timestamp_s"], pts, atol=np.diff(pts).min())
    # naive index / fps times would drift by seconds by the end
    assert abs(29 / probe_video(vfr)[1] - pts[-1]) > 0.5
    sampled = _decode_all([vfr], DecodeConfig(fps=4.0, chunk_frames=3))
    k = np.floor(pts * 4.0 + 1e-6)
    want = [0] + [i for i in range(1, 30) if k[i] > k[i - 1]]
    assert list(sampled["frame_index"]) == want
