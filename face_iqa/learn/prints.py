"""Drawn face-like graphics as non-faces: the prints a face detector takes for faces.

A face detector fires on anything with two dark blobs over a third: a skull or a smiley
printed on a shirt, a cartoon on a poster, a mask, an emoji on a mug. Such a detection has no
recognition utility at all, and real footage holds too few of them to teach that (a clip has
one shirt). So the training set gets them drawn: each graphic is laid on the aligned crop's
5-point template (its eyes where a face's eyes would be, as the detector and the alignment
would put them), on a fabric-like ground, in print colours, then captured as a face would
be (blurred, reduced, JPEG-compressed). Every one is labelled 0.

Kinds: ``skull`` (a pale head with dark eye sockets, nose hole and teeth), ``smiley``
(a disc with dot eyes and an arc mouth), ``cartoon`` (an outlined face with eyes, brows,
nose and mouth) and ``blobs`` (three or four shapes where eyes and mouth would be, as on a
socket, a bag or a bark); half of them with lettering above, as shirts have.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from face_iqa.faces.align import face_template

KINDS = ("skull", "smiley", "cartoon", "blobs")
PRINT_FACE_ID = 9_000_000  # face ids of the prints start here (other sets' ids stay below)


def _colour(rng: np.random.Generator, light: bool, grey: bool) -> tuple[int, int, int]:
    v = rng.uniform(170, 255) if light else rng.uniform(0, 80)
    if grey:
        return (int(v),) * 3
    c = np.clip(v + rng.normal(0, 45, 3), 0, 255)
    return tuple(int(x) for x in c)


def _ground(rng: np.random.Generator, size: int, light: bool, grey: bool) -> np.ndarray:
    """A fabric-like ground: one colour, noise, sometimes stripes or checks."""
    img = np.empty((size, size, 3), np.float32)
    img[:] = _colour(rng, light, grey)
    kind = rng.integers(0, 3)
    if kind:
        period = rng.uniform(8, 40)
        x = np.arange(size)[None, :] + (np.arange(size)[:, None] if kind == 2 else 0)
        img += (np.sin(2 * np.pi * x / period)[..., None] * rng.uniform(5, 30)).astype(np.float32)
    img += rng.normal(0, rng.uniform(2, 12), img.shape).astype(np.float32)
    return img


def draw_print(kind: str, rng: np.random.Generator, size: int = 224) -> np.ndarray:
    """One drawn graphic of ``kind`` on the ``size`` crop's face template, RGB ``uint8``,
    before any capture damage."""
    if kind not in KINDS:
        raise ValueError(f"print kind {kind!r}: expected one of {KINDS}")
    grey = bool(rng.random() < 0.5)
    dark_ground = bool(rng.random() < 0.6)
    img = _ground(rng, size, light=not dark_ground, grey=grey)
    s = rng.uniform(0.85, 1.15) * size / 224.0
    t = face_template(size).astype(np.float64) + rng.normal(0, 3, (5, 2)) * size / 224.0
    le, re, nose, ml, mr = (tuple(int(v) for v in p) for p in t)
    mid = ((le[0] + re[0]) // 2, (le[1] + nose[1]) // 2)
    mouth = ((ml[0] + mr[0]) // 2, (ml[1] + mr[1]) // 2)
    fill = _colour(rng, light=dark_ground, grey=grey)
    ink = _colour(rng, light=not dark_ground, grey=grey)
    lw = max(1, int(rng.uniform(2, 6) * s))

    def r(v: float) -> int:
        return max(1, int(v * s))

    if kind == "skull":
        cv2.ellipse(img, (mid[0], mid[1] - r(10)), (r(78), r(92)), 0, 0, 360, fill, -1)
        cv2.ellipse(img, (mouth[0], mouth[1]), (r(48), r(30)), 0, 0, 360, fill, -1)
        for e in (le, re):
            cv2.ellipse(img, e, (r(22), r(19)), rng.uniform(-20, 20), 0, 360, ink, -1)
        tri = np.array(
            [
                [nose[0], nose[1] - r(14)],
                [nose[0] - r(10), nose[1] + r(10)],
                [nose[0] + r(10), nose[1] + r(10)],
            ],
            np.int32,
        )
        cv2.fillPoly(img, [tri], ink)
        x0, x1 = ml[0] - r(6), mr[0] + r(6)
        cv2.rectangle(img, (x0, mouth[1] - r(10)), (x1, mouth[1] + r(12)), ink, lw)
        for x in np.linspace(x0, x1, int(rng.integers(4, 9))):
            cv2.line(img, (int(x), mouth[1] - r(10)), (int(x), mouth[1] + r(12)), ink, lw)
    elif kind == "smiley":
        cv2.circle(img, mid, r(100), fill, -1)
        cv2.circle(img, mid, r(100), ink, lw)
        for e in (le, re):
            cv2.ellipse(img, e, (r(9), r(16)), 0, 0, 360, ink, -1)
        cv2.ellipse(img, (mouth[0], mouth[1] - r(25)), (r(45), r(30)), 0, 20, 160, ink, lw + 2)
    elif kind == "cartoon":
        cv2.ellipse(img, mid, (r(80), r(105)), 0, 0, 360, fill, -1)
        cv2.ellipse(img, mid, (r(80), r(105)), 0, 0, 360, ink, lw)
        for e in (le, re):
            cv2.ellipse(img, e, (r(16), r(10)), 0, 0, 360, (255, 255, 255), -1)
            cv2.circle(img, e, r(6), ink, -1)
            cv2.line(img, (e[0] - r(16), e[1] - r(20)), (e[0] + r(16), e[1] - r(24)), ink, lw)
        cv2.line(img, (nose[0], nose[1] - r(15)), (nose[0] - r(6), nose[1] + r(6)), ink, lw)
        cv2.ellipse(img, (mouth[0], mouth[1] - r(8)), (r(30), r(14)), 0, 10, 170, ink, lw)
    else:  # blobs
        shapes = [le, re, mouth] + ([nose] if rng.random() < 0.5 else [])
        for p in shapes:
            a, b = r(rng.uniform(8, 24)), r(rng.uniform(8, 24))
            cv2.ellipse(img, p, (a, b), rng.uniform(0, 180), 0, 360, ink, -1)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:  # a band's or a brand's lettering over the graphic
        text = "".join(chr(int(c)) for c in rng.integers(65, 91, int(rng.integers(3, 9))))
        org = (int(rng.uniform(0, size * 0.3)), int(rng.uniform(size * 0.08, size * 0.25)))
        scale = rng.uniform(0.8, 1.6) * s
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_TRIPLEX, scale, fill, lw)
    return img


def capture(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The graphic as a camera and a video codec deliver it: on folded cloth (a smooth
    warp), under uneven light, blurred, seen at 40-224 px (reduced and brought back),
    JPEG-compressed."""
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    amp, per = rng.uniform(0, 6), rng.uniform(60, 200)
    ph = rng.uniform(0, 2 * np.pi, 2)
    mx = xx + amp * np.sin(2 * np.pi * yy / per + ph[0])
    my = yy + amp * np.sin(2 * np.pi * xx / per + ph[1])
    out = cv2.remap(
        img,
        mx.astype(np.float32),
        my.astype(np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    )
    g = rng.uniform(-1, 1, 2) * rng.uniform(0, 0.4)
    light = 1.0 + g[0] * (xx / size - 0.5) + g[1] * (yy / size - 0.5)
    out = np.clip(out * (light[..., None] * rng.uniform(0.6, 1.1)), 0, 255).astype(np.uint8)
    out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 2.0))
    side = int(rng.uniform(40, size))
    out = cv2.resize(out, (side, side), interpolation=cv2.INTER_AREA)
    out = cv2.resize(out, (size, size), interpolation=cv2.INTER_LINEAR)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.uniform(30, 95))])
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if ok else out


