"""Faces in low light: how much a model's score falls against how much the recogniser's
matching falls. Each face an ``eval-recognition --identities`` run chose (its
``faces.parquet``) is aligned again and copied at ``--severities`` of the ``low_light``
damage (the frame darker, the gain's noise, the camera's smoothing, the stream's
compression); every copy is labelled by its own matching as the photo labels are (the share
of the person's other undamaged faces it matches at the threshold of ``--fmr`` over the
undamaged faces) and scored by each model. Per severity: the mean label and each model's
mean score; over all crops: each model's SRCC with the labels.

    python -m bench.low_light --faces runs/eval/photos/faces.parquet --checkpoints A.pt B.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def low_light_set(
    faces: pd.DataFrame, severities: tuple[float, ...], fmr: float, seed: int, recognizer
) -> tuple[pd.DataFrame, np.ndarray]:
    """``(table, crops)``: one row per face and severity (0 = the face as it is) with its
    ``label``; the faces the recogniser finds no shape on are left out."""
    from face_iqa.faces.align import align_face
    from face_iqa.faces.photo_sets import pad_tight
    from face_iqa.images import load_image
    from face_iqa.learn.degrade import apply_degradation
    from face_iqa.learn.photos import label_photo_faces

    rng = np.random.default_rng(seed)
    rows, crops = [], []
    for n, r in enumerate(faces.itertuples(index=False)):
        img = pad_tight(load_image(r.path))
        crop = align_face(img, np.stack(r.landmarks).astype(np.float64), 224)[0]
        try:
            shape = recognizer.chip_shape(crop)
        except RuntimeError:
            continue
        for v, s in enumerate((0.0, *severities)):
            spec = {
                "components": [{"kind": "low_light", "severity": s}] if s else [],
                "seed": int(rng.integers(0, 2**31 - 1)),
            }
            img_s = apply_degradation(crop, spec)
            rows.append(
                {
                    "face_id": n,
                    "identity": r.identity,
                    "variant": v,
                    "severity": s,
                    "descriptor": recognizer.descriptor(img_s, shape),
                }
            )
            crops.append(img_s)
    both, _ = label_photo_faces(pd.DataFrame(rows), fmr, softness=0.05)
    t = both.drop(columns=["descriptor", "match", "variant"]).rename(
        columns={"face_id": "face", "score": "label"}
    )
    keep = np.isfinite(t["label"]).to_numpy()  # people with one face have no partner
    return t[keep].reset_index(drop=True), np.stack(crops)[keep]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=Path, required=True, help="an eval-recognition faces.parquet")
    ap.add_argument("--checkpoints", nargs="+", default=[None], help="default: the shipped model")
    ap.add_argument("--severities", type=float, nargs="+", default=[0.3, 0.6, 0.9])
    ap.add_argument("--fmr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    from scipy.stats import spearmanr

    from face_iqa.faces.recognizer import DlibRecognizer
    from face_iqa.model.scorer import ScorerConfig, build_scorer

    faces = pd.read_parquet(a.faces)
    faces = faces[faces["ok"]].reset_index(drop=True)
    table, crops = low_light_set(faces, tuple(a.severities), a.fmr, a.seed, DlibRecognizer())
    names = []
    for ck in a.checkpoints:
        name = "shipped" if ck is None else str(ck)
        table[name] = build_scorer(ScorerConfig(checkpoint=ck, device="cpu"))(crops)
        names.append(name)
    print(f"{table['face'].nunique()} faces of {table['identity'].nunique()} people")
    print(table.groupby("severity")[["label", *names]].mean().round(1).to_string())
    for name in names:
        print(f"SRCC with the labels, {name}: {spearmanr(table['label'], table[name])[0]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
