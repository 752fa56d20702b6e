import math

import pytest

from pipeline.config import Config, ConfigError, build, load_config, parse_set, to_dict


def test_defaults_and_overrides(tmp_path):
    cfg = load_config()
    assert cfg == Config()
    y = tmp_path / "c.yaml"
    y.write_text("detect:\n  crop_size: 112\n  detector:\n    thresholds: [0.5, 0.6, 0.7]\n")
    cfg = load_config(y, ["detect.detector.min_face_size=40", "detect.detector.max_side=null"])
    assert cfg.detect.crop_size == 112
    assert cfg.detect.detector.thresholds == (0.5, 0.6, 0.7)
    assert cfg.detect.detector.min_face_size == 40 and cfg.detect.detector.max_side is None
    d = to_dict(cfg)
    assert d["detect"]["detector"]["thresholds"] == [0.5, 0.6, 0.7]
    assert build(Config, d) == cfg  # the resolved config round-trips


@pytest.mark.parametrize(
    "sets,words",
    [
        (["detect.detector.min_fase_size=30"], "detect.detector.min_fase_size"),
        (["detec.crop_size=3"], "detec"),
        (["detect.crop_size=big"], "detect.crop_size"),
        (["detect.detector.thresholds=[1,2]"], "detect.detector.thresholds"),
        (["detect.detector.factor=true"], "detect.detector.factor"),
        (["detect.align=sideways"], "align"),
        (["nokey"], "key=value"),
    ],
)
def test_bad_settings_name_the_key(sets, words):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.").replace("[", r"\[")):
        load_config(None, sets)


def test_parse_set_nesting():
    assert parse_set("a.b.c=3") == {"a": {"b": {"c": 3}}}


def test_bad_yaml_file_named(tmp_path):
    y = tmp_path / "bad.yaml"
    y.write_text("detect: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(y)


def test_base_preset_is_read_first_and_overridden(tmp_path):
    (tmp_path / "a.yaml").write_text("detect:\n  crop_size: 112\n  box_margin: 0.3\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ndetect:\n  crop_size: 96\n")
    cfg = load_config(tmp_path / "b.yaml")
    assert cfg.detect.crop_size == 96  # b overrides a
    assert load_config(tmp_path / "a.yaml").detect.box_margin == 0.3
    assert cfg.detect.box_margin == 0.3  # a's other settings kept
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    with pytest.raises(ConfigError, match="loop"):
        load_config(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config(tmp_path / "c.yaml")


def test_shipped_presets_load():
    from pathlib import Path

    from face_iqa.learn.config import TrainConfig
    from pipeline.config import load_into

    for y in sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")):
        if y.name.startswith("ablation"):  # the default recipe, another head
            cfg = load_into(TrainConfig, y)
            base = load_into(TrainConfig, y.parent / "train_face.yaml")
            assert cfg.head != "hyper" and cfg.out_dir != base.out_dir
            assert cfg.data == base.data and cfg.epochs == base.epochs and cfg.rank == base.rank
        elif y.name.startswith("train"):  # every recipe names some data to learn from
            d = load_into(TrainConfig, y).data
            assert any(x is not None for x in (d.synthetic, d.photos, d.footage, d.labels)), y
            if d.photos is not None:  # real photos always hold people out
                assert d.photos.holdout and Path(d.photos.identities).suffix == ".csv"
        else:
            load_config(y)
    assert load_config(Path(__file__).resolve().parents[1] / "configs" / "default.yaml") == Config()


def test_resource_plan_gpu_and_cpu():
    """With GPUs: two detectors and a scorer share each card (fractions fit in 1.0) and the
    detector takes 32 frames a call; without: one CPU actor per stage, 8 frames, no GPU
    asked, and fused workers by the CPU count (two at least, one per 4 CPUs)."""
    from pipeline.graph import RayConfig, plan_resources

    gpu = plan_resources(RayConfig(), 1.0)
    d, s = gpu["detect"], gpu["score"]
    assert d["batch_size"] == 32 and d["actors"] == 2
    assert d["actors"] * d["num_gpus"] + s["actors"] * s["num_gpus"] <= 1.0
    assert d["num_cpus"] < 1 and isinstance(d["batch_size"], int)
    w = gpu["worker"]  # the fused workers (the default graph)
    assert w["actors"] == 3 and w["actors"] * w["num_gpus"] <= 1.0 and w["batch_size"] == 1
    assert w["actors"] * w["num_cpus"] <= 2  # they also fit a 2-core GPU machine
    cpu = plan_resources(RayConfig(), 0.0, 2.0)
    assert cpu["worker"]["actors"] == 2 and "num_gpus" not in cpu["worker"]
    assert cpu["worker"]["actors"] * cpu["worker"]["num_cpus"] < 2  # decoders keep a CPU
    assert [plan_resources(RayConfig(), 0.0, c)["worker"]["actors"] for c in (1, 8, 16)] == [
        1,
        2,
        4,
    ]
    assert plan_resources(RayConfig(workers=3), 0.0, 2.0)["worker"]["actors"] == 3
    # more fused workers on a card: each asks for a share that lets all of them start
    for n, gpus in ((5, 1.0), (7, 2.0)):
        w = plan_resources(RayConfig(workers=n), gpus)["worker"]
        assert w["actors"] == n and math.ceil(n / gpus) * w["num_gpus"] <= 1.0, (n, w)
    assert plan_resources(RayConfig(workers=5, worker_gpus=0.1), 1.0)["worker"]["num_gpus"] == 0.1
    with pytest.raises(ValueError, match="worker_calls"):
        RayConfig(worker_calls=0)
    assert cpu["detect"]["batch_size"] == 8 and cpu["detect"]["actors"] == 1
    assert "num_gpus" not in cpu["detect"] and "num_gpus" not in cpu["score"]
    two = plan_resources(RayConfig(detect_batch=12, detect_actors=3), 2.0)
    assert two["detect"]["batch_size"] == 12 and two["detect"]["actors"] == 3
    assert two["score"]["actors"] == 2
