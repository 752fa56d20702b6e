"""Quality labels for faces of real footage, from how well the recogniser matches them.

In real video a face fails recognition for reasons no synthetic degradation draws: a turned
head, a grimace, a hand in front of the mouth, motion, a small face in dim light. A label
for such a face cannot come from a clean copy (there is none); it comes from the footage
itself. A one-person clip gives every face a set of genuine comparisons (the person's other
faces, at least ``min_gap`` frames away) and other clips' faces give impostor comparisons.

The label follows SDD-FIQA (Ou et al., CVPR 2021): a face is useful when its genuine
distances sit far below its impostor distances. The **separation** of a face is the 1-D
Wasserstein distance between its genuine and its impostor distance distributions (dlib
descriptor distances), signed: negative when the impostors are on average closer than the
genuine faces. Chosen over CR-FIQA's certainty ratio (own class centre against the nearest
other centre) because it uses every comparison, not two centres, and the EDC that judges a
quality score is made of exactly these comparisons.

Mapping to 0-100, next to the synthetic one (:mod:`face_iqa.learn.utility`, ``100 * exp(-d /
0.25)`` with ``d`` the distance a degradation moved the face from its clean self): a face
that moved ``d`` away from its person loses up to ``d`` of separation, so the separation a
face lacks against the person's good faces is a distance in the same units. With ``ref``
the ``reference_quantile`` (0.9) of the separations of that person's faces,

    quality = 100 * exp(-max(ref - separation, 0) / 0.25)

The best tenth of a person's faces score 100 (as a clean synthetic crop does); a face whose
separation is 0.17 short scores 50; one 0.6 short (dlib's threshold) scores 9. The
reference is per person, so a person whom dlib confuses with others (close impostors) does
not score low on every face: the label ranks faces, not people.

Synthetic damage may be added to real faces (``degraded_copies``): the copy's label comes
from the degraded face's own comparisons against the person's other (undamaged) faces, with
the person's reference, never from the undamaged copy's label.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from face_iqa.faces.identity import robust_centre
from face_iqa.learn.degrade import (
    apply_degradation,
    damage_kinds,
    describe,
    sample_degradation,
)
from face_iqa.learn.utility import DISTANCE_SCALE

__all__ = [
    "FOOTAGE_FACE_ID_OFFSET",
    "FootageConfig",
    "build_footage_set",
    "footage_quality",
    "label_faces",
    "separation",
]

# footage rows' face ids start here, so they never meet the synthetic set's (0, 1, ...)
FOOTAGE_FACE_ID_OFFSET = 1_000_000
_QUANTILES = (np.arange(100) + 0.5) / 100


@dataclass(frozen=True)
class FootageConfig:
    """Attributes:
    clips: a ``clips.csv`` (``file``, ``person``; files relative to it): one person a clip.
    holdout: persons whose clips are never read (kept for evaluation).
    min_gap: sampled faces of a clip are at least this many frames apart.
    per_identity: at most this many faces a clip, spread over it.
    impostors: each face is compared with at most this many faces of other persons
        (a seeded sample).
    degraded_copies: synthetically damaged copies of each face, labelled by their own
        matching.
    extra_degradations: kinds of :data:`face_iqa.learn.degrade.EXTRA_DEGRADATIONS` drawn too.
    reference_quantile: the quantile of a person's separations that scores 100.
    seed: the set is a function of this seed and the clips.
    extra_clips: more ``clips.csv`` files read the same way (``holdout`` applies to all).
    label: ``separation`` (the SDD-FIQA label against the person's own reference, above) or
        ``match`` (the share of genuine comparisons won at the threshold of ``fmr`` over the
        set's impostor pairs, :func:`face_iqa.learn.photos.match_share`): one threshold for
        everyone, so the labels rank faces across people.
    fmr / softness: the ``match`` label's false match rate and sigmoid width.
    nonfaces: take every detection of a sampled frame; the person's face is the one nearest
        the clip's robust centre (not the largest: a printed face on a shirt can be larger),
        and a detection farther than ``nonface_distance`` from it is no face of the person
        (a print, a hand, clothing, background): it enters the set with the label 0.
    nonface_thresholds: the detector's three stage thresholds while sampling (empty: its
        defaults); lower ones add the detector's near misses on hands, prints and clothing,
        which is where false detections come from.
    """

    clips: str = ""
    holdout: tuple[str, ...] = ()
    min_gap: int = 5
    per_identity: int = 50
    impostors: int = 400
    degraded_copies: int = 1
    extra_degradations: tuple[str, ...] = ()
    reference_quantile: float = 0.9
    seed: int = 1
    extra_clips: tuple[str, ...] = ()
    label: str = "separation"
    fmr: float = 1e-3
    softness: float = 0.05
    nonfaces: bool = False
    nonface_distance: float = 0.7
    nonface_thresholds: tuple[float, ...] = ()


def separation(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Signed 1-D Wasserstein distance between a face's genuine and impostor distances:
    positive when impostors lie farther than genuine faces (the larger, the more useful)."""
    g = np.quantile(np.asarray(genuine, np.float64), _QUANTILES)
    i = np.quantile(np.asarray(impostor, np.float64), _QUANTILES)
    diff = i - g
    return float(np.abs(diff).mean() * (1.0 if diff.mean() >= 0 else -1.0))


def footage_quality(sep: np.ndarray | float, ref: np.ndarray | float) -> np.ndarray:
    """Separation -> quality in (0, 100] against the person's reference separation ``ref``
    (see the module docstring); non-decreasing in ``sep``."""
    short = np.maximum(np.asarray(ref, np.float64) - np.asarray(sep, np.float64), 0.0)
    return 100.0 * np.exp(-short / DISTANCE_SCALE)


def label_faces(
    descriptors: np.ndarray,
    identity: np.ndarray,
    impostors: int,
    reference_quantile: float,
    rng: np.random.Generator,
    copies: np.ndarray | None = None,
    copy_of: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Separations and labels of faces with known identities.

    ``descriptors`` (N x 128) and ``identity`` (N) are the undamaged faces; each is compared
    with the other faces of its identity and with at most ``impostors`` faces of other
    identities. ``copies`` (M x 128) are damaged faces, ``copy_of`` (M) the index of the
    face each was made from: compared with that face's identity's other faces and the same
    impostors. Returns (separation, quality) of the faces and of the copies; faces whose
    identity has no other face get NaN.
    """
    d = np.asarray(descriptors, np.float64)
    ident = np.asarray(identity).astype(str)
    n = len(d)
    others = [np.flatnonzero(ident != ident[k]) for k in range(n)]
    imp = [
        o if len(o) <= impostors else np.sort(rng.choice(o, impostors, replace=False))
        for o in others
    ]

    def sep_of(x: np.ndarray, k: int) -> float:
        same = np.flatnonzero((ident == ident[k]) & (np.arange(n) != k))
        if len(same) == 0 or len(imp[k]) == 0:
            return np.nan
        gen = np.linalg.norm(d[same] - x, axis=1)
        return separation(gen, np.linalg.norm(d[imp[k]] - x, axis=1))

    sep = np.array([sep_of(d[k], k) for k in range(n)])
    ref = {
        p: float(np.nanquantile(sep[ident == p], reference_quantile))
        if np.isfinite(sep[ident == p]).any()
        else np.nan
        for p in np.unique(ident)
    }
    refs = np.array([ref[p] for p in ident])
    quality = footage_quality(sep, refs)
    quality[~np.isfinite(sep)] = np.nan
    if copies is None or copy_of is None:
        return sep, quality, None, None
    c = np.asarray(copies, np.float64)
    of = np.asarray(copy_of, int)
    csep = np.array([sep_of(c[j], of[j]) for j in range(len(c))])
    cq = footage_quality(csep, refs[of])
    cq[~np.isfinite(csep)] = np.nan
    return sep, quality, csep, cq


def match_labels(
    descriptors: np.ndarray,
    identity: np.ndarray,
    fmr: float,
    softness: float,
    copies: np.ndarray | None = None,
    copy_of: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The ``match`` label: like :func:`label_faces`, with the match share (0-1) in place
    of the separation and ``100 *`` it as the quality."""
    from face_iqa.faces.photo_sets import impostor_threshold
    from face_iqa.learn.photos import match_share

    d = np.asarray(descriptors, np.float64)
    ident = np.asarray(identity).astype(str)
    t = impostor_threshold(d, ident, fmr)
    n = np.arange(len(d))
    m = np.array([match_share(d[k], d[(ident == ident[k]) & (n != k)], t, softness) for k in n])
    if copies is None or copy_of is None:
        return m, 100.0 * m, None, None
    of = np.asarray(copy_of, int)
    cm = np.array(
        [
            match_share(c, d[(ident == ident[of[j]]) & (n != of[j])], t, softness)
            for j, c in enumerate(np.asarray(copies, np.float64))
        ]
    )
    return m, 100.0 * m, cm, 100.0 * cm


def _cfg_json(cfg: FootageConfig) -> str:
    d = asdict(cfg)
    d["clips"] = os.path.abspath(cfg.clips)
    d["extra_clips"] = [os.path.abspath(c) for c in cfg.extra_clips]
    return json.dumps(d, sort_keys=True, default=list)


def build_footage_set(
    cfg: FootageConfig,
    out_dir: str | os.PathLike[str],
    log: Callable[[str], None] = print,
    detector=None,
    recognizer=None,
) -> Path:
    """Sample, align and label the faces of ``cfg.clips`` (less ``holdout``) under
    ``out_dir`` (``crops/``, ``labels.parquet``; reused when ``config.json`` matches);
    returns the path of ``labels.parquet``.

    Columns: ``path`` (relative), ``score``, ``separation``, ``identity`` (``person:P``),
    ``face_id``, ``variant`` (0 undamaged, then copies), ``source``, ``frame_index``,
    ``face_size``, ``degradation`` (``clean`` for undamaged faces), ``split`` (empty).
    """
    from face_iqa.faces.clips import sample_video_faces

    out = Path(out_dir)
    labels_path = out / "labels.parquet"
    cfg_json = _cfg_json(cfg)
    if labels_path.is_file() and (out / "config.json").is_file():
        if (out / "config.json").read_text() == cfg_json:
            log(f"reusing {labels_path}")
            return labels_path
    kinds = damage_kinds(cfg.extra_degradations)
    from face_iqa.faces.clips import read_clips

    if cfg.label not in ("separation", "match"):
        raise ValueError(f"footage.label {cfg.label!r}: expected 'separation' or 'match'")
    clips = []
    for f in (cfg.clips, *cfg.extra_clips):
        persons = set(pd.read_csv(f)["person"].astype(str)) if Path(f).is_file() else set()
        clips += read_clips(f, exclude=[h for h in cfg.holdout if h in persons])
    if detector is None:
        from face_iqa.faces.detect import DetectorConfig, build_detector

        kw = {"thresholds": tuple(cfg.nonface_thresholds)} if cfg.nonface_thresholds else {}
        detector = build_detector(DetectorConfig(device="cpu", max_side=1280, **kw))
    if recognizer is None:
        from face_iqa.faces.recognizer import DlibRecognizer

        recognizer = DlibRecognizer()
    (out / "crops").mkdir(parents=True, exist_ok=True)
    rows, crops, desc, shapes = [], [], [], []
    nonface_rows, nonface_crops = [], []
    for person, path in clips:
        faces, cs = sample_video_faces(
            path, detector, cfg.min_gap, cfg.per_identity, every_face=cfg.nonfaces
        )
        found = []
        for f, crop in zip(faces.itertuples(), cs):
            try:
                sh = recognizer.chip_shape(crop)
                dv = recognizer.descriptor(crop, sh)
            except RuntimeError:  # dlib could not place its shape: no label
                continue
            row = {
                "identity": f"person:{person}",
                "source": str(path),
                "frame_index": int(f.frame_index),
                "face_size": float(f.face_size),
            }
            found.append((row, crop, dv, sh))
        person_face = np.ones(len(found), bool)
        if cfg.nonfaces and found:
            all_desc = np.stack([x[2] for x in found])
            centre, _ = robust_centre(all_desc)
            dist = np.linalg.norm(all_desc - centre, axis=1)
            frame = np.array([x[0]["frame_index"] for x in found])
            for fi in np.unique(frame):
                idx = np.flatnonzero(frame == fi)
                best = idx[int(np.argmin(dist[idx]))]
                person_face[idx] = False
                person_face[best] = True
                for j in idx:
                    if j != best and dist[j] > cfg.nonface_distance:
                        nonface_rows.append({**found[j][0], "distance": float(dist[j])})
                        nonface_crops.append(found[j][1])
        for (row, crop, dv, sh), keep in zip(found, person_face):
            if keep:
                rows.append(row)
                crops.append(crop)
                desc.append(dv)
                shapes.append(sh)
        log(
            f"footage: {path.name}: {int(person_face.sum())} faces, {int((~person_face).sum())} others"
        )
    if not rows:
        raise ValueError(f"{cfg.clips}: no faces found in the clips")
    rng = np.random.default_rng(cfg.seed)
    copies, copy_of, specs = [], [], []
    for k, crop in enumerate(crops):
        for _ in range(cfg.degraded_copies):
            spec = sample_degradation(rng, p_clean=0.0, kinds=kinds)
            img = apply_degradation(crop, spec)
            copies.append(recognizer.descriptor(img, shapes[k]))
            copy_of.append(k)
            specs.append((spec, img))
    ident = np.array([r["identity"] for r in rows])
    if cfg.label == "match":
        sep, q, csep, cq = match_labels(
            np.stack(desc),
            ident,
            cfg.fmr,
            cfg.softness,
            np.stack(copies) if copies else None,
            np.array(copy_of) if copies else None,
        )
    else:
        sep, q, csep, cq = label_faces(
            np.stack(desc),
            ident,
            cfg.impostors,
            cfg.reference_quantile,
            np.random.default_rng(cfg.seed + 1),
            np.stack(copies) if copies else None,
            np.array(copy_of) if copies else None,
        )
    table = []

    def add(k: int, v: int, img: np.ndarray, s: float, score: float, degradation: str) -> None:
        if not np.isfinite(score):
            return
        rel = f"crops/{k:05d}_{v:02d}.png"
        cv2.imwrite(str(out / rel), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        table.append(
            {
                "path": rel,
                "score": float(score),
                "separation": float(s),
                **rows[k],
                "face_id": FOOTAGE_FACE_ID_OFFSET + k,
                "variant": v,
                "degradation": degradation,
                "split": "",
            }
        )

    for k, crop in enumerate(crops):
        add(k, 0, crop, sep[k], q[k], "clean")
    for j, (spec, img) in enumerate(specs):
        k = copy_of[j]
        add(k, 1 + j % cfg.degraded_copies, img, csep[j], cq[j], describe(spec))
    for j, (row, crop) in enumerate(zip(nonface_rows, nonface_crops)):
        rel = f"crops/nonface_{j:05d}.png"
        cv2.imwrite(str(out / rel), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        table.append(
            {
                "path": rel,
                "score": 0.0,
                "separation": np.nan,
                **{k: v for k, v in row.items() if k != "distance"},
                "face_id": FOOTAGE_FACE_ID_OFFSET + len(crops) + j,
                "variant": 0,
                "degradation": "nonface",
                "split": "",
            }
        )
    df = pd.DataFrame(table)
    tmp = labels_path.with_suffix(".tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(labels_path)
    (out / "config.json").write_text(cfg_json)
    log(
        f"footage: {int((df['variant'] == 0).sum())} faces of {df['identity'].nunique()} "
        f"persons, {int((df['variant'] > 0).sum())} damaged copies; median label "
        f"{df['score'].median():.1f}"
    )
    return labels_path
