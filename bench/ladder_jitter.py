"""How much of a resolution ladder's order is alignment noise: the main face of each rung
(obama-240p/480p/720p/1080p.jpg) scored as detected, then with its five landmarks moved by
Gaussian noise of ``--jitter`` of the face's box side, ``--draws`` times; mean and standard
deviation per rung and model.

    python -m bench.ladder_jitter --images ../data/images --checkpoints A.pt B.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

RUNGS = ("obama-240p.jpg", "obama-480p.jpg", "obama-720p.jpg", "obama-1080p.jpg")


def jittered_crops(img: np.ndarray, detector, jitter: float, draws: int, seed: int) -> np.ndarray:
    """The main (widest) face's aligned crop as detected, then ``draws`` crops with its
    landmarks moved by noise of ``jitter`` times its box side."""
    from face_iqa.faces.align import align_face

    d = detector.detect([img])[0]
    k = int(np.argmax(d.boxes[:, 2] - d.boxes[:, 0]))
    lm, side = np.asarray(d.landmarks[k], float), float(d.boxes[k][2] - d.boxes[k][0])
    rng = np.random.default_rng(seed)
    moved = [lm + rng.normal(0.0, jitter * side, lm.shape) for _ in range(draws)]
    return np.stack([align_face(img, p, 224)[0] for p in [lm, *moved]])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, required=True, help="the folder of the four rungs")
    ap.add_argument("--checkpoints", nargs="+", default=[None], help="default: the shipped model")
    ap.add_argument("--jitter", type=float, default=0.01)
    ap.add_argument("--draws", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    from face_iqa.faces.detect import DetectorConfig, build_detector
    from face_iqa.images import load_image
    from face_iqa.model.scorer import ScorerConfig, build_scorer

    det = build_detector(DetectorConfig(device="cpu"))
    crops = {
        n: jittered_crops(load_image(a.images / n), det, a.jitter, a.draws, a.seed) for n in RUNGS
    }
    for ck in a.checkpoints:
        scorer = build_scorer(ScorerConfig(checkpoint=ck, device="cpu"))
        cells = []
        for n, c in crops.items():
            q = scorer(c)
            cells.append(
                f"{n.split('-')[1][:-4]} {q[0]:.1f} ({q[1:].mean():.1f} +- {q[1:].std():.1f})"
            )
        print(f"{ck or 'shipped'}: " + ", ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
