"""The synthetic label set: :func:`build_synthetic_set` detects and aligns clean faces in
photos and video frames, degrades each crop at random with :mod:`face_iqa.learn.degrade`,
labels every crop with its recognition utility (:mod:`face_iqa.learn.utility`) and writes the
crops plus a ``labels.parquet`` that records every degradation parameter. The set is
reproducible from its seed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from face_iqa.faces.align import (
    align_face,
    crop_footprint,
    landmarks_plausible,
    matrix_zoom,
    reduce_lanczos,
)
from face_iqa.faces.detect import DetectorConfig, build_detector
from face_iqa.faces.pose import frontalness
from face_iqa.faces.recognizer import DlibRecognizer
from face_iqa.images import image_files, load_image
from face_iqa.learn.degrade import (
    DEGRADATIONS,
    apply_degradation,
    damage_kinds,
    describe,
    sample_degradation,
)
from face_iqa.learn.label_sets import cluster_identities
from face_iqa.learn.utility import distance_to_quality

__all__ = [
    "RESOLUTION_ZOOMS",
    "SyntheticConfig",
    "build_synthetic_set",
    "face_region",
    "pose_factor",
    "render_at_scale",
    "resolution_curve",
    "resolution_distance",
    "write_parquet_atomic",
]


# zooms (crop pixels per frame pixel) the resolution curve is measured at
RESOLUTION_ZOOMS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0)


@dataclass(frozen=True)
class SyntheticConfig:
    """Attributes:
    images: photo files or folders of clean faces.
    videos: video files whose frames add clean faces.
    frame_stride: take every N-th video frame.
    min_face_size: faces smaller than this (box side, pixels) are not clean references;
        an upscaled small face is itself degraded.
    variants: degraded versions per clean face (plus the clean crop itself).
    crop_size: aligned crop side.
    scaled_fraction: share of degraded variants whose degradation happens at another
        resolution than the crop's (:mod:`face_iqa.learn.degrade`, ``scale``): between the face's
        own resolution (``face_size / crop_size``, not below 0.5, not above 1) and
        ``max_scale``, log-uniformly. Faces in photos and frames are degraded where they
        were captured, at their own size, so JPEG blocks, grain and blur reach the crop at
        every size; 0 degrades every crop at its own resolution.
    frame_fraction: share of degraded variants whose degradation happens in the frame,
        before alignment, as a camera or a codec does it: the region of the photo or video
        frame around the face (the crop's footprint plus a quarter of it each way) is
        degraded at its own resolution, then aligned with the clean face's landmarks. Blur
        kernels, grain, JPEG blocks and downscaling then reach the crop through the same
        resampling as in real footage (enlarged for small video faces, reduced for large
        faces in photos); ``scaled_fraction`` does not apply to them. 0 degrades every
        variant on the aligned crop.
    extra_degradations: kinds of :data:`face_iqa.learn.degrade.EXTRA_DEGRADATIONS` drawn besides
        the default ones (``jpeg_strong``: quality 20 down to 2). Empty draws exactly the
        variants of earlier versions.
    photo_variants: degraded versions per clean face from a photo (``images``), when
        not ``None``; the photos hold few faces beside the videos' frames, and only they
        carry large faces whose degradations happen above the crop's resolution.
    resolution_label: the label also counts what a face lost by being captured small:
        ``quality = 100 * exp(-(d + d_res(zoom)) / 0.25)`` with ``d`` the distance the
        degradation caused and ``d_res`` the distance the set measures (on its own large
        faces, :func:`resolution_curve`) when a face is reduced to the clean crop's zoom.
        Without it every clean crop is 100, a 100-pixel face as much as a 400-pixel one.
    ladder_rungs: when above 0, a resolution ladder is also written for each clean face
        (``ladders.parquet``, crops under ``ladders/``): the face itself and
        ``ladder_rungs - 1`` versions captured smaller, each the region around the face
        reduced by a scale drawn log-uniformly (antialiased Lanczos, as a downscaling
        encoder or image tool gives it) and then aligned as the pipeline aligns any face.
        Training orders them (``ladder`` in :mod:`face_iqa.learn.config`): a face captured with
        more pixels is at least as good. Unlabelled: they do not change
        ``labels.parquet``.
    ladder_min_side: the smallest face side (box, pixels) a rung reduces a face to; faces
        too small for a rung below 0.8 of their size get no ladder.
    ladder_exclude: ``fnmatch`` patterns of source file names that get no ladder (the
        configs keep the resolution-ladder photos that issue 4 measures out of training's
        ladders).
    pose_floor, pose_full: when ``pose_floor`` is above 0, a label also counts the face's
        pose: it is multiplied by ``clip((f - pose_floor) / (pose_full - pose_floor), 0, 1)``
        with ``f`` the clean face's frontalness (:mod:`face_iqa.faces.pose`), so a face turned to
        ``pose_floor`` scores 0 however clean. Without it a clean crop is 100 in any pose,
        as its label compares it with itself, while on real footage turned heads are the
        commonest failure to match. Every row carries ``frontalness`` either way.
    seed: the whole set is a function of this seed and the inputs.
    """

    images: tuple[str, ...] = ()
    videos: tuple[str, ...] = ()
    frame_stride: int = 3
    min_face_size: int = 90
    variants: int = 8
    crop_size: int = 224
    scaled_fraction: float = 0.0
    max_scale: float = 2.0
    frame_fraction: float = 0.0
    extra_degradations: tuple[str, ...] = ()
    photo_variants: int | None = None
    resolution_label: bool = False
    ladder_rungs: int = 0
    ladder_min_side: float = 20.0
    ladder_exclude: tuple[str, ...] = ()
    pose_floor: float = 0.0
    pose_full: float = 0.85
    seed: int = 0


def _video_frames(path: Path, stride: int) -> Iterator[tuple[int, np.ndarray]]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: cannot open video")
    i = 0
    try:
        while True:
            ok = cap.grab()
            if not ok:
                break
            if i % stride == 0:
                ok, bgr = cap.retrieve()
                if ok:
                    yield i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            i += 1
    finally:
        cap.release()


def face_region(
    frame: np.ndarray, landmarks: np.ndarray, m: np.ndarray, size: int, margin: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``frame`` that a ``size`` x ``size`` aligned crop (frame-to-crop matrix
    ``m``) is drawn from, grown by ``margin`` of its side each way (room for blur kernels
    and JPEG blocks) and cut at the frame's edges, plus the landmarks in its coordinates.
    Aligning the region with those landmarks gives the crop that aligning the frame gives."""
    pts = crop_footprint(m, size)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    grow = margin * float((hi - lo).max())
    h, w = frame.shape[:2]
    x0, y0 = (int(max(0, np.floor(v - grow))) for v in lo)
    x1 = int(min(w, np.ceil(hi[0] + grow)))
    y1 = int(min(h, np.ceil(hi[1] + grow)))
    region = np.ascontiguousarray(frame[y0:y1, x0:x1])
    return region, np.asarray(landmarks, np.float64) - [x0, y0]


def _clean_faces(cfg: SyntheticConfig, log: Callable[[str], None]) -> list[dict]:
    det = build_detector(DetectorConfig())
    faces: list[dict] = []

    def take(frame: np.ndarray, source: str, frame_index: int, photo: bool) -> None:
        d = det.detect([frame])[0]
        h, w = frame.shape[:2]
        for k in range(len(d)):
            box, lm = d.boxes[k], d.landmarks[k]
            side = float(min(box[2] - box[0], box[3] - box[1]))
            inside = (
                (lm[:, 0] >= 0).all()
                and (lm[:, 0] < w).all()
                and (lm[:, 1] >= 0).all()
                and (lm[:, 1] < h).all()
            )
            if side < cfg.min_face_size or not inside or not landmarks_plausible(box, lm):
                continue
            crop, m = align_face(frame, lm, cfg.crop_size)
            face = {
                "source": source,
                "frame_index": frame_index,
                "face_index": k,
                "face_size": side,
                "frontalness": float(frontalness(lm)),
                "crop": crop,
                "zoom": matrix_zoom(m),
                "photo": photo,
            }
            if cfg.frame_fraction > 0 or cfg.ladder_rungs > 0:
                face["region"], face["region_landmarks"] = face_region(frame, lm, m, cfg.crop_size)
            faces.append(face)

    for p in image_files(cfg.images):
        take(load_image(p), str(p), 0, True)
    log(f"{len(faces)} clean faces from photos")
    for v in cfg.videos:
        n0 = len(faces)
        for i, frame in _video_frames(Path(v), cfg.frame_stride):
            take(frame, str(v), i, False)
        log(f"{len(faces) - n0} clean faces from {v}")
    return faces


def build_synthetic_set(
    cfg: SyntheticConfig,
    out_dir: str | os.PathLike[str],
    log: Callable[[str], None] = print,
) -> Path:
    """Build (or reuse, when ``labels.parquet`` exists for the same config) the synthetic
    set under ``out_dir``; returns the path of ``labels.parquet``."""
    kinds = damage_kinds(cfg.extra_degradations)
    if cfg.variants < 0 or (cfg.photo_variants is not None and cfg.photo_variants < 0):
        raise ValueError(f"variants {cfg.variants}, photo_variants {cfg.photo_variants}: need >= 0")
    out = Path(out_dir)
    labels_path = out / "labels.parquet"
    cfg_json = json.dumps(_cfg_dict(cfg), sort_keys=True)
    if labels_path.is_file() and (out / "config.json").is_file():
        if (out / "config.json").read_text() == cfg_json:
            log(f"reusing {labels_path}")
            return labels_path
    (out / "crops").mkdir(parents=True, exist_ok=True)
    faces = _clean_faces(cfg, log)
    if not faces:
        raise ValueError("no clean faces found in the given images and videos")
    rec = DlibRecognizer()
    shapes, clean_desc = [], []
    for f in faces:
        sh = rec.chip_shape(f["crop"])
        shapes.append(sh)
        clean_desc.append(rec.descriptor(f["crop"], sh))
    ident = cluster_identities(np.stack(clean_desc))
    log(f"{len(faces)} clean faces, {ident.max() + 1} identities")
    curve = None
    if cfg.resolution_label:
        curve = resolution_curve(
            rec, [f["crop"] for f in faces], [f["zoom"] for f in faces], shapes, clean_desc
        )
        log(
            "resolution distance by zoom: "
            + ", ".join(f"x{z:g} {d:.3f}" for z, d in zip(RESOLUTION_ZOOMS, curve))
        )
        (out / "resolution_curve.json").write_text(
            json.dumps({"zoom": list(RESOLUTION_ZOOMS), "distance": [float(d) for d in curve]})
        )
    rng = np.random.default_rng(cfg.seed)
    rows = []
    for fi, f in enumerate(faces):
        res_d = 0.0 if curve is None else resolution_distance(f["zoom"], curve)
        pose = pose_factor(f["frontalness"], cfg.pose_floor, cfg.pose_full)
        lo_scale = float(np.clip(f["face_size"] / cfg.crop_size, 0.5, 1.0))
        n_var = cfg.variants
        if f["photo"] and cfg.photo_variants is not None:
            n_var = cfg.photo_variants
        for v in range(n_var + 1):
            # drawn only when asked for, so sets without frame degradations stay as they were
            in_frame = v > 0 and cfg.frame_fraction > 0 and rng.random() < cfg.frame_fraction
            spec = (
                {"components": [], "seed": int(rng.integers(0, 2**31 - 1))}
                if v == 0
                else sample_degradation(
                    rng,
                    p_clean=0.0,
                    p_scaled=0.0 if in_frame else cfg.scaled_fraction,
                    scale_range=(lo_scale, cfg.max_scale),
                    kinds=kinds,
                )
            )
            if in_frame:
                region = apply_degradation(f["region"], spec)
                img = align_face(region, f["region_landmarks"], cfg.crop_size)[0]
            else:
                img = apply_degradation(f["crop"], spec)
            dist = float(np.linalg.norm(rec.descriptor(img, shapes[fi]) - clean_desc[fi]))
            rel = f"crops/{fi:05d}_{v:02d}.png"
            cv2.imwrite(str(out / rel), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            rows.append(
                {
                    "path": rel,
                    "score": float(distance_to_quality(dist + res_d)) * pose,
                    "frontalness": f["frontalness"],
                    "distance": dist,
                    "resolution_distance": res_d,
                    "zoom": f["zoom"],
                    "identity": f"id{ident[fi]:03d}",
                    "face_id": fi,
                    "variant": v,
                    "source": f["source"],
                    "frame_index": f["frame_index"],
                    "face_size": f["face_size"],
                    "degradation": describe(spec) + (" in frame" if in_frame else ""),
                    "in_frame": bool(in_frame),
                    "components": json.dumps(spec["components"]),
                    "seed": spec["seed"],
                    "scale": float(spec.get("scale", 1.0)),
                    "split": "",
                }
            )
        if (fi + 1) % 50 == 0:
            log(f"labelled {fi + 1}/{len(faces)} faces")
    table = pd.DataFrame(rows)
    if cfg.ladder_rungs > 0:
        write_parquet_atomic(_ladders(cfg, faces, ident, out, log), out / "ladders.parquet")
    write_parquet_atomic(table, labels_path)
    (out / "config.json").write_text(cfg_json)
    return labels_path


def write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write then rename, so that an interrupted build never leaves a half-written table."""
    tmp = path.with_suffix(".tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def render_at_scale(
    frame: np.ndarray,
    landmarks: np.ndarray,
    scale: float,
    size: int,
    jpeg_quality: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The aligned crop of a face as if ``frame`` had been captured with ``scale`` times its
    pixels per side: the frame reduced with an antialiased Lanczos filter (as image tools
    and the alignment itself reduce; ``scale`` 1: as it is), the landmarks moved with it
    (pixel centres), saved as a JPEG of ``jpeg_quality`` when given (each capture a file of
    its own size, as a photo's 720p and 1080p versions are), then
    :func:`face_iqa.faces.align.align_face`. Returns ``(crop, matrix)`` like ``align_face``,
    the matrix from the reduced frame."""
    if not 0 < scale <= 1:
        raise ValueError(f"render_at_scale: scale must be in (0, 1], got {scale}")
    lm = np.asarray(landmarks, np.float64)
    if scale < 1:
        h, w = frame.shape[:2]
        nw, nh = max(2, round(w * scale)), max(2, round(h * scale))
        frame = reduce_lanczos(frame, (nw, nh))
        lm = (lm + 0.5) * [nw / w, nh / h] - 0.5
    if jpeg_quality is not None:
        ok, buf = cv2.imencode(
            ".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
        )
        frame = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return align_face(frame, lm, size)


def _ladders(
    cfg: SyntheticConfig,
    faces: list[dict],
    ident: np.ndarray,
    out: Path,
    log: Callable[[str], None],
) -> pd.DataFrame:
    """The resolution ladders of :class:`SyntheticConfig` (``ladder_rungs``); drawn from
    their own random stream, so the labelled set is the same with or without them."""
    from fnmatch import fnmatch

    rng = np.random.default_rng([cfg.seed, 1])
    (out / "ladders").mkdir(parents=True, exist_ok=True)
    rows = []
    for fi, f in enumerate(faces):
        name = Path(f["source"]).name
        lo = max(cfg.ladder_min_side / f["face_size"], 0.05)
        if lo >= 0.8 or any(fnmatch(name, pat) for pat in cfg.ladder_exclude):
            continue
        scales = [1.0] + sorted(
            np.exp(rng.uniform(np.log(lo), 0.0, cfg.ladder_rungs - 1)).tolist(), reverse=True
        )
        for k, sc in enumerate(scales):
            crop, m = render_at_scale(f["region"], f["region_landmarks"], sc, cfg.crop_size)
            rel = f"ladders/{fi:05d}_{k:02d}.png"
            cv2.imwrite(str(out / rel), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            rows.append(
                {
                    "path": rel,
                    "face_id": fi,
                    "rung": k,
                    "scale": float(sc),
                    "face_size": f["face_size"] * sc,
                    "zoom": matrix_zoom(m),
                    "identity": f"id{ident[fi]:03d}",
                    "source": f["source"],
                }
            )
    n = len({r["face_id"] for r in rows})
    log(f"resolution ladders: {n} faces, {len(rows)} crops")
    return pd.DataFrame(rows)


def resolution_curve(
    rec: DlibRecognizer,
    crops: Sequence[np.ndarray],
    zooms: Sequence[float],
    shapes: Sequence,
    descriptors: Sequence[np.ndarray],
    max_refs: int = 64,
) -> np.ndarray:
    """Descriptor distance a face loses when it is captured smaller: for each zoom of
    :data:`RESOLUTION_ZOOMS`, the median over full-detail clean crops (zoom <= 1: the face
    had at least the crop's pixels) of the distance between the crop and the crop reduced
    by that zoom and enlarged back (as :func:`face_iqa.faces.align.align_face` enlarges a small
    face). Made non-decreasing; 0 at zoom 1."""
    refs = [i for i, z in enumerate(zooms) if z <= 1.0][:max_refs]
    if not refs:
        raise ValueError("resolution_label: no clean face as large as the crop to measure with")
    d = np.zeros((len(refs), len(RESOLUTION_ZOOMS)))
    for r, i in enumerate(refs):
        h, w = crops[i].shape[:2]
        for k, z in enumerate(RESOLUTION_ZOOMS):
            if z <= 1.0:
                continue
            small = cv2.resize(
                crops[i],
                (max(4, round(w / z)), max(4, round(h / z))),
                interpolation=cv2.INTER_AREA,
            )
            up = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
            d[r, k] = np.linalg.norm(rec.descriptor(up, shapes[i]) - descriptors[i])
    return np.maximum.accumulate(np.median(d, axis=0))


def resolution_distance(zoom: float, curve: np.ndarray) -> float:
    """The distance of ``curve`` (see :func:`resolution_curve`) at ``zoom``, interpolated in
    log zoom; 0 at or below zoom 1, the last value beyond the last zoom."""
    z = np.log(max(float(zoom), 1.0))
    return float(np.interp(z, np.log(RESOLUTION_ZOOMS), curve))


def _cfg_dict(cfg: SyntheticConfig) -> dict:
    from dataclasses import asdict

    d = asdict(cfg)
    d = {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
    # the set depends on the list of degradations too: a new kind invalidates the cache
    d["degradations"] = list(DEGRADATIONS)
    if cfg.pose_floor <= 0:  # a set without pose labels is the set of before
        del d["pose_floor"], d["pose_full"]
    return d


def pose_factor(f: float, floor: float, full: float) -> float:
    """What a label keeps for a face of frontalness ``f`` (``SyntheticConfig.pose_floor``):
    1 at ``full`` and above, 0 at ``floor`` and below, linear between; 1 when ``floor`` is
    0 (off)."""
    if floor <= 0:
        return 1.0
    if not full > floor:
        raise ValueError(f"pose_full ({full}) must be above pose_floor ({floor})")
    return float(np.clip((f - floor) / (full - floor), 0.0, 1.0))
