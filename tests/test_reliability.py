"""Reliability and security: bad input, faults, and what the job may touch.

Each test feeds one kind of trouble and checks that it costs a row (with a clear message),
not the run, and that nothing is lost, duplicated or written outside the output folder.
"""

import errno
import io
import os
import re
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from face_iqa.images import ImageError, load_image
from pipeline.graph import _decode_rows
from pipeline.inputs import discover_sources
from tests.conftest import shared_path
from workers.decode import DecodeConfig, make_tasks

ROOT = Path(__file__).resolve().parents[1]


def _decode(paths, cfg=None):
    """Decode tasks for ``paths`` in-process; returns (frame_index, status, error) rows."""
    rows = []
    for t in make_tasks([Path(p) for p in paths], cfg or DecodeConfig(chunk_frames=16)):
        b = {
            k: np.array([v if k != "source" else "\x00".join(v)], dtype=object)
            for k, v in t.items()
        }
        o = _decode_rows(b)
        rows += list(zip(o["source"], o["frame_index"].tolist(), o["status"], o["error"]))
    return rows


def _png_header_only(path: Path, w: int, h: int) -> None:
    """A PNG whose header claims ``w`` x ``h`` pixels, with a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_huge_header_refused_without_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 100_000, 100_000)  # 10^10 pixels: 30 GB if decoded
    t0 = time.perf_counter()
    with pytest.raises(ImageError, match=r"100000x100000 .*exceeds the limit"):
        load_image(bomb)
    assert time.perf_counter() - t0 < 5  # read from the header, nothing decoded
    # the limit is configurable, and the decode stage turns it into an error row
    small = tmp_path / "small.png"
    Image.new("RGB", (30, 20)).save(small)
    assert load_image(small, max_pixels=600).shape == (20, 30, 3)
    with pytest.raises(ImageError, match="exceeds"):
        load_image(small, max_pixels=599)
    rows = _decode([bomb, small], DecodeConfig(max_pixels=599))
    assert [r[2] for r in rows] == ["error", "error"]
    assert "bomb.png" in rows[0][3] and "decode.max_pixels" in rows[0][3]


def test_truncated_png_is_a_clear_error(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buf, format="PNG"
    )
    p = tmp_path / "cut.png"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError) as e:
        load_image(p)
    assert str(p) in str(e.value)


def test_unicode_spaces_and_a_symlink_loop(tmp_path):
    folder = tmp_path / "données de test" / "sous dossier"
    folder.mkdir(parents=True)
    img = folder / "фото 1 名前.jpg"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(img)
    os.symlink("..", folder / "loop")  # sous dossier/loop -> données de test (a cycle)
    os.symlink(folder / "missing.jpg", folder / "broken.jpg")  # a dangling link
    found = discover_sources([tmp_path])
    assert found == [img]  # once, despite the loop; the broken link is skipped
    rows = _decode(found)
    assert rows == [(str(img), 0, "ok", "")]


def _write_video(path: Path, n: int = 40) -> Path:
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for i in range(n):
        f = np.full((120, 160, 3), (i * 6) % 255, np.uint8)
        cv2.putText(f, str(i), (40, 80), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
        wr.write(f)
    wr.release()
    return path


def test_bad_videos(tmp_path):
    good = _write_video(tmp_path / "good.avi")
    data = good.read_bytes()
    rng = np.random.default_rng(1)
    corrupt = bytearray(data)
    mid = len(data) // 2
    corrupt[mid : mid + 3000] = rng.integers(0, 256, 3000, np.uint8).tobytes()
    (tmp_path / "corrupt.avi").write_bytes(bytes(corrupt))
    (tmp_path / "cut.avi").write_bytes(data[: int(len(data) * 0.7)])
    empty = cv2.VideoWriter(
        str(tmp_path / "empty.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120)
    )
    empty.release()
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(buf, format="JPEG")
    (tmp_path / "photo.mp4").write_bytes(buf.getvalue())

    def rows_of(name):
        return [r for r in _decode([tmp_path / name])]

    ok = rows_of("good.avi")
    assert [r[1] for r in ok] == list(range(40)) and {r[2] for r in ok} == {"ok"}
    # a corrupt middle: the decoder resyncs, frames after it still come back, and the
    # frames it lost are reported (the container lists 40)
    bad = rows_of("corrupt.avi")
    good_idx = [r[1] for r in bad if r[2] == "ok"]
    assert max(good_idx) >= 30 and len(good_idx) >= 30
    lost = [r for r in bad if r[2] == "error"]
    if len(good_idx) < 40:
        assert len(lost) == 1 and "container lists 40" in lost[0][3]
    # ends mid-frame: what was there, then a row saying where it ended
    cut = rows_of("cut.avi")
    assert [r[1] for r in cut if r[2] == "ok"] == list(range(len(cut) - 1))
    assert cut[-1][2] == "error" and "truncated or corrupt" in cut[-1][3]
    assert "cut.avi" in cut[-1][3]
    # zero frames: one error row naming the file
    (e,) = rows_of("empty.avi")
    assert e[2] == "error" and "empty.avi" in e[3]
    # a JPEG named .mp4: the decoder reads its one picture (a correct result)
    (j,) = rows_of("photo.mp4")
    assert j[2] == "ok"


# ---------------------------------------------------------------- random inputs


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_load_or_raise_image_error(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("rnd") / "x.jpg"
    p.write_bytes(data)
    try:
        arr = load_image(p)
    except ImageError as e:
        assert str(p) in str(e)
    else:
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3


_dtypes = st.sampled_from([np.uint8, np.uint16, np.float32, np.float64, np.int64, np.bool_])


@st.composite
def _frames(draw):
    n = draw(st.integers(0, 5))
    out = []
    for _ in range(n):
        kind = draw(st.sampled_from(["image", "shape", "none", "text"]))
        if kind == "image":
            h, w = draw(st.integers(1, 80)), draw(st.integers(1, 80))
            out.append(np.random.default_rng(h * w).integers(0, 255, (h, w, 3), np.uint8))
        elif kind == "shape":
            shape = tuple(draw(st.lists(st.integers(0, 6), min_size=0, max_size=4)))
            out.append(np.zeros(shape, draw(_dtypes)))
        elif kind == "none":
            out.append(None)
        else:
            out.append("not a frame")
    return out


@pytest.fixture(scope="module")
def stages(tiny_checkpoint):
    from face_iqa.faces.detect import DetectorConfig
    from face_iqa.model.scorer import ScorerConfig
    from workers.detect import DetectStage, DetectStageConfig
    from workers.score import ScoreStage, ScoreStageConfig
    from workers.threshold import ThresholdStage

    det = DetectStage(DetectStageConfig(detector=DetectorConfig(device="cpu"), crop_size=32))
    score = ScoreStage(
        ScoreStageConfig(scorer=ScorerConfig(checkpoint=str(tiny_checkpoint), device="cpu"))
    )
    return det, score, ThresholdStage()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=_frames())
def test_stages_return_a_row_per_input_frame(stages, frames):
    det, score, threshold = stages
    n = len(frames)
    col = np.empty(n, dtype=object)
    for i, f in enumerate(frames):
        col[i] = f
    batch = {"source": np.array([f"s{i}" for i in range(n)]), "frame_index": np.arange(n)}
    batch["frame"] = col
    out = threshold(score(det(batch)))
    # every input frame comes back, at least once, as faces, no_face or an error row
    assert set(out["source"].tolist()) == set(batch["source"].tolist())
    for status, err in zip(out["status"], out["error"]):
        assert status in ("ok", "no_face", "error")
        if status == "error":
            assert err
    assert len(out["quality"]) == len(out["source"]) == len(out["face_pass"])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 30),
            st.floats(-50, 2000, allow_nan=False),
            st.floats(-50, 2000, allow_nan=False),
            st.floats(0, 300, allow_nan=False),
        ),
        max_size=40,
    )
)
def test_tracker_never_fails_and_labels_every_face(faces):
    from face_iqa.faces.track import TrackerConfig, track_faces

    pos = np.array([f[0] for f in faces], np.int64)
    boxes = np.array([[x, y, x + s, y + s] for _, x, y, s in faces], np.float64).reshape(-1, 4)
    lms = np.repeat(boxes[:, None, :2], 5, axis=1) + 1.0
    t = track_faces(pos, boxes, lms, TrackerConfig(min_faces=1))
    assert len(t) == len(faces) and (t >= 0).all()
    # a track never holds two faces of one frame
    for k in set(t.tolist()):
        assert len(set(pos[t == k].tolist())) == int((t == k).sum())


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize("padded", [False, True])
def test_gpu_out_of_memory_splits_the_batch(tiny_checkpoint, monkeypatch, padded):
    """An OOM on a big batch: the batch is split and retried; scores are unchanged. With
    the GPU's padding to ``batch_size`` (forced on here), the halves are not padded back."""
    from face_iqa.model.scorer import ScorerConfig, build_scorer

    scorer = build_scorer(ScorerConfig(checkpoint=str(tiny_checkpoint), device="cpu"))
    scorer.pad_shapes = padded
    crops = np.random.default_rng(0).integers(0, 255, (10, 224, 224, 3), np.uint8)
    expected = scorer(crops)
    real = scorer.model.forward

    def forward(x):
        if len(x) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(x)

    monkeypatch.setattr(scorer.model, "forward", forward)
    got = scorer(crops)
    assert scorer.oom_splits >= 3
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "code, words",
    [(errno.ENOSPC, "No space left on device"), (errno.EROFS, "Read-only file system")],
)
def test_full_or_read_only_disk_leaves_no_half_written_file(tmp_path, monkeypatch, code, words):
    from pipeline.writers import write_parquet, write_png

    def failing(self, path, **kw):
        Path(path).write_bytes(b"PAR1 half a file")
        raise OSError(code, words)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", failing)
    with pytest.raises(OSError) as e:
        write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "faces.parquet")
    assert "faces.parquet" in str(e.value) and words in str(e.value)
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary file

    real_fdopen = os.fdopen

    def fdopen(fd, *a, **k):
        f = real_fdopen(fd, *a, **k)
        f.write = lambda b: (_ for _ in ()).throw(OSError(code, words))
        return f

    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(OSError, match=words):
        write_png(np.zeros((4, 4, 3), np.uint8), tmp_path / "crop.png")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_fails_before_work(tmp_path, capsys):
    from pipeline.cli import main

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    img = tmp_path / "in.jpg"
    Image.new("RGB", (40, 30)).save(img)
    assert main(["run", str(img), "--out", str(blocker / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "a_file" in err and "not writable" in err


@pytest.mark.ray
def test_disk_full_mid_run_then_resume_and_no_escape(
    ray_local, tiny_checkpoint, tmp_path, monkeypatch
):
    """The final write fails (disk full): a clear error, no frames.parquet posing as
    complete; after space is freed, --resume gives the same tables as a clean run. Listed
    inputs with ../ and absolute paths, with crops and kept frames on, write nothing
    outside --out."""
    import pipeline.run_job as rj
    from pipeline.config import load_config
    from pipeline.run_job import run

    base = tmp_path / "data" / "in"
    base.mkdir(parents=True)
    outside = tmp_path / "data" / "outside.jpg"
    sample = load_image(shared_path("images", "obama-480p.jpg"))
    Image.fromarray(sample).save(outside)
    Image.fromarray(sample[:, ::-1]).save(base / "mirror.jpg")
    lst = base / "list.txt"
    lst.write_text(f"../outside.jpg\n{base / 'mirror.jpg'}\n")
    cfg = load_config(
        None,
        [
            f"score.scorer.checkpoint={tiny_checkpoint}",
            "detect.detector.device=cpu",
            "score.scorer.device=cpu",
            "threshold.min_quality=0",
            "output.crops=true",
            "output.kept_frames=true",
            "ray.num_cpus=2",
        ],
    )
    out = tmp_path / "data" / "in" / "out"
    before = {p for p in tmp_path.rglob("*")}
    real = rj.write_parquet

    def failing(df, path):
        if Path(path).name == "frames.parquet":
            raise OSError(f"{path}: cannot write (No space left on device)")
        return real(df, path)

    monkeypatch.setattr(rj, "write_parquet", failing)
    with pytest.raises(OSError, match="No space left"):
        run([str(lst)], out, cfg, progress=False)
    assert not (out / "frames.parquet").exists()
    monkeypatch.setattr(rj, "write_parquet", real)
    resumed = run([str(lst)], out, cfg, resume=True, progress=False)
    clean = run([str(lst)], tmp_path / "clean", cfg, progress=False)
    pd.testing.assert_frame_equal(resumed, clean)
    assert len(resumed) == 2 and resumed["keep"].all()
    # nothing was created outside the two output folders
    mine = (out, tmp_path / "clean")
    new = {
        p
        for p in set(tmp_path.rglob("*")) - before
        if not any(p == d or d in p.parents for d in mine)
    }
    assert new == set(), new
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.parent.name == "crops" for p in written)
    assert any(p.parent.name == "kept_frames" for p in written)


# ---------------------------------------------------------------- security


def test_no_shell_and_safe_yaml(tmp_path):
    """No code path hands a string to a shell; config YAML cannot construct objects."""
    from pipeline.config import ConfigError, load_config

    pat = re.compile(r"shell\s*=\s*True|os\.system\(|os\.popen\(|subprocess\.getoutput")
    for pkg in ("face_iqa", "workers", "pipeline"):
        for f in (ROOT / pkg).rglob("*.py"):
            assert not pat.search(f.read_text()), f
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f'threshold: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError):
        load_config(evil)
    assert not marker.exists()


def test_a_crop_the_scorer_cannot_take_is_one_error_row(stages):
    _, score, _ = stages
    crops = np.empty(3, dtype=object)
    rng = np.random.default_rng(0)
    crops[0] = rng.integers(0, 255, (224, 224, 3), np.uint8)
    crops[1] = np.zeros((224, 224, 4), np.uint8)  # a 4-channel crop: the scorer refuses it
    crops[2] = rng.integers(0, 255, (224, 224, 3), np.uint8)
    batch = {
        "source": np.array(["a.jpg", "b.jpg", "c.jpg"]),
        "frame_index": np.zeros(3, np.int64),
        "status": np.array(["ok", "ok", "ok"]),
        "error": np.array(["", "", ""]),
        "crop": crops,
    }
    out = score(batch)
    assert list(out["status"]) == ["ok", "error", "ok"]
    assert "b.jpg" in out["error"][1] and "scoring failed" in out["error"][1]
    assert np.isfinite(out["quality"][[0, 2]]).all() and np.isnan(out["quality"][1])
