"""Synthetic degradations: reproducible, and applied at a recorded resolution (``scale``)."""

import json

import cv2
import numpy as np
import pandas as pd
import pytest

from face_iqa.images import load_image
from face_iqa.learn.degrade import apply_degradation, describe, sample_degradation
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def face():
    """A real, sharp 224x224 face-sized crop (the centre of a shared photo)."""
    img = load_image(shared_path("images", "obama-1080p.jpg"))
    h, w = img.shape[:2]
    c = img[h // 2 - 300 : h // 2 + 300, w // 2 - 300 : w // 2 + 300]
    return cv2.resize(c, (224, 224), interpolation=cv2.INTER_AREA)


def _spec(kind, severity, scale=None, seed=3):
    s = {"components": [{"kind": kind, "severity": severity}], "seed": seed}
    if scale is not None:
        s["scale"] = scale
    return s


def _sharpness(img):
    return cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()


def _grid_jumps(img):
    """Mean jump between neighbouring columns at the edges of an 8-pixel grid, at the edges
    of the 4-pixel grid that are not on it, each over the mean jump inside the cells."""
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64)
    jump = np.abs(np.diff(g, axis=1)).mean(axis=0)  # between column x and x + 1
    x = np.arange(jump.size) % 8
    inside = jump[(x != 7) & (x != 3)].mean()
    return jump[x == 7].mean() / inside, jump[x == 3].mean() / inside


def test_same_spec_same_pixels_and_scale_one_is_the_default(face):
    a = apply_degradation(face, _spec("gaussian_noise", 0.4))
    assert np.array_equal(a, apply_degradation(face, _spec("gaussian_noise", 0.4)))
    assert np.array_equal(a, apply_degradation(face, _spec("gaussian_noise", 0.4, 1.0)))
    b = apply_degradation(face, _spec("gaussian_noise", 0.4, 1.7))
    assert b.shape == face.shape and b.dtype == np.uint8 and not np.array_equal(a, b)
    assert np.array_equal(
        apply_degradation(face, _spec("jpeg", 0.5, 1.7)),
        apply_degradation(face, _spec("jpeg", 0.5, 1.7)),
    )


def test_blur_at_a_larger_scale_is_a_smaller_blur_in_the_crop(face):
    s = [_sharpness(apply_degradation(face, _spec("gaussian_blur", 0.3, k))) for k in (0.5, 1, 2)]
    assert s[0] < s[1] < s[2] < _sharpness(face), s
    # sigma 2.15 px at scale 2 is about sigma 1.08 px in the crop
    direct = cv2.GaussianBlur(face, (0, 0), (0.5 + 5.5 * 0.3) / 2)
    assert abs(np.log(s[2] / _sharpness(direct))) < np.log(1.5), (s[2], _sharpness(direct))


def test_jpeg_blocks_shrink_with_scale(face):
    """At the crop's own resolution JPEG leaves an 8-pixel grid; degraded at twice the
    resolution its blocks are 4 crop pixels."""
    g8, g4 = _grid_jumps(apply_degradation(face, _spec("jpeg", 0.95)))
    assert g8 > 1.5 and g4 < 1.15, (g8, g4)  # 8-pixel blocks only
    g8, g4 = _grid_jumps(apply_degradation(face, _spec("jpeg", 0.95, 2.0)))
    assert g8 > 1.3 and g4 > 1.3, (g8, g4)  # 4-pixel blocks


def test_bad_scale_raises(face):
    with pytest.raises(ValueError, match="scale"):
        apply_degradation(face, _spec("jpeg", 0.5, 0.0))


def test_sampling_scales():
    # p_scaled=0 draws exactly what earlier versions drew (no key, same random stream)
    r1, r2 = np.random.default_rng(9), np.random.default_rng(9)
    a = [sample_degradation(r1, p_clean=0.0) for _ in range(50)]
    b = [sample_degradation(r2, p_clean=0.0, p_scaled=0.0, scale_range=(0.5, 2)) for _ in range(50)]
    assert a == b and not any("scale" in s for s in a)
    rng = np.random.default_rng(1)
    sc = [
        sample_degradation(rng, p_clean=0.0, p_scaled=1.0, scale_range=(0.5, 2.0))["scale"]
        for _ in range(400)
    ]
    assert 0.5 <= min(sc) and max(sc) <= 2.0
    assert 0.4 < np.mean(np.array(sc) > 1.0) < 0.6  # log-uniform: as many above 1 as below
    half = [sample_degradation(rng, p_clean=0.0, p_scaled=0.5) for _ in range(400)]
    assert 0.4 < np.mean(["scale" in s for s in half]) < 0.6
    with pytest.raises(ValueError, match="scale_range"):
        sample_degradation(rng, p_clean=0.0, p_scaled=1.0, scale_range=(2.0, 1.0))


