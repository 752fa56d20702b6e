import cv2
import numpy as np

from tests.conftest import shared_path
from workers.decode import DecodeConfig, DecodeStage, make_tasks


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
