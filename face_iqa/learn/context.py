"""Off-face crops as non-faces: what lies around a person's face, cropped as a face would be.

A face detector's false detections in real footage are mostly the person's own surroundings:
a print on the shirt, the hands, a badge on a lanyard, a collar, the wall behind. The clips'
own false detections are few and the drawn prints (:mod:`face_iqa.learn.prints`) are clean
graphics, so a model learns from them what a print looks like, not that a crop whose centre
holds no face is worth nothing. This set supplies that: for a face of a training clip, its
five landmarks are moved down onto the chest (1.5-2.6 face heights) or sideways onto the
shoulders and background (1.6-2.8 face widths), scaled by 0.8-1.8 as a detector's boxes on
clothing are often larger than the face, and the frame is aligned there exactly as a face is
(the same template and warp, the same camera, light and codec). Every other such torso crop
also gets a drawn print laid on the cloth (shaded by the cloth's light, then captured as the
frame was). Every one is labelled 0; a crop that falls more than 15 % outside the frame or
has any detected face's nose within (or near) it is redrawn (up to 8 times), so close-ups
give few.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from face_iqa.faces.align import align_face
from face_iqa.learn.prints import KINDS, draw_print

CONTEXT_FACE_ID = 9_500_000  # face ids of these crops start here (prints: 9,000,000)


def moved_landmarks(lm: np.ndarray, rng: np.random.Generator, down: bool) -> np.ndarray:
    """``lm`` (5, 2) moved off the face: onto the chest (``down``) or to a side, and scaled
    about the new centre by 0.8-1.8."""
    lm = np.asarray(lm, np.float64)
    eyes, mouth = lm[:2].mean(axis=0), lm[3:].mean(axis=0)
    height = 2.2 * max(np.linalg.norm(mouth - eyes), 1.0)  # about the face box's height
    width = 2.2 * max(np.linalg.norm(lm[1] - lm[0]), 1.0)
    if down:
        shift = np.array([rng.uniform(-0.4, 0.4) * width, rng.uniform(1.5, 2.6) * height])
    else:
        shift = np.array([rng.choice([-1, 1]) * rng.uniform(1.6, 2.8) * width, 0.0])
        shift[1] = rng.uniform(-0.3, 1.2) * height
    centre = lm.mean(axis=0) + shift
    return centre + (lm + shift - centre) * rng.uniform(0.8, 1.8)


def inside_share(m: np.ndarray, size: int, shape: tuple[int, ...]) -> float:
    """The share of the crop's footprint (a parallelogram in the frame) inside the frame,
    estimated on a 16 x 16 grid of crop points."""
    g = (np.arange(16) + 0.5) * size / 16
    pts = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    inv = cv2.invertAffineTransform(np.asarray(m, np.float64))
    p = pts @ inv[:, :2].T + inv[:, 2]
    h, w = shape[:2]
    return float(((p[:, 0] >= 0) & (p[:, 0] < w) & (p[:, 1] >= 0) & (p[:, 1] < h)).mean())


def worn_print(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A drawn print laid on the middle of ``crop`` (its ground dropped where it matches the
    print's own border colour), shaded by the crop's light and softened to its sharpness."""
    size = crop.shape[0]
    art = draw_print(KINDS[int(rng.integers(len(KINDS)))], rng, size)
    ground = np.median(np.concatenate([art[:4].reshape(-1, 3), art[-4:].reshape(-1, 3)]), 0)
    mask = (np.abs(art.astype(np.float32) - ground).sum(axis=2) > 40).astype(np.float32)
    scale = rng.uniform(0.5, 1.0)
    side = max(8, int(size * scale))
    art = cv2.resize(art, (side, side), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask, (side, side), interpolation=cv2.INTER_AREA)
    mask = cv2.GaussianBlur(mask, (0, 0), 1.5)[..., None]
    x0 = int((size - side) / 2 + rng.uniform(-0.1, 0.1) * size)
    y0 = int((size - side) / 2 + rng.uniform(-0.1, 0.1) * size)
    x0, y0 = int(np.clip(x0, 0, size - side)), int(np.clip(y0, 0, size - side))
    out = crop.astype(np.float32)
    patch = out[y0 : y0 + side, x0 : x0 + side]
    light = cv2.GaussianBlur(patch.mean(axis=2), (0, 0), side / 8)[..., None]
    shade = np.clip(light / max(float(light.mean()), 1.0), 0.5, 1.5)
    patch[:] = (1 - mask) * patch + mask * np.clip(art * shade * rng.uniform(0.6, 1.0), 0, 255)
    out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 1.2))
    ok, buf = cv2.imencode(
        ".jpg", out.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, int(rng.uniform(40, 95))]
    )
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if ok else out.astype(np.uint8)