def build_print_set(
    n: int,
    out_dir: str | Path,
    seed: int = 0,
    size: int = 224,
    log: Callable[[str], None] | None = None,
) -> Path:
    """``n`` drawn non-faces (kinds in turn) under ``out_dir`` (``crops/``, ``labels.parquet``:
    ``path, score`` 0, ``identity`` (20 groups, so a split can hold some out), ``source``
    ``print:KIND``, ``face_id``, ``variant`` 0, ``degradation`` ``nonface``); reused when
    ``out_dir`` holds a set of the same ``n``, ``seed`` and ``size``."""
    out = Path(out_dir)
    labels, stamp = out / "labels.parquet", out / "config.json"
    want = {"n": int(n), "seed": int(seed), "size": int(size)}
    if labels.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == want:
        if log is not None:
            log(f"prints: reusing {labels}")
        return labels
    (out / "crops").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        img = capture(draw_print(kind, rng, size), rng)
        rel = f"crops/print_{i:05d}.png"
        cv2.imwrite(str(out / rel), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        rows.append(
            {
                "path": rel,
                "score": 0.0,
                "identity": f"print:{i % 20}",
                "source": f"print:{kind}",
                "face_id": PRINT_FACE_ID + i,
                "variant": 0,
                "degradation": "nonface",
            }
        )
    pd.DataFrame(rows).to_parquet(labels, index=False)
    stamp.write_text(json.dumps(want))
    if log is not None:
        log(f"prints: {n} drawn non-faces in {out}")
    return labels
