"""The README's commands run as written: every command line parses (its flags exist, its
preset loads) and the Python examples run (paths swapped for real files)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def _faceiqa_lines() -> list[list[str]]:
    out = []
    for block in _blocks("bash"):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0]).strip()
            if line.startswith("faceiqa "):
                out.append(shlex.split(line)[1:])
    return out


def test_readme_is_short_and_names_no_internals():
    assert len(README.splitlines()) <= 250
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = doc.read_text()
        assert not re.search(r"session|issue [0-9]|\.\./shared", text, re.I), doc
    card = (REPO / "face_iqa" / "weights" / "MODEL_CARD.md").read_text()
    assert len(card.splitlines()) <= 120


def test_every_command_line_parses_and_its_preset_loads(monkeypatch):
    """Each ``faceiqa ...`` line of the README (the synopsis lines, whose [optional] parts
    are dropped, and the quick starts) is accepted by the CLI's parser."""
    from face_iqa.learn.config import TrainConfig
    from pipeline.cli import _parser
    from pipeline.config import load_config, load_into

    lines = _faceiqa_lines()
    assert len(lines) >= 15
    seen = set()
    for argv in lines:
        argv = [a for a in argv if a not in ("INPUT", "INPUT...", "...")]
        if argv == ["--version"]:
            continue
        cmd = argv[0]
        if cmd in ("run", "detect", "score") and (len(argv) < 2 or argv[1].startswith("-")):
            argv = [cmd, "x.jpg", *argv[1:]]
        args = _parser().parse_args(argv)
        seen.add(args.command)
        if getattr(args, "config", None) and args.config.startswith("configs/"):
            if args.command in ("train", "eval"):  # eval --split: a training config
                load_into(TrainConfig, REPO / args.config)
            else:
                load_config(REPO / args.config)
    assert {"run", "detect", "score", "report", "calibrate", "eval-recognition"} <= seen


@pytest.mark.ray
def test_python_examples_run(ray_local, tmp_path, monkeypatch):
    photo = str(shared_path("images", "obama-480p.jpg"))
    api, plugin = _blocks("python")[:2]
    monkeypatch.chdir(tmp_path)
    api = api.replace('["videos/", "photos/"], "out/"', f'[{photo!r}], "out/"')
    api = api.replace('"photo.jpg"', repr(photo))
    ns: dict = {}
    exec(compile(api, "README api", "exec"), ns)  # noqa: S102 - our own README
    assert len(ns["frames"]) == 1 and (tmp_path / "out" / "frames.parquet").is_file()
    q = ns["quality"]
    assert q.shape == (1,) and 0 <= q[0] <= 100
    ns2 = {"img": ns["img"]}
    exec(compile(plugin, "README plugin", "exec"), ns2)  # noqa: S102
    assert len(ns2["faces"]) == 1 and np.isfinite(ns2["faces"]["quality"]).all()
    assert bool(ns2["frames"]["keep"].iloc[0]) == (ns2["faces"]["quality"].iloc[0] >= 50)
