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


def test_shipped_presets_load():
    from pathlib import Path

    from face_iqa.train import TrainConfig
    from pipeline.config import load_into

    for y in sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")):
        if y.name.startswith("train"):
            assert load_into(TrainConfig, y).data.synthetic is not None
        else:
            load_config(y)
    assert load_config(Path(__file__).resolve().parents[1] / "configs" / "default.yaml") == Config()