def test_describe_names_the_scale():
    assert describe({"components": [], "seed": 0}) == "clean"
    assert describe(_spec("jpeg", 0.5)) == "jpeg@0.50"
    assert describe(_spec("jpeg", 0.5, 1.62)) == "jpeg@0.50 x1.62"


@pytest.mark.slow
def test_synthetic_set_records_scales_and_rebuilds_exactly(tmp_path):
    """Every variant's recorded parameters (components, seed, scale) rebuild its crop, the
    scales lie between the face's own resolution (at least 0.5) and max_scale, and the
    resolution label ranks a clean 480p face below the same face at 1080p."""
    from face_iqa.learn.synthetic import RESOLUTION_ZOOMS, SyntheticConfig, build_synthetic_set
    from face_iqa.learn.utility import distance_to_quality

    out = tmp_path / "set"
    labels = build_synthetic_set(
        SyntheticConfig(
            images=tuple(str(shared_path("images", f"obama-{r}.jpg")) for r in ("480p", "1080p")),
            min_face_size=80,
            variants=5,
            scaled_fraction=1.0,
            max_scale=2.0,
            resolution_label=True,
            seed=4,
        ),
        out,
        log=lambda m: None,
    )
    t = pd.read_parquet(labels)
    clean = t[t["variant"] == 0].set_index("source")
    assert len(clean) == 2 and len(t) == 12
    small = clean.loc[str(shared_path("images", "obama-480p.jpg"))]
    large = clean.loc[str(shared_path("images", "obama-1080p.jpg"))]
    # the 480p face fills the crop enlarged about 1.5x, the 1080p one reduced
    assert 1.3 < small["zoom"] < 1.7 and large["zoom"] < 1.0
    curve = json.loads((out / "resolution_curve.json").read_text())
    assert curve["zoom"] == list(RESOLUTION_ZOOMS) and curve["distance"][0] == 0.0
    assert np.all(np.diff(curve["distance"]) >= 0) and curve["distance"][-1] > 0.1
    assert large["score"] == 100.0 and large["resolution_distance"] == 0.0
    assert 0.01 < small["resolution_distance"] < 0.2 and small["score"] < 100.0
    assert np.allclose(t["score"], distance_to_quality(t["distance"] + t["resolution_distance"]))
    # one face, one resolution
    assert (t.groupby("source")["resolution_distance"].nunique() == 1).all()
    deg = t[t["variant"] > 0]
    for r in deg.itertuples():
        lo = max(0.5, min(1.0, r.face_size / 224))
        assert lo - 1e-9 <= r.scale <= 2.0, (r.face_size, r.scale)
    assert deg["scale"].nunique() == len(deg)
    for r in deg.itertuples():
        base = load_image(
            out / t[(t["face_id"] == r.face_id) & (t["variant"] == 0)]["path"].iloc[0]
        )
        spec = {"components": json.loads(r.components), "seed": r.seed, "scale": r.scale}
        assert np.array_equal(apply_degradation(base, spec), load_image(out / r.path))
        assert f"x{r.scale:.2f}" in r.degradation or abs(r.scale - 1) < 5e-3


@pytest.mark.parametrize("zoom", [0.3, 0.7, 1.0, 1.8])
def test_face_region_aligns_to_the_same_crop(zoom):
    """Aligning the region around a face gives the crop that aligning the whole frame gives,
    whether the crop shrinks (area or Gaussian pre-filter) or enlarges the face, and also
    where the crop runs off the frame's edge."""
    from face_iqa.faces.align import align_face, face_template
    from face_iqa.learn.synthetic import face_region

    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (1500, 2000, 3), np.uint8), (0, 0), 1.5)
    tpl = face_template(224)
    for centre in ((1000.0, 750.0), (40.0, 1460.0)):  # inside; across the bottom-left corner
        lm = (tpl - 112.0) / zoom + centre
        lm = lm + rng.normal(0, 0.7, lm.shape)  # not a pure scaling of the template
        crop, m = align_face(frame, lm, 224)
        region, rlm = face_region(frame, lm, m, 224)
        assert region.shape[0] < frame.shape[0] and region.shape[1] < frame.shape[1]
        again, m2 = align_face(region, rlm, 224)
        assert np.allclose(m2[:, :2], m[:, :2])
        assert np.abs(again.astype(int) - crop.astype(int)).max() <= 1


