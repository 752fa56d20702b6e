"""Proof and choice: the HTML report, threshold calibration and the recognition EDC."""

import csv
import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def demo_run(ray_local, tmp_path_factory):
    """The demo: the sample clip filtered with the embedded defaults."""
    d = tmp_path_factory.mktemp("demo")
    assert main(["sample", "--out", str(d / "sample")]) == 0
    clip = str(d / "sample" / "sample.mp4")
    assert main(["run", clip, "--out", str(d / "run"), "--quiet"]) == 0
    return d, clip


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed (CI installs it)")
    return exe


def _screenshot(page, shot, size: tuple[int, int]):
    """``page`` rendered by headless Chromium into the PNG ``shot`` (width, height)."""
    subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            f"--window-size={size[0]},{size[1]}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return shot


def test_report_renders_in_headless_chromium(demo_run, tmp_path):
    d, _ = demo_run
    assert main(["report", str(d / "run"), "--out", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text()
    assert 'id="histogram"' in page and 'id="threshold"' in page
    assert page.count('class="track"') == len(pd.read_parquet(d / "run" / "tracks.parquet")) >= 1
    assert 'src="http' not in page  # self-contained: no external resources
    shot = _screenshot(tmp_path / "report.html", tmp_path / "shot.png", (1000, 1800))
    import cv2

    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (1800, 1000)

    def pixels(bgr) -> int:
        return int(np.all(np.abs(img.astype(int) - bgr) <= 12, axis=2).sum())

    # the histogram bars (#4a7bd0), the threshold line (#d03030), and the thumbnails'
    # green (kept, #22aa22) and red (rejected, #dd3333) frames were painted
    assert pixels((208, 123, 74)) > 2000
    assert pixels((48, 48, 208)) > 100
    kept = pixels((34, 170, 34))
    rejected = pixels((51, 51, 221))
    assert kept > 20 * 4 * 72 and rejected > 5 * 4 * 72, (kept, rejected)
    # and the thumbnails are pictures, not blank boxes: the page has many distinct colours
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 5000


def test_calibrated_threshold_discards_the_target_fraction(demo_run, tmp_path):
    d, clip = demo_run
    snippet = tmp_path / "cal.yaml"
    assert (
        main(["calibrate", "--run", str(d / "run"), "--discard", "0.3", "--out", str(snippet)]) == 0
    )
    assert (
        main(["run", clip, "--out", str(tmp_path / "again"), "--quiet", "--config", str(snippet)])
        == 0
    )
    faces = pd.read_parquet(tmp_path / "again" / "faces.parquet")
    faces = faces[faces["status"] == "ok"]
    rejected = faces["reason"].str.startswith("quality").mean()
    assert abs(rejected - 0.3) <= 0.02, rejected
    # per-source quantiles: a snippet run accepts
    assert (
        main(
            [
                "calibrate",
                "--run",
                str(d / "run"),
                "--per-source-quantile",
                "0.5",
                "--out",
                str(tmp_path / "q.yaml"),
            ]
        )
        == 0
    )
    from pipeline.config import load_config

    cfg = load_config(tmp_path / "q.yaml")
    assert cfg.threshold.policy == "quantile" and cfg.threshold.quantile == 0.5


@pytest.fixture(scope="module")
def edc_run(tmp_path_factory):
    """Every shared photo of a named person (23; the partial faces left out) plus 10
    degraded copies of each (blur, noise, JPEG, downscale, exposure; two strengths each):
    about 5,000 genuine pairs, 11% of them failing at the start."""
    d = tmp_path_factory.mktemp("edc")
    with open(shared_path("faces.csv"), newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["identity"] and "partial" not in r["file"]]
    photos = pd.DataFrame(
        {
            "path": [str(shared_path(r["file"])) for r in rows],
            "identity": [r["identity"] for r in rows],
        }
    )
    photos.to_csv(d / "photos.csv", index=False)
    args = ["eval-recognition", "--identities", str(d / "photos.csv"), "--degraded"]
    args += ["--levels", "20", "35", "60"]
    assert main([*args, "--out", str(d / "edc"), "--device", "cpu"]) == 0
    # what each min_quality level keeps, at the levels asked for (0: no rule)
    kept = pd.read_csv(d / "edc" / "thresholds.csv")
    assert list(kept["min_quality"]) == [0, 20, 35, 60]
    assert kept["faces_kept"].iloc[0] == 1.0 and kept["faces_kept"].is_monotonic_decreasing
    # --degraded: each photo and its 10 copies, named by the photo's row
    copies = sorted((d / "edc" / "degraded").glob("*.png"))
    assert len(copies) == 11 * len(photos)
    ids = pd.DataFrame(
        {
            "path": [str(p) for p in copies],
            "identity": [photos["identity"][int(p.name[:3])] for p in copies],
        }
    )
    ids.to_csv(d / "identities.csv", index=False)
    assert set(pd.read_parquet(d / "edc" / "faces.parquet")["path"]) == set(ids["path"])
    # the pAUC in 200 resamples of the source photos (each with its copies)
    boot = pd.read_csv(d / "edc" / "bootstrap.csv")
    assert len(boot) == 200 and {"hyperiqa", "sharpness", "random"} <= set(boot.columns)
    assert boot["hyperiqa"].std() > 0 and (boot >= 0).all().all()
    return d / "edc"


@pytest.mark.slow
def test_edc_table_plot_and_ranking(edc_run):
    from face_iqa.judge.recognition import MEASURES, pauc

    table = pd.read_csv(edc_run / "edc.csv")
    assert list(table["discarded"]) == [round(0.05 * i, 2) for i in range(20)]
    assert set(MEASURES) <= set(table.columns)
    assert len(set(table.iloc[0][list(MEASURES)])) == 1  # nothing discarded: one FNMR
    assert table.iloc[0]["hyperiqa"] > 0.01  # some genuine pairs fail: a real test
    assert (edc_run / "edc.png").stat().st_size > 5000
    p = {m: pauc(table, m) for m in MEASURES}
    # the model predicts recognition failures better than detection confidence, face size
    # and a random order
    assert p["hyperiqa"] < min(p["det_prob"], p["face_size"], p["random"]), p


@pytest.mark.slow
def test_model_beats_sharpness_too(edc_run):
    """Issue 7's target: the default model ranks recognition failures better than Laplacian
    sharpness, the strongest other measure (measured 0.0121 vs 0.0133: failures come mostly
    from the strongest blur and downscale copies, which sharpness ranks last by construction)."""
    from face_iqa.judge.recognition import pauc

    table = pd.read_csv(edc_run / "edc.csv")
    assert pauc(table, "hyperiqa") < pauc(table, "sharpness")


@pytest.mark.slow
def test_calibrate_for_a_target_fnmr(edc_run, tmp_path):
    table = pd.read_csv(edc_run / "edc.csv")
    target = float(table["hyperiqa"].iloc[0]) / 2  # halve the failures
    out = tmp_path / "fnmr.yaml"
    assert (
        main(["calibrate", "--target-fnmr", str(target), "--edc", str(edc_run), "--out", str(out)])
        == 0
    )
    from pipeline.config import load_config

    t = load_config(out).threshold.min_quality
    pq = pd.read_csv(edc_run / "pair_quality.csv")["hyperiqa"]
    frac = float(table.loc[table["hyperiqa"] <= target, "discarded"].iloc[0])
    assert abs((pq < t).mean() - frac) <= 0.02


@pytest.mark.slow
def test_eval_recognition_from_a_pairs_file(edc_run, tmp_path, capsys):
    """``--pairs a,b,same`` (relative paths resolved from the file's folder) gives the same
    kind of table; pairs naming an image without a face are left out, not fatal."""
    ids = pd.read_csv(edc_run.parent / "identities.csv")
    ids = ids[ids["identity"].isin(sorted(ids["identity"].unique())[:3])]
    rows = []
    for i, a in enumerate(ids.itertuples()):
        for b in list(ids.itertuples())[i + 1 :]:
            rows.append({"a": a.path, "b": b.path, "same": int(a.identity == b.identity)})
    blank = tmp_path / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.full((64, 64, 3), 128, np.uint8))
    rows.append({"a": "blank.png", "b": ids["path"].iloc[0], "same": 0})
    pd.DataFrame(rows).to_csv(tmp_path / "pairs.csv", index=False)
    from face_iqa.model.scorer import default_checkpoint

    args = ["eval-recognition", "--pairs", str(tmp_path / "pairs.csv"), "--device", "cpu"]
    twin = f"twin={default_checkpoint()}"  # the first model again, as a compared one
    assert main([*args, "--out", str(tmp_path / "out"), "--compare", twin]) == 0
    table = pd.read_csv(tmp_path / "out" / "edc.csv")
    assert len(table) == 20 and (table.drop(columns="discarded").to_numpy() <= 1).all()
    faces = pd.read_parquet(tmp_path / "out" / "faces.parquet")
    assert not faces.loc[faces["path"].str.endswith("blank.png"), "ok"].any()
    # a compared model is one more measure; the same model twice gives the same curve
    ok = faces[faces["ok"]]
    assert ok["twin"].notna().all() and np.array_equal(ok["twin"], ok["hyperiqa"])
    assert np.array_equal(table["twin"], table["hyperiqa"])
    assert "twin" in pd.read_csv(tmp_path / "out" / "pair_quality.csv").columns
    capsys.readouterr()
    for bad in ("hyperiqa=x.pt", "twin", "a b=x.pt"):
        assert main([*args, "--out", str(tmp_path / "bad"), "--compare", bad]) != 0
        assert f"--compare {bad!r}" in capsys.readouterr().err


def test_threshold_table_on_a_constructed_set():
    """What a min_quality means: kept shares and the FNMR of the pairs left, by hand."""
    from face_iqa.judge.recognition import pairs_from_identities, threshold_table

    faces = pd.DataFrame(
        {
            "path": ["a1", "a2", "a3", "b1"],
            "ok": True,
            "hyperiqa": [80.0, 60.0, 30.0, 90.0],
            "descriptor": [np.array([x]) for x in (0.0, 0.1, 1.0, 5.0)],
        }
    )
    pairs = pairs_from_identities(pd.DataFrame({"path": faces["path"], "identity": list("AAAB")}))
    t = threshold_table(faces, pairs, threshold=0.5, levels=(35.0, 70.0)).set_index("min_quality")
    # genuine pairs: a1-a2 (0.1, match), a1-a3 (1.0) and a2-a3 (0.9) fail; a3 scores 30
    assert t.loc[0.0, "fnmr"] == pytest.approx(2 / 3) and t.loc[0.0, "faces_kept"] == 1.0
    assert t.loc[35.0, "fnmr"] == 0.0 and t.loc[35.0, "genuine_pairs_kept"] == pytest.approx(1 / 3)
    assert t.loc[35.0, "faces_kept"] == 0.75
    assert np.isnan(t.loc[70.0, "fnmr"]) and t.loc[70.0, "faces_kept"] == 0.5
    # another rule on another measure: level 0 is no rule, even with values below 0
    faces["frontalness"] = [0.9, -0.3, 0.95, 0.8]
    p = threshold_table(
        faces, pairs, 0.5, (0.5,), measure="frontalness", rule="min_frontalness"
    ).set_index("min_frontalness")
    assert p.loc[0.0, "faces_kept"] == 1.0 and p.loc[0.0, "fnmr"] == pytest.approx(2 / 3)
    assert p.loc[0.5, "faces_kept"] == 0.75 and p.loc[0.5, "fnmr"] == 1.0  # a1-a3 is left