def _frames(path: str, wanted: set[int]):
    """``(index, RGB frame)`` of the wanted frames of a video, read in order."""
    cap = cv2.VideoCapture(path)
    try:
        i, last = 0, max(wanted)
        while i <= last:
            ok, f = cap.read()
            if not ok:
                break
            if i in wanted:
                yield i, cv2.cvtColor(f, cv2.COLOR_BGR2RGB)
            i += 1
    finally:
        cap.release()


def build_context_set(
    footage_labels: str | Path,
    n: int,
    out_dir: str | Path,
    seed: int = 0,
    size: int = 224,
    log: Callable[[str], None] | None = None,
) -> Path:
    """At most ``n`` off-face crops (see the module): up to 3 around each clean face of a
    footage set (``labels.parquet`` of :func:`face_iqa.learn.footage.build_footage_set`:
    ``source``, ``frame_index``, ``identity``), then ``n`` of them drawn at random, under
    ``out_dir``: ``crops/`` and ``labels.parquet`` (``path, score`` 0, ``identity`` the
    clip's person, so a split by person keeps them beside that person's faces, ``source``
    ``context:torso|side|print``, ``face_id``, ``variant`` 0, ``degradation``
    ``nonface``). Reused when ``out_dir`` holds a set built with the same arguments."""
    from face_iqa.faces.detect import DetectorConfig, build_detector

    out = Path(out_dir)
    labels, stamp = out / "labels.parquet", out / "config.json"
    want = {"footage": str(footage_labels), "n": int(n), "seed": int(seed), "size": int(size)}
    if labels.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == want:
        if log is not None:
            log(f"context: reusing {labels}")
        return labels
    ft = pd.read_parquet(footage_labels)
    ft = ft[ft["degradation"] == "clean"].drop_duplicates(["source", "frame_index"])
    if ft.empty:
        raise ValueError(f"{footage_labels}: no clean faces to take the surroundings of")
    rng = np.random.default_rng(seed)
    pick, per_face = ft, 3  # close-ups leave little around the face: take all, then n
    detector = build_detector(DetectorConfig(device="cpu", max_side=1280))
    (out / "crops").mkdir(parents=True, exist_ok=True)
    rows = []
    for source, g in pick.groupby("source", sort=False):
        who = dict(zip(g["frame_index"].astype(int), g["identity"]))
        for fi, frame in _frames(str(source), set(who)):
            det = detector.detect([frame])[0]
            if not len(det.boxes):
                continue
            k = int(np.argmax(det.boxes[:, 2] - det.boxes[:, 0]))
            for _ in range(per_face):
                for _try in range(8):
                    down = bool(rng.random() < 0.6)
                    crop, m = align_face(frame, moved_landmarks(det.landmarks[k], rng, down), size)
                    noses = det.landmarks[:, 2] @ m[:, :2].T + m[:, 2]  # no face in sight
                    seen = ((noses > -0.15 * size) & (noses < 1.15 * size)).all(axis=1).any()
                    if not seen and inside_share(m, size, frame.shape) >= 0.85:
                        break
                else:
                    continue
                what = "torso" if down else "side"
                if down and rng.random() < 0.5:
                    crop, what = worn_print(crop, rng), "print"
                i = len(rows)
                rel = f"crops/context_{i:05d}.png"
                cv2.imwrite(str(out / rel), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
                rows.append(
                    {
                        "path": rel,
                        "score": 0.0,
                        "identity": who[fi],
                        "source": f"context:{what}",
                        "face_id": CONTEXT_FACE_ID + i,
                        "variant": 0,
                        "degradation": "nonface",
                    }
                )
    if not rows:
        raise ValueError(f"{footage_labels}: no face found again in its frames")
    table = pd.DataFrame(rows)
    if len(table) > n:
        drop = rng.permutation(len(table))[n:]
        for q in table["path"].iloc[drop]:
            (out / q).unlink()
        table = table.drop(table.index[drop]).reset_index(drop=True)
    table.to_parquet(labels, index=False)
    stamp.write_text(json.dumps(want))
    if log is not None:
        log(f"context: {len(table)} off-face crops around {len(pick)} faces in {out}")
    return labels
