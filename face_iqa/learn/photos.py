"""Quality labels for real photos of known people, from how often the recogniser matches them.

An identity photo set (``file``/``path``, ``identity``, ``set``: one row per photo, as a face
dataset is) gives every face of a person a set of genuine comparisons: the person's faces in
their other photos. The EDC that judges a quality score counts exactly these comparisons,
failed at one threshold for everyone: dlib's distance at a false match rate (``fmr``) over
the impostor pairs of the set. So the label of a face is the share of its genuine
comparisons it wins at that threshold, made smooth so that a comparison just under the
threshold counts a little less than one far under it:

    match = mean_j sigmoid((t - d_ij) / softness),    score = 100 * match

One threshold for everyone makes the labels rank faces *across* people: a person whose photos
are all small and dark wins few comparisons and gets low labels on all of them, a person in
studio light high ones, as the pooled EDC sees them. Chosen over SDD-FIQA's separation of
genuine and impostor distances (:mod:`face_iqa.learn.footage`) because the EDC at a fixed
threshold depends on the genuine distances only; the impostor side is in ``t``. A face's
failure is shared with its partner; averaged over all of a person's photos, the face that
fails with every partner is the poor one.

Synthetic damage on real faces (``degraded_copies``) is labelled the same way: the damaged
copy's own descriptor against the person's other undamaged faces.

Some people are held out (``holdout``: ``set:count`` items, drawn with ``holdout_seed``):
their photos are never read here; ``heldout.csv`` in the output lists them for the
evaluation. The face of each photo is chosen as the evaluation chooses it
(:mod:`face_iqa.faces.photo_sets`); a photo with no agreeing face has no label.
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

from face_iqa.faces.align import align_face, matrix_zoom
from face_iqa.faces.photo_sets import (
    acquire_faces,
    choose_faces,
    impostor_threshold,
    pad_tight,
    read_identity_photos,
)
from face_iqa.images import ImageError, load_image
from face_iqa.learn.degrade import (
    KNOWN_DEGRADATIONS,
    apply_degradation,
    damage_kinds,
    describe,
    sample_degradation,
)
from face_iqa.learn.synthetic import face_region, render_at_scale, write_parquet_atomic

__all__ = [
    "PHOTO_FACE_ID_OFFSET",
    "PhotoSetConfig",
    "build_photo_copies",
    "build_photo_ladders",
    "build_photo_set",
    "heldout_people",
    "match_share",
]

# photo rows' face ids start here, beside the synthetic (0...) and footage (1,000,000...) ones
PHOTO_FACE_ID_OFFSET = 2_000_000


@dataclass(frozen=True)
class PhotoSetConfig:
    """Attributes:
    identities: the identities CSV (``file`` or ``path``, ``identity``, ``set``).
    holdout: ``set:count`` items: that many people of each set are held out.
    holdout_seed: the draw of the held-out people.
    fmr: the false match rate whose threshold the labels count matches at.
    softness: the sigmoid's width in descriptor distance.
    degraded_copies: synthetically damaged copies of each face, labelled by their own matching.
    extra_degradations: kinds of :data:`face_iqa.learn.degrade.EXTRA_DEGRADATIONS` drawn too.
    agree: a photo's face must lie within this median distance of the person's other faces.
    max_people: read at most this many training people (0: all; for trials and tests).
    seed: the damage drawn.
    """

    identities: str = ""
    holdout: tuple[str, ...] = ()
    holdout_seed: int = 0
    fmr: float = 1e-3
    softness: float = 0.05
    degraded_copies: int = 1
    extra_degradations: tuple[str, ...] = ()
    agree: float = 0.7
    max_people: int = 0
    seed: int = 1


def heldout_people(photos: pd.DataFrame, holdout: tuple[str, ...], seed: int) -> list[str]:
    """The identities held out: for each ``set:count`` item, ``count`` people of that set
    drawn with ``seed`` (sorted names, then a seeded permutation: the same file and seed give
    the same people). A ``ValueError`` names an unknown set or a count beyond its people."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    for item in holdout:
        name, _, count = str(item).partition(":")
        people = sorted(photos.loc[photos["set"] == name, "identity"].unique())
        if not people or not count.isdigit() or int(count) > len(people):
            raise ValueError(
                f"photos.holdout {item!r}: expected 'set:count' with a set of the file "
                f"({sorted(photos['set'].unique())}) and at most its number of people"
            )
        out += [people[i] for i in rng.permutation(len(people))[: int(count)]]
    return out


