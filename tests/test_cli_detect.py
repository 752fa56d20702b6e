import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.cli import main
from tests.conftest import shared_path


def _bad_inputs(folder: Path) -> None:
    (folder / "zero.jpg").write_bytes(b"")
    buf = io.BytesIO()
    Image.open(shared_path("images", "obama-480p.jpg")).save(buf, format="JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    (folder / "text.jpg").write_text("hello, I am text\n")
    Image.new("RGB", (1, 1), (10, 20, 30)).save(folder / "tiny.png")
    shutil.copy(shared_path("images", "two_people.jpg"), folder / "good.jpg")


def test_bad_files_are_error_rows_and_run_goes_on(tmp_path, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    _bad_inputs(inp)
    out = tmp_path / "faces.parquet"
    crops = tmp_path / "crops"
    code = main(
        [
            "detect",
            str(inp),
            "--out",
            str(out),
            "--crops",
            str(crops),
            "--quiet",
            "--set",
            "detect.detector.device=cpu",
        ]
    )
    assert code == 0
    t = pd.read_parquet(out)
    by = {Path(s).name: g for s, g in t.groupby("source")}
    assert set(by) == {"zero.jpg", "truncated.jpg", "text.jpg", "tiny.png", "good.jpg"}
    for name, word in [
        ("zero.jpg", "empty"),
        ("truncated.jpg", "truncated"),
        ("text.jpg", "not a recognised image"),
    ]:
        row = by[name].iloc[0]
        assert len(by[name]) == 1 and row["status"] == "error"
        assert name in row["error"] and word in row["error"]
        assert row["box"] is None
    assert list(by["tiny.png"]["status"]) == ["no_face"]
    assert list(by["good.jpg"]["status"]) == ["ok", "ok"]
    assert len(by["good.jpg"].iloc[0]["box"]) == 4
    assert np.asarray(by["good.jpg"].iloc[0]["landmarks"].tolist()).shape == (5, 2)
    pngs = sorted(crops.glob("*.png"))
    assert len(pngs) == 2 and all(p.name.startswith("good-") for p in pngs)
    assert np.asarray(Image.open(pngs[0])).shape == (224, 224, 3)
    printed = capsys.readouterr()
    assert "3 errors" in printed.out and "zero.jpg" in printed.err


def test_missing_input_exits_nonzero_naming_path(tmp_path):
    missing = tmp_path / "nope" / "photo.jpg"
    exe = Path(sys.executable).with_name("faceiqa")
    r = subprocess.run(
        [str(exe), "detect", str(missing), "--out", str(tmp_path / "o.parquet")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0
    assert str(missing) in r.stderr
    assert not (tmp_path / "o.parquet").exists()


def test_bad_config_key_is_named(tmp_path, capsys):
    img = shared_path("images", "obama-240p.jpg")
    code = main(
        [
            "detect",
            str(img),
            "--out",
            str(tmp_path / "o.parquet"),
            "--set",
            "detect.detector.min_fase_size=30",
        ]
    )
    assert code != 0
    assert "min_fase_size" in capsys.readouterr().err


def test_list_file_input(tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text(f"# photos\n{shared_path('images', 'obama-240p.jpg')}\n")
    out = tmp_path / "o.parquet"
    assert (
        main(
            [
                "detect",
                str(lst),
                "--out",
                str(out),
                "--quiet",
                "--set",
                "detect.detector.device=cpu",
            ]
        )
        == 0
    )
    assert list(pd.read_parquet(out)["status"]) == ["ok"]
