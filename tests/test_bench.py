"""The benchmarks must keep running (they are measured by hand, never timed here)."""

from bench import score_bench


def test_score_bench_runs_on_cpu(capsys):
    res = score_bench.main(
        ["--device", "cpu", "--batch", "2", "--iters", "1", "--backbones", "efficientnet_lite0"]
    )
    assert set(res) == {"resnet50_faces_per_s", "hyperiqa_efficientnet_lite0_faces_per_s"}
    assert all(v > 0 for v in res.values())
    assert "ratio vs resnet50" in capsys.readouterr().out
