"""``faceiqa report DIR``: one self-contained HTML page for a run's output.

Counts, the quality histogram with the threshold, quality over time for each video, contact
sheets of kept and rejected faces (thumbnails cut from the sources with the boxes in
``faces.parquet``, with score and reason) and, when the run has tracks, one row of
thumbnails per track. Pictures are inline (SVG, base64 PNG): the file can be mailed alone.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from face_iqa.images import ImageError, load_image
from workers.decode import is_video

__all__ = ["write_report"]

THUMB = 72


def _thumbs(faces: pd.DataFrame) -> dict[tuple[str, int, int], str]:
    """Data URIs of the face thumbnails of ``faces`` (decoding each source once)."""
    want: dict[str, dict[int, list[tuple[int, list[float]]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in faces.itertuples():
        want[r.source][int(r.frame_index)].append((int(r.face_index), list(r.box)))
    out = {}

    def cut(img: np.ndarray, src: str, idx: int) -> None:
        for k, box in want[src][idx]:
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            m = int(0.15 * max(x2 - x1, y2 - y1))
            h, w = img.shape[:2]
            c = img[max(0, y1 - m) : min(h, y2 + m), max(0, x1 - m) : min(w, x2 + m)]
            if c.size == 0:
                continue
            c = cv2.resize(c, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".png", cv2.cvtColor(c, cv2.COLOR_RGB2BGR))
            if ok:
                out[(src, idx, k)] = "data:image/png;base64," + base64.b64encode(buf).decode()

    for src, frames in want.items():
        if not is_video(src):
            try:
                cut(load_image(src), src, 0)
            except ImageError:
                pass
            continue
        cap = cv2.VideoCapture(src)
        i, last = 0, max(frames)
        while i <= last and cap.grab():
            if i in frames:
                ok, bgr = cap.retrieve()
                if ok:
                    cut(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), src, i)
            i += 1
        cap.release()
    return out


def _histogram_svg(q: np.ndarray, threshold: float | None) -> str:
    w, h, m = 560, 220, 30
    counts, edges = np.histogram(q, bins=25, range=(0, 100))
    top = max(int(counts.max()), 1)
    bw = (w - 2 * m) / len(counts)
    bars = "".join(
        f'<rect x="{m + i * bw:.1f}" y="{h - m - c / top * (h - 2 * m):.1f}" '
        f'width="{bw - 1:.1f}" height="{c / top * (h - 2 * m):.1f}" fill="#4a7bd0"/>'
        for i, c in enumerate(counts)
    )
    line = ""
    if threshold is not None:
        x = m + threshold / 100 * (w - 2 * m)
        line = (
            f'<line id="threshold" x1="{x:.1f}" y1="{m - 10}" x2="{x:.1f}" y2="{h - m}" '
            f'stroke="#d03030" stroke-width="2"/><text x="{x + 4:.1f}" y="{m}" font-size="12" '
            f'fill="#d03030">min_quality {threshold:g}</text>'
        )
    ticks = "".join(
        f'<text x="{m + v / 100 * (w - 2 * m) - 6:.1f}" y="{h - 10}" font-size="11">{v}</text>'
        for v in (0, 25, 50, 75, 100)
    )
    return (
        f'<svg id="histogram" width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg">'
        f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="#333"/>'
        f"{bars}{line}{ticks}</svg>"
    )


def _timeline_svg(frames: pd.DataFrame, threshold: float | None) -> str:
    w, h, m = 560, 160, 30
    f = frames.sort_values("frame_index")
    x = f["frame_index"].to_numpy(np.float64)
    y = f["best_quality"].to_numpy(np.float64)
    span = max(x.max() - x.min(), 1.0) if len(x) else 1.0

    def px(xv: float, yv: float) -> str:
        return f"{m + (xv - x.min()) / span * (w - 2 * m):.1f},{h - m - yv / 100 * (h - 2 * m):.1f}"

    pts = " ".join(px(a, b) for a, b in zip(x, y) if np.isfinite(b))
    kept = "".join(
        f'<circle cx="{px(a, b).split(",")[0]}" cy="{px(a, b).split(",")[1]}" r="2" fill="#2a2"/>'
        for a, b, k in zip(x, y, f["keep"])
        if k and np.isfinite(b)
    )
    thr = ""
    if threshold is not None:
        yy = h - m - threshold / 100 * (h - 2 * m)
        thr = f'<line x1="{m}" y1="{yy:.1f}" x2="{w - m}" y2="{yy:.1f}" stroke="#d03030" stroke-dasharray="4"/>'
    return (
        f'<svg class="timeline" width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg">'
        f'<rect x="{m}" y="{m}" width="{w - 2 * m}" height="{h - 2 * m}" fill="none" stroke="#ccc"/>'
        f'{thr}<polyline points="{pts}" fill="none" stroke="#4a7bd0" stroke-width="1.5"/>{kept}'
        f'<text x="{m}" y="{h - 8}" font-size="11">frame {int(x.min()) if len(x) else 0}'
        f'</text><text x="{w - m - 60}" y="{h - 8}" font-size="11">frame '
        f"{int(x.max()) if len(x) else 0}</text></svg>"
    )


def _sheet(rows: pd.DataFrame, thumbs: dict, css: str) -> str:
    cells = []
    for r in rows.itertuples():
        uri = thumbs.get((r.source, int(r.frame_index), int(r.face_index)))
        if uri is None:
            continue
        tip = html.escape(f"{Path(r.source).name} frame {r.frame_index}: {r.reason}")
        short = str(r.reason)
        if short.startswith("duplicate of "):  # the file's name, not its folders
            short = "duplicate of " + Path(short[len("duplicate of ") :].split(" (")[0]).name
        cells.append(
            f'<figure class="{css}" title="{tip}"><img class="thumb" src="{uri}" '
            f'width="{THUMB}" height="{THUMB}"><figcaption>{r.quality:.0f}<br>'
            f"<small>{html.escape(short[:28])}</small></figcaption></figure>"
        )
    return '<div class="sheet">' + "".join(cells) + "</div>"


def _pick(df: pd.DataFrame, n: int) -> pd.DataFrame:
    if len(df) <= n:
        return df
    return df.iloc[np.linspace(0, len(df) - 1, n).round().astype(int)]


def _identity_rows(ok: pd.DataFrame, people: int = 40) -> dict[str, pd.DataFrame]:
    """Per identity (people with removed faces first, at most ``people``): its 4 kept faces
    nearest its centre, then up to 8 removed faces (another person and copies first)."""
    if "identity" not in ok or not (ok["identity"].astype(str) != "").any():
        return {}
    f = ok[ok["identity"].astype(str) != ""]
    gone = f.groupby("identity")["keep"].apply(lambda k: int((~k).sum()))
    order = gone.sort_values(ascending=False, kind="stable").index[:people]
    out = {}
    for ident in order:
        g = f[f["identity"] == ident]
        near = g[g["keep"]].sort_values("identity_distance").head(4)
        rank = (
            g.loc[~g["keep"], "reason"]
            .astype(str)
            .map(
                lambda r: (
                    0 if r.startswith("another person") else 1 if r.startswith("duplicate") else 2
                )
            )
        )
        removed = g[~g["keep"]].assign(_r=rank).sort_values("_r", kind="stable").head(8)
        out[str(ident)] = pd.concat([near, removed.drop(columns="_r")])
    return out


def write_report(
    run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, max_thumbs: int = 60
) -> Path:
    """Write ``report.html`` for the run in ``run_dir`` (or to ``out``); returns its path."""
    d = Path(run_dir)
    for name in ("frames.parquet", "faces.parquet", "summary.json"):
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d / name}: not found (is {d} a faceiqa run folder?)")
    frames = pd.read_parquet(d / "frames.parquet")
    faces = pd.read_parquet(d / "faces.parquet")
    summary = json.loads((d / "summary.json").read_text())
    threshold = summary.get("config", {}).get("threshold", {}).get("min_quality")
    ok = faces[(faces["status"] == "ok") & (faces["face_index"] >= 0)]
    ok = ok.sort_values("quality", ascending=False)
    kept = _pick(ok[ok["keep"]], max_thumbs)
    rejected = _pick(ok[~ok["keep"]], max_thumbs)
    tracks = pd.read_parquet(d / "tracks.parquet") if (d / "tracks.parquet").is_file() else None
    track_rows = pd.DataFrame()
    if tracks is not None and len(tracks) and "track_id" in ok:
        per = [
            _pick(g.sort_values("frame_index"), 10)
            for _, g in ok[ok["track_id"] != ""].groupby("track_id", sort=True)
        ]
        track_rows = pd.concat(per) if per else track_rows
    ident_rows = _identity_rows(ok)
    thumbs = _thumbs(
        pd.concat([kept, rejected, track_rows, *ident_rows.values()]).drop_duplicates(
            ["source", "frame_index", "face_index"]
        )
    )

    c = summary.get("counts", {})
    counts = "".join(
        f"<tr><th>{html.escape(k.replace('_', ' '))}</th><td>{v}</td></tr>" for k, v in c.items()
    )
    reasons = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>"
        for k, v in summary.get("reasons", {}).items()
    )
    timelines = "".join(
        f"<h3>{html.escape(Path(src).name)}</h3>{_timeline_svg(g, threshold)}"
        for src, g in frames[frames["frame_index"] >= 0].groupby("source", sort=True)
        if is_video(src) and len(g) > 1
    )
    track_html = ""
    if len(track_rows):
        parts = []
        for tid, g in track_rows.groupby("track_id", sort=True):
            parts.append(
                f'<div class="track"><h4>{html.escape(tid)}</h4>{_sheet(g, thumbs, "t")}</div>'
            )
        track_html = "<h2>Tracks</h2>" + "".join(parts)
    ident_html = ""
    if ident_rows:
        parts = []
        for ident, g in ident_rows.items():
            near, gone = g[g["keep"]], g[~g["keep"]]
            parts.append(
                f'<div class="identity"><h4>{html.escape(ident)}</h4>'
                f"{_sheet(near, thumbs, 'kept')}{_sheet(gone, thumbs, 'rejected')}</div>"
            )
        ident_html = (
            '<h2 id="identities">Identities</h2><p>Per person: the kept faces nearest the '
            "person's centre (green), then the removed ones with their reasons (red); people "
            "with removals first.</p>" + "".join(parts)
        )
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>faceiqa report: {html.escape(d.name)}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; }} th, td {{ padding: 2px 10px; text-align: left; }}
.sheet {{ display: flex; flex-wrap: wrap; gap: 6px; }}
figure {{ margin: 0; width: {THUMB}px; font-size: 11px; text-align: center; }}
figure.kept img {{ outline: 3px solid #2a2; }} figure.rejected img {{ outline: 3px solid #d33; }}
</style></head><body>
<h1>faceiqa report</h1>
<p>{html.escape(str(summary.get("out", d)))}; model sha256 {html.escape(str(summary.get("model", {}).get("sha256", ""))[:12])}</p>
<h2>Counts</h2><table id="counts">{counts}</table>
<h2>Why frames were rejected</h2><table>{reasons}</table>
<h2>Quality of all faces</h2>{_histogram_svg(ok["quality"].to_numpy(np.float64), threshold)}
<h2>Quality over time</h2>{timelines or "<p>(no videos)</p>"}
<h2>Kept faces ({int(ok["keep"].sum())}, best first)</h2><div id="kept">{_sheet(kept, thumbs, "kept")}</div>
<h2>Rejected faces ({int((~ok["keep"]).sum())}, best first)</h2><div id="rejected">{_sheet(rejected, thumbs, "rejected")}</div>
{track_html}
{ident_html}
</body></html>
"""
    path = Path(out) if out else d / "report.html"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