@pytest.mark.slow
def test_frame_degradations_happen_before_alignment(tmp_path):
    """With ``frame_fraction=1`` every degraded variant is the face's frame region degraded
    by its recorded spec and then aligned: the set's crops are rebuilt exactly that way, and
    they differ from the same spec applied to the aligned crop."""
    from face_iqa.faces.align import align_face
    from face_iqa.faces.detect import DetectorConfig, build_detector
    from face_iqa.learn.synthetic import SyntheticConfig, build_synthetic_set, face_region

    photo = shared_path("images", "obama-1080p.jpg")
    labels = build_synthetic_set(
        SyntheticConfig(images=(str(photo),), min_face_size=80, variants=4, frame_fraction=1.0),
        tmp_path,
        log=lambda m: None,
    )
    t = pd.read_parquet(labels)
    assert len(t) == 5
    assert not t.loc[t["variant"] == 0, "in_frame"].any()
    deg = t[t["variant"] > 0]
    assert deg["in_frame"].all() and deg["degradation"].str.endswith(" in frame").all()
    frame = load_image(photo)
    d = build_detector(DetectorConfig()).detect([frame])[0]
    assert len(d) == 1  # the one face the set holds
    k = 0
    crop, m = align_face(frame, d.landmarks[k], 224)
    assert np.array_equal(crop, load_image(tmp_path / t.loc[t["variant"] == 0, "path"].iloc[0]))
    region, rlm = face_region(frame, d.landmarks[k], m, 224)
    for r in deg.itertuples():
        spec = {"components": json.loads(r.components), "seed": r.seed}
        saved = load_image(tmp_path / r.path)
        rebuilt = align_face(apply_degradation(region, spec), rlm, 224)[0]
        assert np.array_equal(rebuilt, saved)
        assert not np.array_equal(apply_degradation(crop, spec), saved)


def test_strong_jpeg_goes_below_the_default_range_and_is_opt_in(face):
    """``jpeg_strong`` runs from quality 20 to 2, below ``jpeg``'s strongest (quality 5), and
    only a draw that asks for it gets it."""
    from face_iqa.learn.degrade import DEGRADATIONS, EXTRA_DEGRADATIONS

    strong = [
        cv2.PSNR(face, apply_degradation(face, _spec("jpeg_strong", s))) for s in (0.0, 0.5, 1.0)
    ]
    assert strong[0] > strong[1] > strong[2], strong
    assert strong[2] < cv2.PSNR(face, apply_degradation(face, _spec("jpeg", 1.0))) - 0.5
    # severity 0 is quality 20: about what ``jpeg`` gives at quality 20 (severity 75/90)
    assert abs(strong[0] - cv2.PSNR(face, apply_degradation(face, _spec("jpeg", 75 / 90)))) < 0.05
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    plain = [sample_degradation(r1, p_clean=0.0) for _ in range(300)]
    assert plain == [sample_degradation(r2, p_clean=0.0, kinds=DEGRADATIONS) for _ in range(300)]
    assert not any(c["kind"] in EXTRA_DEGRADATIONS for s in plain for c in s["components"])
    rng = np.random.default_rng(5)
    more = [
        sample_degradation(rng, p_clean=0.0, kinds=DEGRADATIONS + ("jpeg_strong",))
        for _ in range(1400)
    ]
    share = np.mean([c["kind"] == "jpeg_strong" for s in more for c in s["components"]])
    assert 0.04 < share < 0.11, share  # one kind in 14
    with pytest.raises(ValueError, match="kinds"):
        sample_degradation(rng, kinds=DEGRADATIONS + ("jpeg_stronger",))
    with pytest.raises(ValueError, match="unknown degradation"):
        apply_degradation(face, _spec("jpeg_stronger", 0.5))


