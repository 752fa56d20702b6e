"""Dataset cleaning against known rot: people of an identity photo set (a folder each), with
seeded rot injected, cleaned by ``faceiqa run --identity-from parent`` and, on the same
folder, by the peers users reach for; precision and recall per kind of rot.

    python -m bench.clean_bench --photos-csv ../data/photos_wild/identities.csv \\
        --people 60 --out runs/clean_bench

Rot (about ``--rate`` of the photos each, seeded): **wrong** (a photo moved into another
person's folder), **duplicate** (a copy of a photo beside it: rescaled 0.5-0.9, a crop of up
to 4 % a side, JPEG 60-90), **degraded** (a photo replaced by a badly damaged version: strong
blur, strong noise or near darkness). Every other photo is **clean**.

Peers (the ``bench`` extra): cleanvision (``blurry``/``dark`` as unusable, ``near_duplicates``
as duplicates: every member of a set but its first), imagededup PHash (its files to remove as
duplicates), and a plain baseline for the wrong person (each photo's dlib distance, largest
face, to its folder's mean, above 0.6). imagededup's CNN downloads its weights at run time,
which this machine cannot: it is not run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

KINDS = ("wrong", "duplicate", "degraded")


def build(
    photos_csv: Path, people: int, set_name: str, rate: float, seed: int, out: Path, half: str
):
    """The rotted folder (``out/data/PERSON/FILE``) and its truth table. ``half`` (``a`` or
    ``b``) takes the people from one of two fixed, disjoint halves of the eligible people, so
    that thresholds chosen on one half are measured on the other."""
    rng = np.random.default_rng(seed)
    t = pd.read_csv(photos_csv)
    t = t[t["set"] == set_name] if set_name else t
    ids = sorted(i for i, g in t.groupby("identity") if len(g) >= 6)
    ids = list(np.random.default_rng(12345).permutation(ids))
    ids = ids[: len(ids) // 2] if half == "a" else ids[len(ids) // 2 :]
    ids = sorted(rng.choice(ids, size=min(people, len(ids)), replace=False).tolist())
    data = out / "data"
    shutil.rmtree(data, ignore_errors=True)
    rows = []
    for i in ids:
        (data / i).mkdir(parents=True)
        for f in t.loc[t["identity"] == i, "file"]:
            dst = data / i / Path(f).name
            shutil.copy(photos_csv.parent / f, dst)
            rows.append({"path": dst, "identity": i, "truth": "clean", "origin": i, "file": f})
    truth = pd.DataFrame(rows)
    n = len(truth)
    # each person keeps its first 3 photos untouched, so its majority stays
    order = truth.groupby("identity").cumcount()
    pool = list(rng.permutation(np.flatnonzero(order >= 3)))
    k = max(1, round(rate * n))
    wrong, dup, bad = pool[:k], pool[k : 2 * k], pool[2 * k : 3 * k]
    for j in wrong:
        r = truth.loc[j]
        other = rng.choice([i for i in ids if i != r.identity])
        dst = data / other / f"moved_{r.path.name}"
        shutil.move(r.path, dst)
        truth.loc[j, ["path", "identity", "truth"]] = [dst, other, "wrong"]
    extra = []
    for j in dup:
        r = truth.loc[j]
        img = cv2.imread(str(r.path))
        h, w = img.shape[:2]
        c = rng.uniform(0, 0.04, 4)
        img = img[int(c[0] * h) : h - int(c[1] * h), int(c[2] * w) : w - int(c[3] * w)]
        s = rng.uniform(0.5, 0.9)
        img = cv2.resize(
            img,
            (max(8, int(img.shape[1] * s)), max(8, int(img.shape[0] * s))),
            interpolation=cv2.INTER_AREA,
        )
        dst = r.path.with_name(f"{r.path.stem}_copy.jpg")
        cv2.imwrite(str(dst), img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 91))])
        extra.append(
            {
                "path": dst,
                "identity": r.identity,
                "truth": "duplicate",
                "origin": str(r.path),
                "file": "",
            }
        )
    for j in bad:
        r = truth.loc[j]
        img = cv2.imread(str(r.path)).astype(np.float32)
        kind = rng.choice(["blur", "noise", "dark"])
        if kind == "blur":
            img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(6, 10)))
        elif kind == "noise":
            img = img + rng.normal(0, float(rng.uniform(60, 90)), img.shape)
        else:
            img = img * float(rng.uniform(0.04, 0.1))
        cv2.imwrite(
            str(r.path), np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90]
        )
        truth.loc[j, "truth"] = "degraded"
    truth = pd.concat([truth, pd.DataFrame(extra)], ignore_index=True)
    truth["path"] = truth["path"].astype(str)
    return data, truth


def duplicate_pairs(truth: pd.DataFrame, known: pd.DataFrame | None) -> list[tuple[str, str]]:
    """The pairs a duplicate finder should find: each injected copy with its original, and
    each pair of ``known`` (``a``, ``b``: files of the photo set that are already
    near-duplicates of each other, checked by eye) whose two photos are both in the folder
    untouched (neither moved nor damaged)."""
    dup = truth[truth["truth"] == "duplicate"]
    pairs = list(zip(dup["origin"], dup["path"]))
    if known is not None and "file" in truth.columns:
        clean = truth[truth["truth"] == "clean"].set_index("file")["path"]
        pairs += [
            (clean[a], clean[b])
            for a, b in zip(known["a"], known["b"])
            if a in clean and b in clean
        ]
    return pairs


def scores(
    pred: pd.Series, truth: pd.Series, pairs: list[tuple[str, str]]
) -> dict[str, dict[str, float]]:
    """Precision, recall and F1 per kind of rot (``pred``/``truth``: one kind or ``clean``
    per photo). Duplicates count by pair (``pairs``: original, copy): a pair is found when
    one of its two is flagged (which one a tool keeps is its choice); every other flag, and a
    second flag in a pair, is a false one."""
    out = {}
    for k in KINDS:
        tp = int(((pred == k) & (truth == k)).sum())
        fp = int(((pred == k) & (truth != k)).sum())
        fn = int(((pred != k) & (truth == k)).sum())
        if k == "duplicate":
            flagged = set(pred.index[pred == k])
            found = sum(a in flagged or b in flagged for a, b in pairs)
            tp, fp, fn = found, len(flagged) - found, len(pairs) - found
        p = tp / (tp + fp) if tp + fp else float("nan")
        r = tp / (tp + fn) if tp + fn else float("nan")
        f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
        out[k] = {"precision": p, "recall": r, "f1": f1, "flagged": tp + fp}
    return out


def ours(data: Path, out: Path, identities: bool = True) -> tuple[pd.Series, float]:
    from pipeline.config import load_config
    from pipeline.run_job import run
    from workers.threshold import reason_kind

    sets = ["identity.from_folder=true"] if identities else []
    cfg = load_config(Path(__file__).parents[1] / "configs" / "dataset_clean.yaml", sets)
    t0 = time.perf_counter()
    frames = run([str(data)], out, cfg, progress=False)
    wall = time.perf_counter() - t0
    kind = frames["reason"].map(reason_kind)
    pred = np.where(
        frames["keep"],
        "clean",
        np.where(
            kind == "another person",
            "wrong",
            np.where(kind == "duplicate", "duplicate", "degraded"),
        ),
    )
    return pd.Series(pred, index=frames["source"].astype(str)), wall


def baseline_wrong(paths: list[str]) -> pd.Series:
    """Each photo's dlib distance (largest face) to its folder's mean descriptor, > 0.6."""
    from face_iqa import DetectorConfig, build_detector, load_image
    from face_iqa.faces.align import face_crop
    from face_iqa.faces.recognizer import DlibRecognizer

    det = build_detector(DetectorConfig(max_side=1280))
    rec = DlibRecognizer()
    desc = {}
    for p in paths:
        img = load_image(p)
        d = det.detect([img])[0]
        if len(d) == 0:
            continue
        k = int(np.argmax((d.boxes[:, 2] - d.boxes[:, 0]) * (d.boxes[:, 3] - d.boxes[:, 1])))
        try:
            desc[p] = rec.image_descriptor(face_crop(img, d.boxes[k], d.landmarks[k]))
        except RuntimeError:
            continue
    pred = pd.Series("clean", index=paths)
    folders = pd.Series({p: str(Path(p).parent) for p in desc})
    for _, g in folders.groupby(folders):
        m = np.mean([desc[p] for p in g.index], axis=0)
        for p in g.index:
            if np.linalg.norm(desc[p] - m) > 0.6:
                pred[p] = "wrong"
    return pred


def cleanvision_pred(paths: list[str]) -> pd.Series:
    from cleanvision import Imagelab

    lab = Imagelab(filepaths=paths)
    lab.find_issues({"blurry": {}, "dark": {}, "near_duplicates": {}}, verbose=False)
    iss = lab.issues
    pred = pd.Series("clean", index=paths)
    bad = iss.index[iss["is_blurry_issue"] | iss["is_dark_issue"]]
    pred[[str(p) for p in bad]] = "degraded"
    for group in lab.info["near_duplicates"]["sets"]:
        for p in sorted(group)[1:]:
            pred[str(p)] = "duplicate"
    return pred


def imagededup_pred(data: Path, paths: list[str]) -> pd.Series:
    from imagededup.methods import PHash

    ph = PHash(verbose=False)
    enc = ph.encode_images(image_dir=str(data), recursive=True)
    remove = ph.find_duplicates_to_remove(encoding_map=enc, max_distance_threshold=10)
    pred = pd.Series("clean", index=paths)
    by_name = {str(Path(p).relative_to(data)): p for p in paths}
    for r in remove:
        p = by_name.get(str(r), str(data / r))
        if p in pred.index:
            pred[p] = "duplicate"
    return pred


def table(results: dict[str, dict]) -> str:
    lines = [
        "| tool | " + " | ".join(f"{k}: P / R / F1" for k in KINDS) + " |",
        "|---|" + "---|" * len(KINDS),
    ]
    for tool, r in results.items():
        cells = []
        for k in KINDS:
            v = r.get(k)
            cells.append(
                "-"
                if v is None or v["flagged"] == 0 and np.isnan(v["precision"])
                else f"{v['precision']:.2f} / {v['recall']:.2f} / {v['f1']:.2f}"
            )
        lines.append(f"| {tool} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--photos-csv", type=Path, required=True, help="identities.csv: file, identity, set"
    )
    ap.add_argument("--set", default="celeba", help="only this set of the file ('' for all)")
    ap.add_argument("--people", type=int, default=60)
    ap.add_argument("--rate", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--half", choices=["a", "b"], default="b", help="a: for choosing settings, b: for measuring"
    )
    ap.add_argument("--out", type=Path, default=Path("runs/clean_bench"))
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument(
        "--source-duplicates",
        default=str(Path(__file__).with_name("source_duplicates.csv")),
        help="pairs of the photo set's files (a, b) that are near-duplicates already, checked "
        "by eye: counted as duplicates to find ('' to count the injected copies only)",
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data, truth = build(
        args.photos_csv, args.people, args.set, args.rate, args.seed, args.out, args.half
    )
    truth.to_csv(args.out / "truth.csv", index=False)
    paths = list(truth["path"])
    gt = truth.set_index("path")["truth"]
    known = pd.read_csv(args.source_duplicates) if args.source_duplicates else None
    pairs = duplicate_pairs(truth, known)
    injected = duplicate_pairs(truth, None)
    print(f"duplicate pairs: {len(injected)} injected, {len(pairs) - len(injected)} in the source")
    from pipeline.graph import RayConfig, init_ray

    init_ray(RayConfig())  # started before the clocks
    print(
        f"{len(truth)} photos of {truth['identity'].nunique()} people: {gt.value_counts().to_dict()}"
    )
    results, timing = {}, {}
    g = gt.reindex(paths)
    pred0, timing["faceiqa run (no identities)"] = ours(data, args.out / "plain", identities=False)
    pred, timing["faceiqa run --identity-from parent"] = ours(data, args.out / "ours")
    results["faceiqa run --identity-from parent"] = scores(
        pred.reindex(paths).fillna("clean"), g, pairs
    )
    results["faceiqa run (no identities)"] = scores(pred0.reindex(paths).fillna("clean"), g, pairs)
    peer_preds = {}
    if not args.skip_peers:
        peer_preds = {
            "cleanvision 0.3.7": cleanvision_pred(paths),
            "imagededup 0.3.3 PHash": imagededup_pred(data, paths),
            "dlib distance to the folder's mean > 0.6": baseline_wrong(paths),
        }
        for k, v in peer_preds.items():
            results[k] = scores(v, g, pairs)
    md = table(results)
    preds = {"faceiqa run --identity-from parent": pred, "faceiqa run (no identities)": pred0}
    if not args.skip_peers:
        preds.update(peer_preds)
    pd.DataFrame({k: v.reindex(paths).fillna("clean") for k, v in preds.items()}).rename_axis(
        "path"
    ).to_csv(args.out / "predictions.csv")
    inj = {
        k: scores(v.reindex(paths).fillna("clean"), g, injected)["duplicate"]
        for k, v in preds.items()
    }
    md += "\n\nduplicates against the injected copies alone (P / R): " + ", ".join(
        f"{k} {v['precision']:.2f} / {v['recall']:.2f}" for k, v in inj.items() if v["flagged"]
    )
    print(md)
    print("wall seconds:", {k: round(v, 1) for k, v in timing.items()})
    (args.out / "results.md").write_text(md + "\n")
    (args.out / "results.json").write_text(
        json.dumps({"results": results, "wall_s": timing}, indent=1, default=str)
    )


if __name__ == "__main__":
    main()
