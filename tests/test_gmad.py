"""gMAD and the weights map: known answers on constructed scores, the page in Chromium."""

import numpy as np
import pandas as pd
import pytest

from face_iqa.judge.gmad import agreement, gmad_pairs, write_gmad_html
from face_iqa.judge.weights_map import nn_accuracy, weights_map
from pipeline.cli import main
from tests.test_evaluation import _screenshot


def _planted(n=200, seed=0):
    rng = np.random.default_rng(seed)
    a = np.sort(rng.uniform(0, 100, n))
    b = a + rng.normal(0, 0.5, n)  # B agrees with A everywhere...
    # ...but on these two (at the centre of the 0.5-0.6 level), which A rates alike, B far apart
    i, j = round(0.55 * n) - 1, round(0.55 * n)
    b[i], b[j] = a[i] + 40, a[j] - 40
    return a, b, i, j


def test_gmad_finds_the_planted_pair():
    a, b, i, j = _planted()
    pairs = gmad_pairs(a, b, ("A", "B"), levels=10, band=0.05)
    attacks = pairs[pairs["attacker"] == "B"]
    assert len(attacks) == 10
    # the level around A's score of the planted pair: B picks exactly that pair
    lv = attacks.iloc[np.argmin(np.abs(attacks["defender_level"] - a[i]))]
    assert (lv["better"], lv["worse"]) == (i, j)
    # elsewhere B's picks differ little (it agrees with A)
    others = attacks[attacks["level"] != lv["level"]]
    assert (others["attacker_better"] - others["attacker_worse"]).max() < 10
    # and B, defending, is attacked by A: A's picks are never the planted pair
    defended = pairs[pairs["attacker"] == "A"]
    assert not ((defended["better"] == i) & (defended["worse"] == j)).any()


def test_agreement_counts_recognitions_verdict():
    a, b, i, j = _planted()
    pairs = gmad_pairs(a, b, ("A", "B"), levels=10)
    s = agreement(pairs, a).set_index("attacker")  # recognition sides with A everywhere
    # A's picks among faces B rates alike are A's own best and worst: always right; B's
    # planted pair is wrong (A, and recognition, rate the two alike, in the other order)
    assert s.loc["A", "success_rate"] == 1.0 and s.loc["A", "attacks"] == 10
    assert s.loc["B", "success_rate"] <= 0.9


@pytest.fixture(scope="module")
def labelled_set(tmp_path_factory):
    import cv2

    d = tmp_path_factory.mktemp("gmadset")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (224, 224, 3)).astype(np.uint8)
    rows = []
    for k in range(24):
        img = cv2.GaussianBlur(base, (0, 0), 0.3 + 0.25 * k)
        cv2.imwrite(str(d / f"f{k:02d}.png"), img)
        rows.append(
            {
                "path": f"f{k:02d}.png",
                "score": 100 - 4 * k,
                "face_size": 40 + 7 * (k % 5),
                "identity": f"p{k % 3}",
            }
        )
    pd.DataFrame(rows).to_csv(d / "labels.csv", index=False)
    return d / "labels.csv"


def test_gmad_command_writes_a_page_that_renders(labelled_set, tmp_path):
    out = tmp_path / "g"
    args = ["gmad", "--labels", str(labelled_set), "--a", "sharpness", "--b", "face_size"]
    assert main([*args, "--out", str(out), "--levels", "4", "--band", "0.25"]) == 0
    table = pd.read_csv(out / "gmad.csv")
    assert set(table["attacker"]) == {"sharpness", "face_size"} and len(table) == 8
    summary = pd.read_csv(out / "gmad_summary.csv").set_index("attacker")
    # blur sets the label here: sharpness's attacks agree with it, face size's do not
    assert summary.loc["sharpness", "success_rate"] > summary.loc["face_size", "success_rate"]
    page = (out / "gmad.html").read_text()
    assert page.count("<img ") == 2 * len(table) and 'src="http' not in page
    shot = _screenshot(out / "gmad.html", tmp_path / "shot.png", (1200, 1600))
    import cv2

    img = cv2.imread(str(shot))
    assert img is not None
    green = np.all(np.abs(img.astype(int) - (34, 170, 34)) <= 12, axis=2).sum()
    red = np.all(np.abs(img.astype(int) - (51, 51, 221)) <= 12, axis=2).sum()
    # every pair's two frames were painted, so every image loaded and was laid out
    assert green > len(table) * 4 * 128 * 0.9 and red > len(table) * 4 * 128 * 0.9
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 1000  # pictures, not blank boxes


def test_html_names_both_models_on_each_face(tmp_path):
    a, b, _, _ = _planted(40)
    pairs = gmad_pairs(a, b, ("A", "B"), levels=3)
    crops = [np.full((224, 224, 3), k * 6, np.uint8) for k in range(40)]
    page = write_gmad_html(
        pairs, crops, [f"face{k}" for k in range(40)], tmp_path / "p.html", ("A", "B")
    ).read_text()
    assert page.count("A ") >= 2 * len(pairs) and page.count("<br>B ") == 2 * len(pairs)


def test_nn_accuracy():
    x = np.array([[0.0], [0.1], [5.0], [5.1]])
    assert nn_accuracy(x, np.array(["a", "a", "b", "b"])) == 1.0
    assert nn_accuracy(x, np.array(["a", "b", "a", "b"])) == 0.0


def test_weights_map_on_constructed_faces(tiny_checkpoint, tmp_path):
    rng = np.random.default_rng(0)
    crops, person = [], []
    for p in range(3):  # three "persons": three different textures, each at 6 blur levels
        base = rng.integers(0, 255, (224, 224, 3)).astype(np.uint8)
        for k in range(6):
            import cv2

            crops.append(cv2.GaussianBlur(base, (0, 0), 0.5 + k))
            person.append(f"p{p}")
    crops += [crops[0][::-1].copy(), crops[7][:, ::-1].copy()]
    person += ["", "solo"]  # an unnamed face and a person seen once: no part in the figures
    faces = pd.DataFrame({"face": [f"f{i}" for i in range(20)], "identity": person, "source": "x"})
    res = weights_map(faces, crops, tmp_path, checkpoint=str(tiny_checkpoint), device="cpu")
    for name in ("weights_map_person.png", "weights_map_quality.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert len(pd.read_csv(tmp_path / "weights_map.csv")) == 20
    assert res["faces"] == 20 and res["persons"] == 3
    assert res["lines"][0].startswith("20 faces; 18 compared (those of the 3 persons")
    assert 0 <= res["nn_person_weights"] <= 1 and -1 <= res["silhouette_person"] <= 1
    assert "content, not quality" in res["lines"][3]