def test_low_light_darkens_adds_noise_and_is_reproducible(face):
    """``low_light``: the stronger, the darker and the noisier (the gain's grain left after
    the camera's smoothing), the same pixels from the same spec, never drawn unless asked."""
    from face_iqa.learn.degrade import DEGRADATIONS

    outs = [apply_degradation(face, _spec("low_light", s)) for s in (0.1, 0.5, 0.9)]
    means = [o.mean() for o in outs]
    assert face.mean() > means[0] > means[1] > means[2] > 0.2 * face.mean(), means

    def grain(img):  # what a 5x5 median does not keep, per unit of brightness
        g = img.astype(np.float64)
        return np.abs(g - cv2.medianBlur(img, 5).astype(np.float64)).mean() / g.mean()

    assert grain(outs[2]) > grain(outs[0]) > 0
    assert np.array_equal(outs[1], apply_degradation(face, _spec("low_light", 0.5)))
    assert not np.array_equal(outs[1], apply_degradation(face, _spec("low_light", 0.5, seed=4)))
    assert "low_light" not in DEGRADATIONS


def test_synthetic_set_rejects_unknown_extra_degradations(tmp_path):
    from face_iqa.learn.synthetic import SyntheticConfig, build_synthetic_set

    with pytest.raises(ValueError, match="jpeg_stronger"):
        build_synthetic_set(
            SyntheticConfig(images=("x.jpg",), extra_degradations=("jpeg_stronger",)), tmp_path
        )
    with pytest.raises(ValueError, match="photo_variants"):
        build_synthetic_set(SyntheticConfig(images=("x.jpg",), photo_variants=-1), tmp_path)


@pytest.mark.slow
def test_photo_faces_get_their_own_number_of_variants(tmp_path):
    """``photo_variants`` applies to faces from ``images`` only; video faces keep
    ``variants``; ``extra_degradations`` are drawn and recorded like the others."""
    from face_iqa.learn.synthetic import SyntheticConfig, build_synthetic_set

    photo = str(shared_path("images", "obama-1080p.jpg"))
    video = str(shared_path("videos", "facenet_example.mp4"))
    labels = build_synthetic_set(
        SyntheticConfig(
            images=(photo,),
            videos=(video,),
            frame_stride=100_000,  # the first frame only
            min_face_size=40,
            variants=1,
            photo_variants=30,
            extra_degradations=("jpeg_strong",),
            seed=2,
        ),
        tmp_path,
        log=lambda m: None,
    )
    t = pd.read_parquet(labels)
    per_face = t.groupby(["source", "face_id"]).size()
    assert (per_face.loc[photo] == 31).all()
    assert len(per_face.loc[video]) >= 1 and (per_face.loc[video] == 2).all()
    kinds = [c["kind"] for js in t["components"] for c in json.loads(js)]
    assert "jpeg_strong" in kinds
    for r in t[t["degradation"].str.contains("jpeg_strong")].itertuples():
        spec = {"components": json.loads(r.components), "seed": r.seed}
        clean = load_image(tmp_path / t[(t.face_id == r.face_id) & (t.variant == 0)].path.iloc[0])
        assert np.array_equal(apply_degradation(clean, spec), load_image(tmp_path / r.path))


def test_render_at_scale_keeps_the_face_where_alignment_puts_it():
    """A face rendered as if captured with fewer pixels lands on the same crop: on a smooth
    frame (nothing for the reduction to lose) the crops at 0.7 and 0.5 match the full-size
    crop to within a grey level on average, far closer than landmarks off by one pixel."""
    from face_iqa.faces.align import align_face, face_template, matrix_zoom
    from face_iqa.learn.synthetic import render_at_scale

    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (800, 1000, 3), np.uint8), (0, 0), 6)
    frame = cv2.normalize(frame, None, 0, 255, cv2.NORM_MINMAX)
    lm = (face_template(224) - 112.0) / 0.6 + (500.0, 400.0)
    full, m_full = align_face(frame, lm, 224)
    same, m_same = render_at_scale(frame, lm, 1.0, 224)
    assert np.array_equal(same, full) and np.allclose(m_same, m_full)
    off = np.abs(render_at_scale(frame, lm + 1.0, 1.0, 224)[0] - full.astype(float)).mean()
    for s in (0.7, 0.5):
        crop, m = render_at_scale(frame, lm, s, 224)
        assert np.abs(crop - full.astype(float)).mean() < 1.0 < off / 3, s
        assert matrix_zoom(m) == pytest.approx(matrix_zoom(m_full) / s, rel=0.01)
    with pytest.raises(ValueError, match="scale"):
        render_at_scale(frame, lm, 1.5, 224)
    # saved as a JPEG at its size: the same place, the blocks of a low quality on it
    colour = cv2.resize(rng.integers(0, 256, (100, 125, 3), np.uint8), (1000, 800))
    plain = render_at_scale(colour, lm, 0.5, 224)[0].astype(float)
    good, m_good = render_at_scale(colour, lm, 0.5, 224, jpeg_quality=95)
    poor = render_at_scale(colour, lm, 0.5, 224, jpeg_quality=10)[0]
    assert np.allclose(m_good, render_at_scale(colour, lm, 0.5, 224)[1])
    assert 0 < np.abs(good - plain).mean() < np.abs(poor - plain).mean()


