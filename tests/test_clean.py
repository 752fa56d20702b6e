"""Cleaning a face dataset by person: the wrong person's photo, a near-duplicate and a group
photo, each with its reason; the identity file's errors; resume; bounded driver memory."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from face_iqa.faces.identity import duplicate_groups, hamming64, phash64, robust_centre
from pipeline.config import load_config
from pipeline.run_job import run
from tests.conftest import shared_path
from workers.identity import IdentityConfig, IdentityStage

FAST = ["detect.detector.max_side=640", "ray.num_cpus=2", "detect.detector.device=cpu"]


def _faces(desc, source_of=None, quality=None, face_index=None):
    n = len(desc)
    return pd.DataFrame(
        {
            "source": source_of or [f"p{i:02d}.jpg" for i in range(n)],
            "frame_index": 0,
            "face_index": face_index or [0] * n,
            "status": "ok",
            "face_size": 100.0,
            "quality": quality or [50.0] * n,
            "face_pass": True,
            "face_reason": "pass",
            "descriptor": list(desc),
            "phash": np.arange(n, dtype=np.int64) * 0x0F0F0F0F0F0F,  # all far apart
        }
    )


def test_the_centre_holds_with_30_percent_wrong_photos():
    rng = np.random.default_rng(0)
    me, other = rng.normal(size=128), rng.normal(size=128)
    me, other = me / np.linalg.norm(me) * 0.8, other / np.linalg.norm(other) * 0.8
    desc = [me + rng.normal(scale=0.02, size=128) for _ in range(7)]
    desc += [other + rng.normal(scale=0.02, size=128) for _ in range(3)]  # 30 % wrong
    f, info = IdentityStage(IdentityConfig(max_distance=0.6)).decide(_faces(desc))
    assert info["checked"] and info["photos"] == 10
    assert list(f["face_pass"]) == [True] * 7 + [False] * 3
    assert all(r.startswith("another person (") for r in f["face_reason"][7:])
    assert (f["identity_distance"][:7] < 0.35).all() and (f["identity_distance"][7:] > 0.6).all()
    centre, medoid = robust_centre(np.stack(desc))
    assert medoid < 7 and np.linalg.norm(centre - me) < 0.2


def test_few_photos_are_not_checked_and_a_group_photo_keeps_the_persons_face():
    rng = np.random.default_rng(1)
    me, other = rng.normal(size=128) * 0.07, rng.normal(size=128) * 0.07  # 1.1 apart
    two = _faces([me, other + me * 0])  # two photos that disagree: no majority to trust
    f, info = IdentityStage(IdentityConfig(min_photos=3)).decide(two)
    assert not info["checked"] and f["face_pass"].all()
    # photo p01 holds the person (small) and a stranger (large): the person's face is kept
    near = [me + rng.normal(scale=0.02, size=128) for _ in range(4)]  # apart: no copies
    desc = [near[0], near[1], other, near[2], near[3]]
    group = _faces(
        desc,
        source_of=["p0.jpg", "p1.jpg", "p1.jpg", "p2.jpg", "p3.jpg"],
        face_index=[0, 0, 1, 0, 0],
    )
    group.loc[2, "face_size"] = 300.0
    tiny = group.iloc[[3]].assign(face_index=1, face_pass=False, face_reason="face 20px < 48px")
    tiny["descriptor"] = [None]  # failed a face rule: never described
    f, _ = IdentityStage().decide(pd.concat([group, tiny], ignore_index=True))
    assert list(f["face_pass"]) == [True, True, False, True, True, False]
    assert f.loc[2, "face_reason"] == "another face in the photo" and f.loc[2, "bystander"]
    # the small face beside p2's person keeps its own reason and leaves the photo alone
    assert f.loc[5, "face_reason"] == "face 20px < 48px" and f.loc[5, "bystander"]
    assert not f.loc[[0, 1, 3, 4], "bystander"].any()


def test_a_resized_and_recompressed_copy_is_found():
    img = cv2.cvtColor(cv2.imread(str(shared_path("images", "obama-240p.jpg"))), cv2.COLOR_BGR2RGB)
    crop = cv2.resize(img[20:220, 60:260], (224, 224), interpolation=cv2.INTER_AREA)
    small = cv2.resize(crop[4:220, 4:220], (150, 150), interpolation=cv2.INTER_AREA)
    ok, enc = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 65])
    copy = cv2.resize(cv2.imdecode(enc, cv2.IMREAD_UNCHANGED), (224, 224))
    other = cv2.resize(img[10:170, 0:160], (224, 224))
    h = np.array([phash64(crop), phash64(copy), phash64(other)])
    assert hamming64(h[0], h[1]) <= 6 < hamming64(h[0], h[2])
    far = np.full((3, 4), np.nan)
    assert list(duplicate_groups(far, h, 0.1, 6)) == [0, 0, 1]


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """Four people of the shared CelebA originals, a folder each; one photo of a fifth
    person filed under the first; a resized, cropped, recompressed copy in the third."""
    t = pd.read_csv(shared_path("photos_wild", "identities.csv"))
    t = t[t["set"] == "celeba"]
    ids = [i for i, g in t.groupby("identity") if len(g) >= 8][:5]
    root = tmp_path_factory.mktemp("people")
    base = shared_path("photos_wild")
    for i in ids[:4]:
        (root / i).mkdir()
        for f in t.loc[t["identity"] == i, "file"].head(6):
            shutil.copy(base / f, root / i)
    shutil.copy(base / t.loc[t["identity"] == ids[4], "file"].iloc[0], root / ids[0] / "wrong.jpg")
    first = sorted((root / ids[2]).glob("*.jpg"))[0]
    img = cv2.imread(str(first))
    h, w = img.shape[:2]
    img = cv2.resize(
        img[4 : h - 4, 4 : w - 4], (int(w * 0.7), int(h * 0.7)), interpolation=cv2.INTER_AREA
    )
    cv2.imwrite(str(root / ids[2] / "copy.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 70])
    return root, ids, first


def _clean_cfg(ckpt, *extra):
    return load_config(
        "configs/dataset_clean.yaml",
        [f"score.scorer.checkpoint={ckpt}", "threshold.min_quality=-1000", *FAST, *extra],
    )


@pytest.fixture(scope="module")
def cleaned(ray_local, tiny_checkpoint, people, tmp_path_factory):
    root, ids, first = people
    out = tmp_path_factory.mktemp("cleaned")
    cfg = _clean_cfg(tiny_checkpoint, "identity.from_folder=true")
    frames = run([str(root)], out, cfg, progress=False)
    return out, frames


@pytest.mark.ray
def test_wrong_person_and_copy_are_found_with_their_reasons(people, cleaned):
    root, ids, first = people
    out, frames = cleaned
    by = frames.set_index(frames["source"].map(lambda s: Path(s).name))
    assert set(frames["identity"]) == set(ids[:4])
    assert not by.loc["wrong.jpg", "keep"] and "another person" in by.loc["wrong.jpg", "reason"]
    faces = pd.read_parquet(out / "faces.parquet")
    copy = faces[faces["source"].str.endswith("copy.jpg") & (faces["face_index"] == 0)].iloc[0]
    assert not copy["keep"] and copy["reason"] == f"duplicate of {first}"
    assert copy["duplicate_of"] == str(first)
    assert by.loc[first.name, "keep"]  # the original stays
    summary = json.loads((out / "summary.json").read_text())
    assert summary["identities"][ids[0]]["removed"].get("another person") == 1
    assert summary["identities"][ids[2]]["removed"].get("duplicate") == 1
    cleaned_csv = pd.read_csv(out / "cleaned.csv")
    assert set(cleaned_csv["path"]) == set(frames.loc[frames["keep"], "source"])
    assert "wrong.jpg" not in " ".join(cleaned_csv["path"])


@pytest.mark.ray
def test_report_shows_each_person_with_the_removed_faces(people, cleaned, tmp_path):
    from pipeline.report import write_report

    _, ids, _ = people
    out, _ = cleaned
    page = write_report(out, tmp_path / "r.html").read_text()
    section = page[page.index('id="identities"') :]
    assert all(i in section for i in ids[:4])
    assert "another person (" in section and "duplicate of " in section


@pytest.mark.ray
def test_group_photos_keep_the_persons_face(cleaned):
    out, frames = cleaned
    faces = pd.read_parquet(out / "faces.parquet")
    multi = faces[faces["face_index"] >= 0].groupby("source").filter(lambda g: len(g) > 1)
    assert multi["source"].nunique() >= 1  # the shared photos hold group shots
    for _, g in multi.groupby("source"):
        me = g["identity_distance"].idxmin()
        if g.loc[me, "identity_distance"] <= 0.6:
            others = g.drop(index=me)  # judged and set aside, or failed a face rule first
            judged = others["identity_distance"].notna()
            assert (others.loc[judged, "reason"] == "another face in the photo").all()
            assert not others["keep"].any()
    assert (faces["reason"] == "another face in the photo").any()


@pytest.mark.ray
def test_an_identities_file_names_each_photos_person(people, tiny_checkpoint, tmp_path, capsys):
    from pipeline.cli import main

    root, ids, _ = people
    photos = sorted(root.rglob("*.jpg"))
    good = tmp_path / "ids.csv"
    pd.DataFrame({"path": photos, "identity": [p.parent.name for p in photos]}).to_csv(
        good, index=False
    )
    base = ["run", str(root), "--out", str(tmp_path / "o"), "--quiet"]
    sets = ["--set", f"score.scorer.checkpoint={tiny_checkpoint}", "--set", "ray.num_cpus=2"]
    missing = tmp_path / "nocol.csv"
    missing.write_text("file,person\na.jpg,x\n")
    assert main([*base, *sets, "--identities", str(missing)]) == 2
    assert "nocol.csv" in capsys.readouterr().err
    unknown = tmp_path / "unknown.csv"
    unknown.write_text(f"path,identity\n{root}/nobody.jpg,x\n")
    assert main([*base, *sets, "--identities", str(unknown)]) == 2
    err = capsys.readouterr().err
    assert "unknown.csv" in err and "nobody.jpg" in err
    assert main([*base, *sets, "--identities", str(good)]) == 0
    frames = pd.read_parquet(tmp_path / "o" / "frames.parquet")
    assert (frames["identity"] == frames["source"].map(lambda s: Path(s).parent.name)).all()


@pytest.mark.ray
@pytest.mark.slow
def test_resume_with_identities_equals_a_clean_run(
    people, cleaned, tiny_checkpoint, tmp_path, monkeypatch
):
    import pipeline.run_job as rj

    root, _, _ = people
    clean_out, clean = cleaned
    cfg = _clean_cfg(tiny_checkpoint, "identity.from_folder=true", "output.flush_sources=5")
    real = rj._Finisher.finish
    seen = {"n": 0}

    def interrupted(self, ready, **kw):
        if seen["n"] >= 14:
            raise KeyboardInterrupt
        seen["n"] += len(ready)
        return real(self, ready, **kw)

    monkeypatch.setattr(rj._Finisher, "finish", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run([str(root)], tmp_path / "r", cfg, progress=False)
    assert list((tmp_path / "r" / ".parts").glob("part-*.frames.parquet"))
    monkeypatch.setattr(rj._Finisher, "finish", real)
    resumed = run([str(root)], tmp_path / "r", cfg, resume=True, progress=False)
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert 0 < s["resumed_sources"] < len(clean)
    # the same decisions; scores may differ in the last float digits (other batches)
    pd.testing.assert_frame_equal(clean, resumed, check_exact=False, rtol=1e-4)
    pd.testing.assert_frame_equal(
        pd.read_parquet(clean_out / "faces.parquet"),
        pd.read_parquet(tmp_path / "r" / "faces.parquet"),
        check_exact=False,
        rtol=1e-4,
    )
    assert json.loads((clean_out / "summary.json").read_text())["identities"] == s["identities"]


def test_ten_thousand_photos_hold_a_few_identities_at_a_time():
    """10,000 photos of 2,000 small synthetic identities, in input order: the book decides
    each identity as its last photo comes back and never holds more than one at a time."""
    from pipeline.identities import IdentityBook

    rng = np.random.default_rng(3)
    n_id, per = 2000, 5
    sources = [f"/data/p{k:04d}/{j}.jpg" for k in range(n_id) for j in range(per)]
    identity_of = {s: s.split("/")[2] for s in sources}
    book = IdentityBook(IdentityConfig(), identity_of, sources)
    centres = rng.normal(size=(n_id, 128)) * 0.1
    most, decided = 0, 0
    for k in range(n_id):
        for j in range(per):
            f = _faces([centres[k] + rng.normal(scale=0.005, size=128)], [sources[k * per + j]])
            f["phash"] = rng.integers(-(2**62), 2**62)
            out = book.take([f])
            decided += sum(len(o) for o in out)
            most = max(most, len(book.held))
    assert decided == n_id * per and most == 1 and not book.held
    assert len(book.centres) == n_id


def test_a_person_filed_twice_is_found_across_identities():
    """The same photo under two names is a duplicate of the first; two names whose faces
    gather around one centre are listed as perhaps one person."""
    from pipeline.identities import IdentityBook

    rng = np.random.default_rng(4)
    a, c = (rng.normal(size=128) * 0.07 for _ in range(2))
    srcs = [f"/d/{who}/{k}.jpg" for who in ("ann", "ann2", "bob") for k in range(3)]
    book = IdentityBook(IdentityConfig(), {s: s.split("/")[2] for s in srcs}, srcs)
    hashes = rng.integers(-(2**62), 2**62, 9)
    hashes[3] = hashes[0] ^ 0b101  # ann2's first photo: ann's first, two bits apart
    out = []
    for k, s in enumerate(srcs):
        centre = a if k < 6 else c  # ann2 is ann filed again; bob is someone else
        f = _faces([centre + rng.normal(scale=0.02, size=128)], [s])
        f["phash"] = hashes[k]
        out += book.take([f])
    rows = pd.concat(out, ignore_index=True).set_index("source")
    assert rows.loc["/d/ann2/0.jpg", "face_reason"] == "duplicate of /d/ann/0.jpg (filed as ann)"
    assert rows.loc["/d/ann2/0.jpg", "duplicate_of"] == "/d/ann/0.jpg"
    assert rows.drop(index="/d/ann2/0.jpg")["face_pass"].all()
    alike = book.alike()
    assert [(x["a"], x["b"]) for x in alike] == [("ann", "ann2")]
