"""The group MAximum Differentiation (gMAD) competition (Ma et al., TPAMI 2018), as the
HyperIQA paper uses it to compare two quality models.

Two models, each in turn the defender and the attacker. The defender's scores are cut into
``levels`` levels; in each, the faces the defender rates (nearly) alike are the ones nearest
the level's score (the ``band`` share of all faces, at least two). Among them the attacker
picks the pair it rates most apart: its best and its worst face. A pair the defender calls
equal and the attacker calls very different exposes one of them: people judge the pair in
the paper; here, where the faces carry a utility (a recognition label, or a face's
separation from other people among its own person's faces), recognition does. An attack
succeeds when the attacker's better face also has the higher utility; the model whose
attacks succeed more often (the one that wins more of the other's attacks) is the stronger.

Models are any per-face score: a checkpoint, the embedded model, or a simple measure
(Laplacian ``sharpness``, MTCNN's ``det_prob``, ``face_size``).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

__all__ = ["SIMPLE_MEASURES", "agreement", "gmad_pairs", "write_gmad_html"]

SIMPLE_MEASURES = ("sharpness", "det_prob", "face_size")


def _pairs_one_way(
    defender: np.ndarray, attacker: np.ndarray, levels: int, band: float
) -> list[dict]:
    n = len(defender)
    k = max(2, int(round(band * n)))
    order = np.argsort(defender, kind="stable")
    rows = []
    for lv in range(levels):
        centre = float(np.quantile(defender, (lv + 0.5) / levels))
        near = order[np.argsort(np.abs(defender[order] - centre), kind="stable")[:k]]
        hi = int(near[np.argmax(attacker[near])])
        lo = int(near[np.argmin(attacker[near])])
        if hi == lo:
            continue
        rows.append(
            {
                "level": lv,
                "defender_level": centre,
                "better": hi,
                "worse": lo,
                "defender_better": float(defender[hi]),
                "defender_worse": float(defender[lo]),
                "attacker_better": float(attacker[hi]),
                "attacker_worse": float(attacker[lo]),
            }
        )
    return rows


def gmad_pairs(
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    names: tuple[str, str] = ("A", "B"),
    levels: int = 6,
    band: float = 0.05,
) -> pd.DataFrame:
    """The gMAD pairs of two score vectors over the same faces (higher = better for both).

    One row per (defender, level): ``defender``, ``attacker``, ``level``, ``better`` and
    ``worse`` (face indices: the attacker's best and worst among the faces nearest the
    defender's level), and both models' scores of both faces. Non-finite scores take no part.
    """
    a = np.asarray(scores_a, np.float64)
    b = np.asarray(scores_b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"gmad: score vectors of one face set expected, got {a.shape}, {b.shape}")
    if levels < 1 or not 0 < band <= 1:
        raise ValueError(f"gmad: levels {levels} >= 1 and band {band} in (0, 1] expected")
    ok = np.flatnonzero(np.isfinite(a) & np.isfinite(b))
    if len(ok) < 2:
        raise ValueError("gmad: fewer than two faces with both scores")
    rows = []
    for (dn, d), (tn, t) in (((names[0], a), (names[1], b)), ((names[1], b), (names[0], a))):
        for r in _pairs_one_way(d[ok], t[ok], levels, band):
            r["better"], r["worse"] = int(ok[r["better"]]), int(ok[r["worse"]])
            rows.append({"defender": dn, "attacker": tn, **r})
    return pd.DataFrame(rows)


def agreement(pairs: pd.DataFrame, utility: np.ndarray) -> pd.DataFrame:
    """Per attacker: the share of its attacks where recognition agrees with it (the better
    face has the higher utility). Pairs with a missing utility or a tie are left out."""
    u = np.asarray(utility, np.float64)
    ub, uw = u[pairs["better"].to_numpy()], u[pairs["worse"].to_numpy()]
    judged = np.isfinite(ub) & np.isfinite(uw) & (ub != uw)
    p = pairs.assign(agrees=ub > uw, judged=judged)
    rows = []
    for name, g in p.groupby("attacker", sort=False):
        j = g[g["judged"]]
        rows.append(
            {
                "attacker": name,
                "defender": str(g["defender"].iloc[0]),
                "attacks": int(len(j)),
                "succeeded": int(j["agrees"].sum()),
                "success_rate": float(j["agrees"].mean()) if len(j) else np.nan,
            }
        )
    return pd.DataFrame(rows)


def _thumb(crop: np.ndarray, side: int = 128) -> str:
    img = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("gmad: cannot encode a thumbnail")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()


def write_gmad_html(
    pairs: pd.DataFrame,
    crops: list[np.ndarray],
    labels: list[str],
    path: str | Path,
    names: tuple[str, str],
    summary: pd.DataFrame | None = None,
) -> Path:
    """A self-contained page: every pair with both faces (inline PNG) and both models'
    scores on each face; the recognition summary on top when there is one."""
    a, b = names
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>gMAD</title><style>",
        "body{font:14px sans-serif;margin:20px;background:#fafafa}"
        ".pair{display:inline-block;margin:8px;padding:8px;border:1px solid #ccc;"
        "background:#fff;vertical-align:top}.face{display:inline-block;margin:4px;"
        "text-align:center}.face img{display:block;width:128px;height:128px}"
        ".better{border:3px solid #22aa22}.worse{border:3px solid #dd3333}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}",
        "</style></head><body>",
        f"<h1>gMAD: {html.escape(a)} against {html.escape(b)}</h1>",
        "<p>In each level the defender rates both faces (nearly) alike; the attacker rates "
        "the green-framed face best and the red-framed face worst of the faces at that "
        "level.</p>",
    ]
    if summary is not None and len(summary):
        parts.append(
            "<h2>Recognition's verdict</h2><table><tr><th>attacker</th><th>defender</th>"
            "<th>attacks judged</th><th>recognition agrees</th></tr>"
        )
        for r in summary.itertuples():
            parts.append(
                f"<tr><td>{html.escape(r.attacker)}</td><td>{html.escape(r.defender)}</td>"
                f"<td>{r.attacks}</td><td>{r.succeeded} ({r.success_rate:.0%})</td></tr>"
            )
        parts.append("</table>")
    for (dn, tn), g in pairs.groupby(["defender", "attacker"], sort=False):
        parts.append(f"<h2>{html.escape(tn)} attacks {html.escape(dn)}</h2>")
        for r in g.itertuples():
            parts.append(f"<div class='pair'><div>level {r.level + 1}</div>")
            for k, cls in ((r.better, "better"), (r.worse, "worse")):
                sa = r.defender_better if k == r.better else r.defender_worse
                sb = r.attacker_better if k == r.better else r.attacker_worse
                score_a, score_b = (sa, sb) if dn == a else (sb, sa)
                parts.append(
                    f"<div class='face'><img class='{cls}' src='{_thumb(crops[k])}' "
                    f"alt='{html.escape(labels[k])}' title='{html.escape(labels[k])}'>"
                    f"{html.escape(a)} {score_a:.3g}<br>{html.escape(b)} {score_b:.3g}</div>"
                )
            parts.append("</div>")
    parts.append("</body></html>")
    out = Path(path)
    out.write_text("\n".join(parts))
    return out