@pytest.mark.slow
def test_synthetic_set_ladders(tmp_path):
    """Resolution ladders: each clean face rendered at ``ladder_rungs`` sizes, the first its
    own crop, the others smaller; excluded files get none, and the labelled set is the same
    with or without ladders (their own random stream)."""
    from face_iqa.learn.synthetic import SyntheticConfig, build_synthetic_set

    imgs = tuple(str(shared_path("images", f"obama-{r}.jpg")) for r in ("480p", "1080p"))
    base = dict(images=imgs, min_face_size=80, variants=2, seed=4)
    with_l = build_synthetic_set(
        SyntheticConfig(**base, ladder_rungs=5, ladder_min_side=30, ladder_exclude=("*-480p.jpg",)),
        tmp_path / "a",
        log=lambda m: None,
    )
    without = build_synthetic_set(SyntheticConfig(**base), tmp_path / "b", log=lambda m: None)
    ta, tb = pd.read_parquet(with_l), pd.read_parquet(without)
    assert ta.drop(columns="path").equals(tb.drop(columns="path"))
    assert not (tmp_path / "b" / "ladders.parquet").exists()
    lad = pd.read_parquet(tmp_path / "a" / "ladders.parquet")
    assert set(lad["source"]) == {imgs[1]}  # the 480p photo is excluded
    assert len(lad) == 5 and lad["rung"].tolist() == list(range(5))
    sc = lad["scale"].to_numpy()
    assert sc[0] == 1.0 and np.all(np.diff(sc) < 0)
    clean = ta[(ta["source"] == imgs[1]) & (ta["variant"] == 0)].iloc[0]
    assert sc[-1] >= 30 / clean["face_size"] - 1e-9
    assert np.allclose(lad["face_size"], clean["face_size"] * sc)
    # a face captured at scale s fills the crop 1/s times as enlarged
    assert np.allclose(lad["zoom"] * sc, clean["zoom"], rtol=0.02)
    first = load_image(tmp_path / "a" / lad["path"].iloc[0])
    assert np.abs(first.astype(float) - load_image(tmp_path / "a" / clean["path"])).max() <= 1


def test_pose_factor_is_a_ramp_and_off_at_zero():
    from face_iqa.learn.synthetic import pose_factor

    assert pose_factor(-1.0, 0.0, 0.85) == 1.0  # off: any pose keeps its label
    got = [pose_factor(f, 0.3, 0.8) for f in (-0.5, 0.3, 0.55, 0.8, 1.0)]
    assert got == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])
    with pytest.raises(ValueError, match="pose_full"):
        pose_factor(0.5, 0.6, 0.6)


@pytest.mark.slow
def test_synthetic_set_pose_labels(tmp_path):
    """With ``pose_floor`` each label is the pose-free label times the pose factor of its
    clean face's frontalness; the pose-free set's cache key is the one of before."""
    from face_iqa.learn.synthetic import (
        SyntheticConfig,
        _cfg_dict,
        build_synthetic_set,
        pose_factor,
    )

    imgs = (str(shared_path("images", "biden.jpg")), str(shared_path("images", "paul_rudd.jpg")))
    base = dict(images=imgs, min_face_size=80, variants=2, seed=4)
    plain = pd.read_parquet(
        build_synthetic_set(SyntheticConfig(**base), tmp_path / "a", log=lambda m: None)
    )
    posed = pd.read_parquet(
        build_synthetic_set(
            SyntheticConfig(**base, pose_floor=0.9, pose_full=0.99),
            tmp_path / "b",
            log=lambda m: None,
        )
    )
    assert len(plain) == len(posed) == 6
    assert plain["frontalness"].equals(posed["frontalness"])
    assert plain["frontalness"].between(0.5, 1.0).all()  # two frontal portraits
    want = plain["score"] * [pose_factor(f, 0.9, 0.99) for f in plain["frontalness"]]
    assert np.allclose(posed["score"], want)
    assert not np.allclose(posed["score"], plain["score"])  # the floor is set to bite here
    assert "pose_floor" not in _cfg_dict(SyntheticConfig(**base))
