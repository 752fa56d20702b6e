"""The benchmarks must keep running (they are measured by hand, never timed here)."""

import pytest

from bench import score_bench
from tests.conftest import shared_path


def test_score_bench_runs_on_cpu(capsys):
    res = score_bench.main(
        ["--device", "cpu", "--batch", "2", "--iters", "1", "--backbones", "efficientnet_lite0"]
    )
    assert set(res) == {"resnet50_faces_per_s", "hyperiqa_efficientnet_lite0_faces_per_s"}
    assert all(v > 0 for v in res.values())
    assert "ratio vs resnet50" in capsys.readouterr().out


@pytest.mark.slow
def test_pipeline_bench_runs_on_cpu(ray_local, capsys):
    """Both parts of the pipeline benchmark and a --variant run, on a few frames (the GPU
    sessions that measure it get one try, so it must not rot)."""
    from bench import pipeline_bench

    video = shared_path("videos", "facenet_example.mp4")
    args = ["--device", "cpu", "--video", str(video), "--frames", "2", "--batch", "2"]
    args += ["--iters", "1", "--e2e-frames", "8", "--short-frames", "4", "--naive-frames", "2"]
    res = pipeline_bench.main([*args, "--variant", "score.scorer.flip=false;ray.worker_calls=2"])
    out = capsys.readouterr().out
    for k in ("ref_720p", "fast_720p", "ref_1080p", "fast_1080p", "run_fps", "naive_fps"):
        assert res[k] > 0, k
    assert res["variant0_fps"] > 0 and "variant score.scorer.flip=false; ray.worker_calls=2" in out
    assert "variant0_marginal_fps" in res and "fixed start" in out and "for 4 frames" in out
    assert out.count("same face count on 2/2 frames") == 2  # CPU parity is exact
    assert "'align_s'" in out and "ratio" in out and "'fps_after_first'" in out


def test_clean_bench_counts_the_sources_own_duplicates():
    """The cleaning benchmark's duplicates to find: each injected copy with its original, and
    each listed pair of the photo set's own near-duplicates whose two photos stayed
    untouched; a flag on such a pair is a found pair, not a false one."""
    import pandas as pd

    from bench.clean_bench import duplicate_pairs, scores

    truth = pd.DataFrame(
        {
            "path": [
                "d/p/a.jpg",
                "d/p/b.jpg",
                "d/p/c.jpg",
                "d/q/moved_e.jpg",
                "d/q/f.jpg",
                "d/p/c_copy.jpg",
            ],
            "truth": ["clean", "clean", "clean", "wrong", "clean", "duplicate"],
            "origin": ["p", "p", "p", "p", "q", "d/p/c.jpg"],
            "file": ["s/a.jpg", "s/b.jpg", "s/c.jpg", "s/e.jpg", "s/f.jpg", ""],
        }
    )
    known = pd.DataFrame(
        {"a": ["s/a.jpg", "s/e.jpg", "s/x.jpg"], "b": ["s/b.jpg", "s/f.jpg", "s/a.jpg"]}
    )
    assert duplicate_pairs(truth, None) == [("d/p/c.jpg", "d/p/c_copy.jpg")]
    pairs = duplicate_pairs(truth, known)  # e was moved away: its pair no longer counts
    assert pairs == [("d/p/c.jpg", "d/p/c_copy.jpg"), ("d/p/a.jpg", "d/p/b.jpg")]
    pred = pd.Series(
        ["clean", "duplicate", "clean", "clean", "clean", "duplicate"], index=truth["path"]
    )
    g = truth.set_index("path")["truth"]
    assert scores(pred, g, pairs)["duplicate"]["precision"] == 1.0
    assert scores(pred, g, duplicate_pairs(truth, None))["duplicate"]["precision"] == 0.5


def test_ladder_jitter_moves_the_alignment_only_when_asked(detector):
    """bench.ladder_jitter: the first crop is the face as detected; jitter 0 repeats it,
    a jitter of 2 % of the face moves every draw."""
    import numpy as np

    from bench.ladder_jitter import jittered_crops
    from face_iqa.images import load_image

    img = load_image(shared_path("images", "obama-480p.jpg"))
    still = jittered_crops(img, detector, 0.0, 3, seed=0)
    moved = jittered_crops(img, detector, 0.02, 3, seed=0)
    assert still.shape == moved.shape == (4, 224, 224, 3)
    assert all(np.array_equal(still[0], c) for c in still[1:])
    assert np.array_equal(moved[0], still[0])
    assert all(np.abs(c.astype(float) - moved[0]).mean() > 1.0 for c in moved[1:])


class _BrightnessRecognizer:
    """A stand-in recogniser: each person's descriptor is a fixed point, moved along one
    axis by how much darker than grey 128 the crop is (``drift`` per grey level). Faces come
    in the order of ``people``: each ``chip_shape`` call starts the next one."""

    def __init__(self, centres, people, drift):
        self.centres, self.people, self.drift, self.who = centres, iter(people), drift, None

    def chip_shape(self, crop):
        self.who = next(self.people)

    def descriptor(self, crop, shape):
        d = self.centres[self.who].copy()
        d[0] += self.drift * max(0.0, 128.0 - float(crop.mean()))
        return d


def test_low_light_labels_follow_the_recogniser_not_the_light(tmp_path):
    """bench.low_light: every face gets its copies, darker the stronger; their labels fall
    with severity when the recogniser's descriptor drifts with the light, and stay where they
    were when it does not."""
    import cv2
    import numpy as np
    import pandas as pd

    from bench.low_light import low_light_set
    from face_iqa.faces.align import face_template

    rng = np.random.default_rng(0)
    rows = []
    for p in range(4):
        for k in range(3):
            path = tmp_path / f"p{p}_{k}.png"
            cv2.imwrite(str(path), rng.integers(120, 220, (300, 300, 3), dtype=np.uint8))
            lm = face_template(224) + 38.0
            rows.append({"path": str(path), "identity": f"p{p}", "landmarks": list(lm)})
    faces = pd.DataFrame(rows)
    centres = {f"p{p}": rng.normal(0, 0.05, 128) for p in range(4)}  # ~0.8 apart

    def run(drift):
        rec = _BrightnessRecognizer(centres, faces["identity"], drift)
        return low_light_set(faces, (0.5, 0.95), 1e-3, 0, rec)

    table, crops = run(0.02)
    assert len(table) == len(crops) == 3 * len(faces)
    grey = [crops[(table["severity"] == s).to_numpy()].mean() for s in (0.0, 0.5, 0.95)]
    assert grey[0] > grey[1] > grey[2], grey
    by = table.groupby("severity")["label"].mean()
    assert by[0.0] > 90 and by[0.95] < 50 and by[0.5] <= by[0.0], by
    still, _ = run(0.0)
    assert (still["label"] > 90).all()
