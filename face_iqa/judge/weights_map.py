"""Where the hyper network puts each face: the self-adaptive part of HyperIQA made visible.

For every face, the weights the hyper network generates for the target network's first
layer (``target_fc[0] x target_in`` numbers, 112 x 224 for the default model) are reduced
to at most 50 dimensions by PCA and embedded in 2-D by t-SNE (scikit-learn), then plotted
twice: coloured by person (or photo) and by the model's quality score.

The HyperIQA paper argues that the generated weights follow the image's content, not its
quality. The numbers printed test that on faces: leave-one-out nearest-neighbour accuracy
of the person in weight space (the PCA space) against the same in score space (the 1-D
score), and silhouettes of the weight space grouped by person and by quality level
(score quintiles). The claim holds when persons are found far better from the weights than
from the score, and the weights cluster by person more than by quality.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

__all__ = ["generated_weights", "nn_accuracy", "weights_map"]


@torch.no_grad()
def generated_weights(
    crops: list[np.ndarray], checkpoint: str | None = None, device: str = "auto", batch: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """(first-layer target weights flattened, N x out*in; scores, N) of aligned crops."""
    from face_iqa.faces.detect import resolve_device
    from face_iqa.model.checkpoint import build_model
    from face_iqa.model.hyperiqa import target_forward
    from face_iqa.model.scorer import default_checkpoint

    dev = resolve_device(device)
    source = checkpoint or default_checkpoint()
    model, card = build_model(source, device=dev)
    if card.arch.head != "hyper":
        raise ValueError(
            f"{source}: head {card.arch.head!r} generates no weights; the weight map needs "
            "the hyper network"
        )
    model = model.float().eval()
    mean = torch.tensor(card.mean).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(card.std).view(1, 3, 1, 1) * 255.0
    size = card.input_size
    ws, qs = [], []
    for i in range(0, len(crops), batch):
        chunk = [
            c if c.shape[:2] == (size, size) else cv2.resize(c, (size, size), cv2.INTER_AREA)
            for c in crops[i : i + batch]
        ]
        x = torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2).float()
        x = ((x - mean) / std).to(dev)
        vec, params = model.forward_parts(x)
        ws.append(params.weights[0].flatten(1).float().cpu().numpy())
        qs.append(target_forward(vec, params).float().cpu().numpy())
    return np.concatenate(ws), np.concatenate(qs)


def nn_accuracy(x: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out 1-nearest-neighbour accuracy of ``labels`` in the space of ``x``
    (N x D, or N for one dimension)."""
    x = np.asarray(x, np.float64)
    x = x.reshape(len(x), -1)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    labels = np.asarray(labels)
    return float((labels[np.argmin(d, axis=1)] == labels).mean())


def _palette(k: int) -> list[tuple[int, int, int]]:
    hsv = np.stack(
        [np.linspace(0, 179, k, endpoint=False), np.full(k, 200), np.full(k, 220)], axis=1
    ).astype(np.uint8)[None]
    return [tuple(int(v) for v in c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0]]


def _scatter(xy: np.ndarray, colours: list[tuple[int, int, int]], title: str, path: Path):
    side, pad = 800, 40
    img = np.full((side + 2 * pad, side + 2 * pad, 3), 255, np.uint8)
    lo, hi = xy.min(0), xy.max(0)
    p = pad + (xy - lo) / np.maximum(hi - lo, 1e-9) * side
    for (x, y), c in zip(p, colours):
        cv2.circle(img, (int(x), int(y)), 5, c, -1, cv2.LINE_AA)
    cv2.putText(img, title, (pad, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.imwrite(str(path), img)
    return path


def weights_map(
    faces: pd.DataFrame,
    crops: list[np.ndarray],
    out: str | Path,
    checkpoint: str | None = None,
    device: str = "auto",
    seed: int = 0,
) -> dict:
    """Write ``weights_map_person.png``, ``weights_map_quality.png`` and
    ``weights_map.csv`` (2-D coordinates, person, score) under ``out``; return the numbers
    (and the lines printed for them). Persons are ``faces['identity']`` where present
    (faces with an empty one are plotted grey and left out of the person figures), else
    the source file."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.metrics import silhouette_score

    out = Path(out)
    n = len(crops)
    if n < 5:
        raise ValueError(f"weights-map: {n} faces; at least 5 needed")
    person = (
        faces["identity"].astype(str).to_numpy()
        if "identity" in faces.columns
        else np.array([Path(s).stem for s in faces["source"]])
    )
    w, q = generated_weights(crops, checkpoint, device)
    pcs = PCA(n_components=min(50, n - 1, w.shape[1]), random_state=seed).fit_transform(w)
    xy = TSNE(
        n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed
    ).fit_transform(pcs)
    level = np.searchsorted(np.quantile(q, [0.2, 0.4, 0.6, 0.8]), q)
    known = person != ""
    # persons with one face cannot be found again: they take no part in the person figures
    counts = pd.Series(person[known]).value_counts()
    repeated = known & (pd.Series(person).map(counts).fillna(0).to_numpy() > 1)
    if len(set(person[repeated])) < 2:
        raise ValueError("weights-map: needs at least two persons with two faces or more")
    res = {"faces": n, "persons": int(len(set(person[repeated])))}
    res["nn_person_weights"] = nn_accuracy(pcs[repeated], person[repeated])
    res["nn_person_score"] = nn_accuracy(q[repeated], person[repeated])
    res["silhouette_person"] = float(silhouette_score(pcs[repeated], person[repeated]))
    res["silhouette_quality"] = float(silhouette_score(pcs, level))
    names = sorted(set(person[known]))
    pal = dict(zip(names, _palette(len(names))), **{"": (170, 170, 170)})
    _scatter(
        xy, [pal[p] for p in person], "generated weights, by person", out / "weights_map_person.png"
    )
    ramp = cv2.applyColorMap(
        np.clip((q - q.min()) / max(np.ptp(q), 1e-9) * 255, 0, 255).astype(np.uint8)[:, None],
        cv2.COLORMAP_VIRIDIS,
    )[:, 0]
    _scatter(
        xy,
        [tuple(int(v) for v in c) for c in ramp],
        "generated weights, by quality (dark low, yellow high)",
        out / "weights_map_quality.png",
    )
    pd.DataFrame(
        {"face": faces["face"], "person": person, "score": q, "x": xy[:, 0], "y": xy[:, 1]}
    ).to_csv(out / "weights_map.csv", index=False)
    holds = (
        res["nn_person_weights"] > res["nn_person_score"]
        and res["silhouette_person"] > res["silhouette_quality"]
    )
    res["lines"] = [
        f"{n} faces; {int(repeated.sum())} compared (those of the {res['persons']} persons "
        "with two faces or more)",
        f"  nearest-neighbour person accuracy: generated weights {res['nn_person_weights']:.1%}, "
        f"quality score {res['nn_person_score']:.1%}",
        f"  silhouette of the weights by person {res['silhouette_person']:.3f}, by quality "
        f"quintile {res['silhouette_quality']:.3f}",
        f"  content, not quality, places the weights: {'yes' if holds else 'no'}",
        f"wrote {out / 'weights_map_person.png'}, {out / 'weights_map_quality.png'}, "
        f"{out / 'weights_map.csv'}",
    ]
    res["holds"] = bool(holds)
    return res
