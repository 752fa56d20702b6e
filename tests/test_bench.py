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