def match_share(desc: np.ndarray, partners: np.ndarray, threshold: float, softness: float) -> float:
    """The smooth share of the comparisons of ``desc`` with ``partners`` (N x 128) that fall
    under ``threshold``; NaN without partners."""
    if len(partners) == 0:
        return float("nan")
    d = np.linalg.norm(np.asarray(partners, np.float64) - np.asarray(desc, np.float64), axis=1)
    return float(np.mean(1.0 / (1.0 + np.exp(-(threshold - d) / softness))))


def _cfg_json(cfg: PhotoSetConfig) -> str:
    d = asdict(cfg)
    d["identities"] = os.path.abspath(cfg.identities)
    return json.dumps(d, sort_keys=True, default=list)


def _describe_person(
    photos: pd.DataFrame,
    cfg: PhotoSetConfig,
    detector,
    recognizer,
    rng: np.random.Generator,
    out: Path,
    first_id: int,
) -> pd.DataFrame:
    """The chosen faces of one person's photos (crops written) and their damaged copies:
    one row per crop with its descriptor (labels come later, over all people)."""
    cands, crops = acquire_faces(photos, detector, recognizer)
    if cands.empty or (cands["cand"] < 0).all():
        return pd.DataFrame()
    chosen = choose_faces(cands, cfg.agree)
    crop_of = dict(zip(cands.index[cands["cand"] >= 0], crops))
    kinds = damage_kinds(cfg.extra_degradations)
    rows = []
    for n, i in enumerate(cands.index[chosen]):
        r = cands.loc[i]
        crop = crop_of[i]
        face_id = first_id + n
        base = {
            "identity": str(r["identity"]),
            "set": str(r["set"]),
            "source": str(r["path"]),
            "face_id": face_id,
            "face_size": float(r["face_size"]),
        }
        rel = f"crops/{face_id:07d}_00.png"
        cv2.imwrite(str(out / rel), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        rows.append(
            {
                **base,
                "path": rel,
                "variant": 0,
                "degradation": "clean",
                "descriptor": np.asarray(r["descriptor"], np.float32),
            }
        )
        try:
            shape = recognizer.chip_shape(crop)
        except RuntimeError:
            continue
        for v in range(1, cfg.degraded_copies + 1):
            spec = sample_degradation(rng, p_clean=0.0, kinds=kinds)
            img = apply_degradation(crop, spec)
            rel = f"crops/{face_id:07d}_{v:02d}.png"
            cv2.imwrite(str(out / rel), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            rows.append(
                {
                    **base,
                    "path": rel,
                    "variant": v,
                    "degradation": describe(spec),
                    "descriptor": recognizer.descriptor(img, shape).astype(np.float32),
                }
            )
    return pd.DataFrame(rows)


def label_photo_faces(
    faces: pd.DataFrame, fmr: float, softness: float, threshold: float | None = None
) -> tuple[pd.DataFrame, float]:
    """``score`` (0-100) and ``match`` for every row of ``faces`` (``identity``, ``face_id``,
    ``variant``, ``descriptor``): each crop against the undamaged faces of its person in
    other photos, at the threshold of ``fmr`` over the undamaged faces of everyone (or the
    ``threshold`` given). Rows of a person with one photo get NaN. Returns the table and the
    threshold."""
    clean = faces[faces["variant"] == 0]
    t = threshold
    if t is None:
        desc = np.stack(clean["descriptor"].to_numpy())
        t = impostor_threshold(desc, clean["identity"].to_numpy(), fmr)
    by_person = {
        p: (g["face_id"].to_numpy(), np.stack(g["descriptor"].to_numpy()))
        for p, g in clean.groupby("identity", sort=False)
    }
    match = []
    for r in faces.itertuples(index=False):
        ids, d = by_person[r.identity]
        match.append(match_share(r.descriptor, d[ids != r.face_id], t, softness))
    out = faces.copy()
    out["match"] = match
    out["score"] = 100.0 * out["match"]
    return out, t


def build_photo_set(
    cfg: PhotoSetConfig,
    out_dir: str | os.PathLike[str],
    log: Callable[[str], None] = print,
    detector=None,
    recognizer=None,
) -> Path:
    """Choose, align, damage and label the faces of ``cfg.identities`` (less the held-out
    people) under ``out_dir`` (``crops/``, ``labels.parquet``, ``heldout.csv``,
    ``info.json``); returns the path of ``labels.parquet``. Each person's faces are kept in
    ``people/`` as they are done, so an interrupted build goes on where it stopped; a
    finished one is reused while ``config.json`` matches.

    Columns: ``path`` (relative), ``score``, ``match``, ``identity``, ``set``, ``source``,
    ``face_id``, ``variant`` (0 undamaged), ``degradation``, ``face_size``, ``split``
    (empty)."""
    out = Path(out_dir)
    labels_path = out / "labels.parquet"
    cfg_json = _cfg_json(cfg)
    cfg_file = out / "config.json"
    if cfg_file.is_file() and cfg_file.read_text() != cfg_json:
        raise ValueError(f"{out}: built with other settings ({cfg_file}); choose another directory")
    photos = read_identity_photos(cfg.identities)
    held = heldout_people(photos, cfg.holdout, cfg.holdout_seed)
    out.mkdir(parents=True, exist_ok=True)
    heldout = photos[photos["identity"].isin(held)].copy()
    heldout["path"] = [os.path.abspath(p) for p in heldout["path"]]
    heldout.to_csv(out / "heldout.csv", index=False)  # the evaluation's input
    if labels_path.is_file() and cfg_file.is_file():
        log(f"reusing {labels_path}")
        return labels_path
    damage_kinds(cfg.extra_degradations)  # an unknown kind stops the build before it starts
    (out / "crops").mkdir(parents=True, exist_ok=True)
    (out / "people").mkdir(exist_ok=True)
    cfg_file.write_text(cfg_json)
    train = photos[~photos["identity"].isin(held)]
    people = list(dict.fromkeys(train["identity"]))
    if cfg.max_people:
        people = people[: cfg.max_people]
    if detector is None:
        from face_iqa.faces.detect import DetectorConfig, build_detector

        detector = build_detector(DetectorConfig(device="cpu", max_side=1280))
    if recognizer is None:
        from face_iqa.faces.recognizer import DlibRecognizer

        recognizer = DlibRecognizer()
    parts = []
    for k, person in enumerate(people):
        part = out / "people" / f"{k:06d}.parquet"
        if not part.is_file():
            rng = np.random.default_rng([cfg.seed, k])
            g = _describe_person(
                train[train["identity"] == person],
                cfg,
                detector,
                recognizer,
                rng,
                out,
                PHOTO_FACE_ID_OFFSET + 1000 * k,
            )
            write_parquet_atomic(g, part)
            if (k + 1) % 10 == 0:
                log(f"photos: {k + 1} of {len(people)} people described")
        parts.append(pd.read_parquet(part))
    faces = pd.concat([p for p in parts if len(p)], ignore_index=True)
    faces, t = label_photo_faces(faces, cfg.fmr, cfg.softness)
    faces = faces[np.isfinite(faces["score"])].drop(columns=["descriptor"])
    faces["split"] = ""
    write_parquet_atomic(faces, labels_path)
    clean = faces[faces["variant"] == 0]
    info = {
        "threshold": t,
        "fmr": cfg.fmr,
        "people": int(faces["identity"].nunique()),
        "heldout_people": len(held),
        "faces": int(len(clean)),
        "copies": int(len(faces) - len(clean)),
        "median_score": float(clean["score"].median()),
    }
    (out / "info.json").write_text(json.dumps(info, indent=1))
    log(
        f"photos: {info['faces']} faces of {info['people']} people, {info['copies']} damaged "
        f"copies, threshold {t:.3f} at FMR {cfg.fmr:g}; median label {info['median_score']:.1f}"
    )
    return labels_path


def build_photo_ladders(
    labels: Path,
    train_faces: pd.DataFrame,
    rungs: int,
    min_face: float,
    log: Callable[[str], None] = print,
    detector=None,
    seed: int = 1,
    jpeg: tuple[int, int] | None = None,
) -> Path:
    """Resolution ladders of the large real faces (``ladders.parquet`` and ``ladders/``
    beside ``labels``, the laddered set's layout): each undamaged train face of at least
    ``min_face`` pixels, found again in its photo, rendered as captured at ``rungs - 1``
    smaller sizes (half log-uniform in 0.45-0.8 of its size, where a 1080p photo becomes a
    720p one, the rest down to a 20 px face) beside its own size, as
    :func:`face_iqa.learn.synthetic.render_at_scale` renders the synthetic ladders; with
    ``jpeg`` (lowest, highest quality) each rung, the full size too, is saved as a JPEG of a
    quality drawn in that range before alignment, as each size of a photo is a file of its
    own. The synthetic set's large faces are few (its photos); a real photo reduced from 1080
    to 720 lines loses detail that recognition labels do not see, and the ladder says so.
    Reused while ``ladders.json`` names the same faces and settings."""
    out = Path(labels).parent
    faces = train_faces[
        (train_faces["variant"] == 0) & (train_faces["face_size"] >= min_face)
    ].sort_values("face_id")
    spec = json.dumps(
        {
            "rungs": rungs,
            "min_face": min_face,
            "seed": seed,
            "jpeg": None if jpeg is None else list(jpeg),
            "faces": faces["face_id"].tolist(),
        }
    )
    path, spec_file = out / "ladders.parquet", out / "ladders.json"
    if path.is_file() and spec_file.is_file() and spec_file.read_text() == spec:
        log(f"reusing {path}")
        return path
    if detector is None:
        from face_iqa.faces.detect import DetectorConfig, build_detector

        detector = build_detector(DetectorConfig(device="cpu", max_side=1280))
    (out / "ladders").mkdir(parents=True, exist_ok=True)
    rows = []
    for n, r in enumerate(faces.itertuples(index=False)):
        try:
            img = pad_tight(load_image(r.source))
        except ImageError as e:  # a photo gone or broken since the set was built
            log(f"photo ladders: skipped ({e})")
            continue
        det = detector.detect([img])[0]
        if not len(det):
            continue
        sides = np.minimum(det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1])
        k = int(np.argmin(np.abs(sides - r.face_size)))
        if abs(sides[k] - r.face_size) > 0.02 * r.face_size:
            continue  # not the face the set chose
        lm = np.asarray(det.landmarks[k], np.float64)
        _, m = align_face(img, lm, 224)
        region, region_lm = face_region(img, lm, m, 224)
        rng = np.random.default_rng([seed, int(r.face_id)])
        lo = min(max(20.0 / r.face_size, 0.05), 0.4)
        near = rungs // 2  # half the smaller rungs (rounded up) near the face's own size
        scales = [1.0] + sorted(
            np.exp(
                np.r_[
                    rng.uniform(np.log(0.45), np.log(0.8), near),
                    rng.uniform(np.log(lo), np.log(0.45), rungs - 1 - near),
                ]
            ).tolist(),
            reverse=True,
        )
        for j, sc in enumerate(scales):
            q = None if jpeg is None else int(rng.integers(jpeg[0], jpeg[1] + 1))
            crop, mk = render_at_scale(region, region_lm, sc, 224, q)
            rel = f"ladders/{int(r.face_id):07d}_{j:02d}.png"
            cv2.imwrite(str(out / rel), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            rows.append(
                {
                    "path": rel,
                    "face_id": int(r.face_id),
                    "rung": j,
                    "scale": float(sc),
                    "face_size": float(r.face_size * sc),
                    "zoom": matrix_zoom(mk),
                    "identity": r.identity,
                    "source": r.source,
                }
            )
        if (n + 1) % 100 == 0:
            log(f"photo ladders: {n + 1} of {len(faces)} faces")
    table = pd.DataFrame(rows)
    write_parquet_atomic(table, path)
    spec_file.write_text(spec)
    log(
        f"photo ladders: {table['face_id'].nunique() if len(table) else 0} faces, {len(table)} crops"
    )
    return path


def build_photo_copies(
    labels: str | os.PathLike[str],
    kind: str,
    copies: int,
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    log: Callable[[str], None] = print,
    recognizer=None,
) -> Path:
    """More damaged copies of a built photo set's faces, all of one ``kind`` (severities
    drawn as :func:`face_iqa.learn.degrade.sample_degradation` draws them), each labelled
    by its own matching as the set's ``degraded_copies`` are: against the person's
    undamaged faces in other photos, at the set's threshold (``info.json``). For a kind the
    set's mixed damage draws too rarely to teach, such as ``low_light``.

    ``labels`` is the set's ``labels.parquet`` (its ``people/`` hold the descriptors);
    writes ``crops/`` and ``labels.parquet`` (the set's columns, ``variant`` 100 and up)
    under ``out_dir`` and returns that path; reused while ``copies.json`` matches."""
    src = Path(labels).parent
    out = Path(out_dir)
    if kind not in KNOWN_DEGRADATIONS:
        raise ValueError(f"photo copies: unknown kind {kind!r} (known: {KNOWN_DEGRADATIONS})")
    spec_json = json.dumps(
        {"labels": os.path.abspath(labels), "kind": kind, "copies": copies, "seed": seed}
    )
    path, spec_file = out / "labels.parquet", out / "copies.json"
    if path.is_file() and spec_file.is_file() and spec_file.read_text() == spec_json:
        log(f"reusing {path}")
        return path
    info = json.loads((src / "info.json").read_text())
    cfg = json.loads((src / "config.json").read_text())
    faces = pd.concat(
        [pd.read_parquet(p) for p in sorted((src / "people").glob("*.parquet"))],
        ignore_index=True,
    )
    clean = faces[faces["variant"] == 0]
    if recognizer is None:
        from face_iqa.faces.recognizer import DlibRecognizer

        recognizer = DlibRecognizer()
    (out / "crops").mkdir(parents=True, exist_ok=True)
    rows = []
    for n, r in enumerate(clean.itertuples(index=False)):
        crop = load_image(src / r.path)
        try:
            shape = recognizer.chip_shape(crop)
        except RuntimeError:
            continue
        rng = np.random.default_rng([seed, int(r.face_id)])
        for v in range(copies):
            spec = sample_degradation(rng, p_clean=0.0, max_components=1, kinds=(kind,))
            img = apply_degradation(crop, spec)
            rel = f"crops/{int(r.face_id):07d}_{100 + v:03d}.png"
            cv2.imwrite(str(out / rel), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            rows.append(
                {
                    "identity": r.identity,
                    "set": r.set,
                    "source": r.source,
                    "face_id": int(r.face_id),
                    "face_size": float(r.face_size),
                    "path": rel,
                    "variant": 100 + v,
                    "degradation": describe(spec),
                    "descriptor": recognizer.descriptor(img, shape).astype(np.float32),
                }
            )
        if (n + 1) % 500 == 0:
            log(f"photo copies ({kind}): {n + 1} of {len(clean)} faces")
    made = pd.DataFrame(rows)
    both, _ = label_photo_faces(
        pd.concat([clean, made], ignore_index=True),
        cfg["fmr"],
        cfg["softness"],
        threshold=info["threshold"],
    )
    table = both[both["variant"] >= 100].drop(columns=["descriptor"])
    table = table[np.isfinite(table["score"])].reset_index(drop=True)
    table["split"] = ""
    write_parquet_atomic(table, path)
    spec_file.write_text(spec_json)
    log(
        f"photo copies ({kind}): {len(table)} of {len(clean)} faces' copies; median label "
        f"{table['score'].median():.1f} (the undamaged {info['median_score']:.1f})"
    )
    return path
