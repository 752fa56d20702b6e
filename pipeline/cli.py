"""The ``faceiqa`` command: a thin layer over the functions a Python user calls."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np

__all__ = ["main"]


def _env() -> None:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML preset overriding the built-in defaults")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set detect.detector.min_face_size=40 (repeatable)",
    )


def _version_text() -> str:
    import importlib.metadata as md

    from face_iqa.checkpoint import file_sha256
    from face_iqa.scorer import DEFAULT_CHECKPOINT, default_checkpoint

    try:
        version = md.version("face-iqa-pipeline")
    except md.PackageNotFoundError:
        version = "unknown (not installed)"
    sha = file_sha256(default_checkpoint())
    return f"faceiqa {version}\nmodel {DEFAULT_CHECKPOINT} sha256 {sha}"


class _Version(argparse.Action):
    """``--version``: computed only when asked (hashing the model costs a moment)."""

    def __init__(self, option_strings: list[str], dest: str, **kw: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        print(_version_text())
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faceiqa", description="Face detection, alignment and quality filtering."
    )
    parser.add_argument(
        "--version",
        action=_Version,
        help="the package version and the embedded model's SHA-256, then exit",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="the main job: filter videos, images and folders")
    r.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="videos, images, folders (recursive), list files (.txt/.csv)",
    )
    r.add_argument("--out", required=True, metavar="DIR", help="output folder")
    r.add_argument(
        "--ray-address",
        help="join this Ray cluster (default: RAY_ADDRESS, else an embedded local instance)",
    )
    r.add_argument("--resume", action="store_true", help="skip sources already finished")
    r.add_argument("--crops", action="store_true", help="write aligned crops of kept faces")
    r.add_argument("--kept-frames", action="store_true", help="write the kept frames as PNG")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument(
        "--verbose",
        action="store_true",
        help="show Ray's own messages (by default they go to DIR/run.log)",
    )
    _add_config_args(r)

    d = sub.add_parser("detect", help="detect and align faces in images and folders")
    d.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, list files")
    d.add_argument("--out", required=True, metavar="FILE.parquet", help="face table to write")
    d.add_argument("--crops", metavar="DIR", help="also write the aligned crops as PNG here")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_config_args(d)

    q = sub.add_parser("score", help="score the quality of the faces in images")
    q.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, list files")
    q.add_argument("--out", required=True, metavar="FILE.parquet", help="face table to write")
    q.add_argument(
        "--checkpoint",
        help="model checkpoint (ours or the authors' .pkl); default: the embedded face model",
    )
    q.add_argument(
        "--aligned",
        action="store_true",
        help="inputs are already aligned face crops: skip detection",
    )
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_config_args(q)

    t = sub.add_parser("train", help="fine-tune HyperIQA on labelled or synthetic face crops")
    t.add_argument("--resume", action="store_true", help="continue from out_dir/train_state.pt")
    _add_config_args(t)

    c = sub.add_parser("calibrate", help="propose quality thresholds from scored faces")
    c.add_argument("--run", metavar="DIR", help="a faceiqa run output folder")
    c.add_argument("--scores", metavar="FILE", help="a score table (.parquet/.csv, 'quality')")
    how = c.add_mutually_exclusive_group(required=True)
    how.add_argument("--discard", type=float, metavar="RATE", help="target discard rate, 0-1")
    how.add_argument(
        "--target-fnmr",
        type=float,
        metavar="FNMR",
        help="target FNMR on a labelled set (needs --edc)",
    )
    how.add_argument(
        "--per-source-quantile", type=float, metavar="Q", help="keep each source's top 1-Q"
    )
    c.add_argument("--edc", metavar="DIR", help="an eval-recognition output folder")
    c.add_argument(
        "--out", default="calibrated.yaml", metavar="FILE.yaml", help="config snippet to write"
    )

    e = sub.add_parser(
        "eval-recognition",
        help="does quality predict recognition failures? EDC curves of several measures",
    )
    src = e.add_mutually_exclusive_group()
    src.add_argument("--pairs", metavar="FILE", help="CSV: a, b, same (1/0)")
    src.add_argument("--identities", metavar="FILE", help="CSV: path, identity (all pairs)")
    src.add_argument("--clips", metavar="FILE", help="CSV: file, person (one person a video clip)")
    e.add_argument(
        "--degraded",
        action="store_true",
        help="with --identities: each photo plus 10 degraded copies (blur, noise, JPEG, "
        "downscale, exposure; written under OUT/degraded), as the model card's set",
    )
    e.add_argument(
        "--videos",
        nargs="+",
        default=[],
        metavar="VIDEO",
        help="multi-person videos: each face track is one identity (alone or with --clips)",
    )
    e.add_argument(
        "--persons",
        nargs="+",
        default=[],
        metavar="PERSON",
        help="with --clips: only these persons' clips (e.g. the clips a model never saw)",
    )
    e.add_argument(
        "--min-gap", type=int, default=10, help="video faces sampled this many frames apart (10)"
    )
    e.add_argument(
        "--per-identity", type=int, default=30, help="video faces per clip or track, at most (30)"
    )
    e.add_argument("--out", required=True, metavar="DIR", help="edc.csv, edc.png, faces.parquet")
    e.add_argument("--checkpoint", help="model checkpoint (default: the embedded face model)")
    e.add_argument(
        "--compare",
        nargs="+",
        default=[],
        metavar="NAME=CHECKPOINT",
        help="more models, each scored beside the first as its own measure NAME",
    )
    e.add_argument("--fmr", type=float, default=0.01, help="decision threshold's FMR (0.01)")
    e.add_argument(
        "--threshold",
        type=float,
        help="dlib distance threshold, given instead of set at --fmr (an operating point "
        "calibrated on more impostors than the evaluated faces offer)",
    )
    e.add_argument("--device", default="auto")

    rp = sub.add_parser("report", help="one self-contained HTML page for a run's output")
    rp.add_argument("run_dir", metavar="DIR", help="a faceiqa run output folder")
    rp.add_argument("--out", metavar="FILE.html", help="default: DIR/report.html")

    x = sub.add_parser("export", help="ship a training run's best model (float16 + card)")
    x.add_argument("--run", required=True, metavar="DIR", help="the training out_dir")
    x.add_argument("--out", required=True, metavar="DIR")
    x.add_argument("--minutes", type=float, help="measured training time, for the card")
    x.add_argument("--machine", default="", help="where it was trained, for the card")

    e = sub.add_parser("eval", help="SRCC/PLCC/KRCC/RMSE of a model on a labelled set")
    e.add_argument(
        "--data",
        metavar="FILE",
        help="CSV/Parquet of path,score (paths are face crops)",
    )
    e.add_argument(
        "--split",
        choices=("train", "val", "test"),
        help="instead of --data: this split of the training data of --config, split as "
        "`faceiqa train` splits it (e.g. another recipe's held-out identities)",
    )
    e.add_argument("--checkpoint", help="default: the embedded face model")
    e.add_argument("--device", default="auto")
    e.add_argument(
        "--no-flip",
        action="store_true",
        help="score the crops alone (default: averaged with their mirror images, as `run` does)",
    )
    _add_config_args(e)

    lf = sub.add_parser(
        "label-footage", help="label one-person clips' faces by how well recognition matches them"
    )
    lf.add_argument("--clips", required=True, metavar="FILE", help="CSV: file, person")
    lf.add_argument("--out", required=True, metavar="DIR", help="crops/ and labels.parquet")
    lf.add_argument(
        "--exclude",
        nargs="+",
        default=[],
        metavar="PERSON",
        help="persons whose clips are not read",
    )
    lf.add_argument(
        "--persons", nargs="+", default=[], metavar="PERSON", help="only these persons' clips"
    )
    lf.add_argument("--min-gap", type=int, default=5, help="frames between faces (5)")
    lf.add_argument("--per-identity", type=int, default=50, help="faces a clip, at most (50)")
    lf.add_argument("--copies", type=int, default=0, help="damaged copies a face (0)")
    lf.add_argument("--seed", type=int, default=1)

    for name, help_ in (
        ("gmad", "gMAD competition: where two quality models disagree most"),
        ("weights-map", "the hyper network's generated weights per face, embedded in 2-D"),
    ):
        g = sub.add_parser(name, help=help_)
        faces = g.add_mutually_exclusive_group(required=True)
        faces.add_argument("--images", nargs="+", metavar="DIR", help="photos or folders")
        faces.add_argument("--clips", metavar="FILE", help="CSV: file, person (one-person clips)")
        if name == "gmad":
            faces.add_argument("--run", metavar="DIR", help="a faceiqa run output folder")
            faces.add_argument("--labels", metavar="FILE", help="a labelled set (path, score)")
            g.add_argument(
                "--a", required=True, help="default, sharpness, det_prob, face_size or a checkpoint"
            )
            g.add_argument("--b", required=True, help="the other model (same choices)")
            g.add_argument("--levels", type=int, default=6, help="defender levels (6)")
            g.add_argument(
                "--band",
                type=float,
                default=0.05,
                help="share of faces nearest a level the attacker picks from (0.05)",
            )
        else:
            g.add_argument("--checkpoint", help="default: the embedded face model")
            g.add_argument(
                "--identities",
                metavar="FILE",
                help="with --images: CSV of file, identity (each photo's main face)",
            )
        g.add_argument(
            "--persons",
            nargs="+",
            default=[],
            metavar="PERSON",
            help="with --clips: only these persons' clips",
        )
        g.add_argument("--min-gap", type=int, default=10, help="clip faces this many frames apart")
        g.add_argument("--per-identity", type=int, default=30, help="faces per clip, at most (30)")
        g.add_argument("--out", required=True, metavar="DIR")
        g.add_argument("--device", default="auto")

    s = sub.add_parser("sample", help="write the self-made demo clip (no data needed)")
    s.add_argument("--out", required=True, metavar="DIR")
    s.add_argument("--fps", type=float, default=8.0)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.run_job import run

    sets = list(args.sets)
    if args.ray_address:
        sets.append(f"ray.address={args.ray_address}")
    if args.crops:
        sets.append("output.crops=true")
    if args.kept_frames:
        sets.append("output.kept_frames=true")
    cfg = load_config(args.config, sets)
    with _ray_output(None if args.verbose else Path(args.out) / "run.log") as console:
        try:
            frames = run(
                args.inputs,
                args.out,
                cfg,
                resume=args.resume,
                progress=not args.quiet,
                console=console,
            )
        finally:
            _stop_ray()  # while its output still goes to the log
    kept = int(frames["keep"].sum())
    n = len(frames)
    errors = int((frames["status"] == "error").sum())
    print(
        f"{n} frames from {frames['source'].nunique()} sources: {kept} kept, "
        f"{n - kept} rejected, {errors} errors"
    )
    from pipeline.run_job import _reason_kind

    why = frames.loc[~frames["keep"], "reason"].map(_reason_kind).value_counts()
    for reason, count in why.items():
        print(f"  rejected ({reason}): {count}")
    print(f"manifest: {args.out}/frames.parquet, {args.out}/faces.parquet, {args.out}/summary.json")
    return 0


@contextlib.contextmanager
def _ray_output(log_path: Path | None) -> Iterator[TextIO]:
    """Send everything written to file descriptor 2 (Ray's warnings and the C++ core's log
    lines, Python warnings, logging) to ``log_path``; yields the terminal's stderr for our
    own progress bar and messages. ``None``: change nothing."""
    if log_path is None:
        yield sys.stderr
        return
    from pipeline.writers import check_writable_dir

    check_writable_dir(log_path.parent)
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    os.dup2(fd, 2)
    os.close(fd)
    console = os.fdopen(os.dup(saved), "w", buffering=1)
    try:
        yield console
    finally:
        sys.stderr.flush()
        console.close()
        os.dup2(saved, 2)
        os.close(saved)


def _stop_ray() -> None:
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def _cmd_detect(args: argparse.Namespace) -> int:
    from face_iqa.schema import STATUS_ERROR, STATUS_NO_FACE, STATUS_OK
    from pipeline.config import load_config
    from pipeline.image_jobs import detect_images

    cfg = load_config(args.config, args.sets)
    table = detect_images(args.inputs, args.out, args.crops, cfg, progress=not args.quiet)
    per_image = table.groupby("source", sort=False)["status"]
    n_img = per_image.ngroups
    n_err = int((per_image.first() == STATUS_ERROR).sum())
    n_faces = int((table["status"] == STATUS_OK).sum())
    n_none = int((per_image.first() == STATUS_NO_FACE).sum())
    print(f"{n_img} images: {n_faces} faces, {n_none} without a face, {n_err} errors -> {args.out}")
    for msg in table.loc[table["status"] == STATUS_ERROR, "error"]:
        print(f"  error: {msg}", file=sys.stderr)
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from face_iqa.schema import STATUS_ERROR, STATUS_OK
    from pipeline.config import load_config
    from pipeline.image_jobs import score_images

    sets = list(args.sets)
    if args.checkpoint:
        sets.append(f"score.scorer.checkpoint={args.checkpoint}")
    cfg = load_config(args.config, sets)
    table = score_images(args.inputs, args.out, cfg, aligned=args.aligned, progress=not args.quiet)
    ok = table["status"] == STATUS_OK
    n_err = int((table["status"] == STATUS_ERROR).sum())
    q = table.loc[ok, "quality"]
    summary = f"median quality {q.median():.1f}" if len(q) else "no faces"
    print(f"{int(ok.sum())} faces scored ({summary}), {n_err} errors -> {args.out}")
    for msg in table.loc[table["status"] == STATUS_ERROR, "error"]:
        print(f"  error: {msg}", file=sys.stderr)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import json

    from face_iqa.train import TrainConfig, train
    from pipeline.config import load_into, to_dict

    sets = list(args.sets) + (["resume=true"] if args.resume else [])
    cfg = load_into(TrainConfig, args.config, sets)
    summary = train(cfg)
    print(
        json.dumps(
            {
                "best_val_srcc": summary["best_val_srcc"],
                "test": summary.get("test"),
                "out_dir": to_dict(cfg)["out_dir"],
            },
            indent=1,
        )
    )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from face_iqa.train import export_model

    path = export_model(args.run, args.out, train_minutes=args.minutes, machine=args.machine)
    print(f"exported {path} ({path.stat().st_size / 2**20:.1f} MiB) with MODEL_CARD.md")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from face_iqa.train import TrainConfig, evaluate, split_table
    from pipeline.config import load_into

    if (args.data is None) == (args.split is None):
        raise ValueError("give --data FILE, or --split with a training --config")
    if args.split is None and (args.config or args.sets):
        raise ValueError("--config/--set go with --split (they name the training data)")
    data = args.data
    if args.split is not None:
        if not args.config:
            raise ValueError("--split needs the training --config whose data it splits")
        data = split_table(load_into(TrainConfig, args.config, args.sets), args.split)
        print(
            f"{args.config}: {len(data)} faces of {data['identity'].nunique()} identities "
            f"in the {args.split} split"
        )
    m = evaluate(data, args.checkpoint, device=args.device, flip=not args.no_flip)
    print("  ".join(f"{k.upper()} {v:.4f}" for k, v in m.items()))
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from pipeline.calibrate import for_discard, for_fnmr, load_scores, per_source, write_snippet

    if args.target_fnmr is not None:
        if not args.edc:
            raise ValueError("--target-fnmr needs --edc DIR (from faceiqa eval-recognition)")
        t, frac = for_fnmr(args.edc, args.target_fnmr)
        note = f"FNMR <= {args.target_fnmr} by discarding {frac:.0%} of genuine pairs ({args.edc})"
        snippet = {"min_quality": round(t, 3)}
    else:
        df = load_scores(args.run, args.scores)
        q = df["quality"].to_numpy(np.float64)
        if args.discard is not None:
            t = for_discard(q, args.discard)
            got = float((q < t).mean())
            note = f"min_quality {t:.3f} rejects {got:.1%} of {len(q)} faces (target {args.discard:.1%})"
            snippet = {"min_quality": round(t, 3)}
        else:
            table = per_source(df, args.per_source_quantile)
            for r in table.itertuples():
                print(f"  {r.source}: {r.threshold:.2f}")
            note = f"per source, keep frames at or above the {args.per_source_quantile:g}-quantile"
            snippet = {"policy": "quantile", "quantile": args.per_source_quantile}
    path = write_snippet(snippet, args.out, note)
    print(f"{note}\nwrote {path}: use it with faceiqa run --config {path}")
    return 0


def _cmd_eval_recognition(args: argparse.Namespace) -> int:
    import pandas as pd

    from face_iqa.detect import DetectorConfig, build_detector
    from face_iqa.recognition_eval import (
        MEASURES,
        build_degraded_set,
        describe_faces,
        edc_table,
        pairs_from_identities,
        pauc,
        plot_edc,
        threshold_table,
    )
    from face_iqa.utility import DlibRecognizer
    from pipeline.writers import check_writable_dir, write_parquet

    out = check_writable_dir(args.out)
    if args.degraded and not args.identities:
        raise ValueError("--degraded needs --identities")
    if not (args.pairs or args.identities or args.clips or args.videos):
        raise ValueError("give --pairs, --identities, --clips or --videos")
    scorers = _scorers(args)  # the checkpoints load and the names are checked before any work
    if args.clips or args.videos:
        return _eval_footage(args, out, scorers)
    if args.identities:
        ids = pd.read_csv(args.identities)
        if not {"path", "identity"} <= set(ids.columns):
            raise ValueError(f"{args.identities}: needs 'path' and 'identity' columns")
        base = Path(args.identities).parent
        ids["path"] = [str(p if Path(p).is_absolute() else base / p) for p in ids["path"]]
        if args.degraded:
            ids = build_degraded_set(list(zip(ids["path"], ids["identity"])), out / "degraded")
        pairs = pairs_from_identities(ids)
        paths = list(ids["path"])
    else:
        pairs = pd.read_csv(args.pairs)
        if not {"a", "b", "same"} <= set(pairs.columns):
            raise ValueError(f"{args.pairs}: needs 'a', 'b' and 'same' columns")
        base = Path(args.pairs).parent
        for c in ("a", "b"):
            pairs[c] = [str(p if Path(p).is_absolute() else base / p) for p in pairs[c]]
        pairs["same"] = pairs["same"].astype(bool)
        paths = list(dict.fromkeys([*pairs["a"], *pairs["b"]]))
    detector = build_detector(DetectorConfig(device=args.device, max_side=1280))
    measures = (*MEASURES, *list(scorers)[1:])
    faces = describe_faces(paths, detector, scorers, DlibRecognizer())
    table, threshold = edc_table(
        faces, pairs, fmr=args.fmr, threshold=args.threshold, measures=measures
    )
    table.to_csv(out / "edc.csv", index=False)
    f = faces[faces["ok"]].set_index("path")
    g = pairs[pairs["same"] & pairs["a"].isin(f.index) & pairs["b"].isin(f.index)]
    pd.DataFrame(
        {m: np.minimum(f.loc[g["a"], m].to_numpy(), f.loc[g["b"], m].to_numpy()) for m in measures}
    ).to_csv(out / "pair_quality.csv", index=False)
    write_parquet(faces.drop(columns=["descriptor"], errors="ignore"), out / "faces.parquet")
    plot_edc(table, out / "edc.png", title=f"EDC at FMR {args.fmr:g}")
    scores = {m: pauc(table, m) for m in measures}
    print(
        f"{int(faces['ok'].sum())} of {len(faces)} images described; {len(g)} genuine pairs; "
        f"threshold {threshold:.3f} ({_operating_point(args)}); FNMR with nothing discarded "
        f"{table[MEASURES[0]].iloc[0]:.3f}"
    )
    for m in sorted(scores, key=scores.get):
        print(f"  pAUC(0-30%) {m:<10} {scores[m]:.4f}")
    levels = threshold_table(faces, pairs, threshold)
    levels.to_csv(out / "thresholds.csv", index=False)
    for r in levels.itertuples():
        print(
            f"  min_quality {r.min_quality:>4g}: {r.faces_kept:6.1%} of faces kept, "
            f"FNMR {r.fnmr:.3f} on the {r.genuine_pairs_kept:.1%} of genuine pairs left"
        )
    print(f"wrote {out / 'edc.csv'}, {out / 'edc.png'}, {out / 'thresholds.csv'}")
    return 0


def _scorers(args: argparse.Namespace) -> dict:
    """``{"hyperiqa": the --checkpoint model, NAME: model ...}`` with ``--compare
    NAME=CHECKPOINT ...``; a name may not be one of the simple measures'."""
    from face_iqa.scorer import ScorerConfig, build_scorer
    from face_iqa.video_eval import VIDEO_MEASURES

    wanted = {"hyperiqa": args.checkpoint}
    for item in args.compare:
        name, sep, ckpt = item.partition("=")
        if not sep or not name or not ckpt:
            raise ValueError(f"--compare {item!r}: expected NAME=CHECKPOINT")
        if name in VIDEO_MEASURES or name in wanted or not name.replace("_", "").isalnum():
            raise ValueError(f"--compare {item!r}: {name!r} is taken or not a plain name")
        wanted[name] = ckpt
    return {
        n: build_scorer(ScorerConfig(checkpoint=c, device=args.device)) for n, c in wanted.items()
    }


def _operating_point(args: argparse.Namespace) -> str:
    return "given" if args.threshold is not None else f"FMR {args.fmr:g}"


def _eval_footage(args: argparse.Namespace, out: Path, scorers: dict) -> int:
    """``eval-recognition --clips/--videos``: the EDC and the best-shot measure on real
    footage (see :mod:`face_iqa.video_eval`)."""
    import pandas as pd

    from face_iqa.detect import DetectorConfig, build_detector
    from face_iqa.pose import POSE_LEVELS
    from face_iqa.recognition_eval import edc_table, pauc, plot_edc, threshold_table
    from face_iqa.utility import DlibRecognizer
    from face_iqa.video_eval import (
        VIDEO_MEASURES,
        best_shot_table,
        identity_table,
        pauc_without,
        plot_best_shot,
        read_clips,
        sample_video_faces,
        track_video,
        video_pairs,
    )
    from pipeline.writers import write_parquet

    detector = build_detector(DetectorConfig(device=args.device, max_side=1280))
    measures = (*VIDEO_MEASURES, *list(scorers)[1:])
    recognizer = DlibRecognizer()
    tables, crops = [], []
    if args.clips:
        for person, path in read_clips(args.clips, args.persons):
            f, c = sample_video_faces(path, detector, args.min_gap, args.per_identity)
            f["identity"], f["kind"] = f"person:{person}", "clip"
            f["first"] = f["last"] = -1
            tables.append(f)
            crops += c
    for v in args.videos:
        if not Path(v).is_file():
            raise ValueError(f"{v}: video does not exist")
        tracked = track_video(v, detector)
        f, c = sample_video_faces(v, detector, args.min_gap, args.per_identity, tracked)
        span = tracked.drop_duplicates("track_id").set_index("track_id")
        f["identity"], f["kind"] = f["track_id"], "track"
        f["first"] = f["track_id"].map(span["first"]).astype(int)
        f["last"] = f["track_id"].map(span["last"]).astype(int)
        tables.append(f)
        crops += c
    faces = pd.concat(tables, ignore_index=True)
    if faces.empty:
        raise ValueError("no faces found in the clips and videos")
    faces["path"] = [
        f"{v}#f{i:06d}#{t}"
        for v, i, t in zip(faces["video"], faces["frame_index"], faces["track_id"])
    ]
    stack = np.stack(crops)
    for name, score in scorers.items():
        faces[name] = score(stack)
    faces["random"] = np.random.default_rng(0).random(len(faces))
    desc, ok = [], []
    for crop in stack:
        try:
            desc.append(recognizer.image_descriptor(crop))
            ok.append(True)
        except RuntimeError:  # dlib could not place its shape on this crop
            desc.append(np.full(128, np.nan))
            ok.append(False)
    faces["descriptor"], faces["ok"] = desc, ok
    pairs = video_pairs(faces[faces["ok"]], args.min_gap)
    table, threshold = edc_table(
        faces, pairs, fmr=args.fmr, measures=measures, threshold=args.threshold
    )
    table.to_csv(out / "edc.csv", index=False)
    plot_edc(table, out / "edc.png", title=f"EDC (video) at FMR {args.fmr:g}")
    best = best_shot_table(faces[faces["ok"]].set_index("path"), pairs, threshold, measures)
    best.to_csv(out / "best_shot.csv", index=False)
    plot_best_shot(best, out / "best_shot.png")
    ids = identity_table(faces[faces["ok"]].set_index("path"), pairs, threshold)
    ids.to_csv(out / "identities.csv", index=False)
    pose = threshold_table(
        faces, pairs, threshold, POSE_LEVELS, measure="frontalness", rule="min_frontalness"
    )
    pose.to_csv(out / "pose_thresholds.csv", index=False)
    write_parquet(faces.drop(columns=["descriptor"]), out / "faces.parquet")
    n_gen = int(pairs["same"].sum())
    print(
        f"{len(faces)} faces of {faces['identity'].nunique()} identities; {n_gen} genuine and "
        f"{len(pairs) - n_gen} impostor pairs; threshold {threshold:.3f} ({_operating_point(args)}); "
        f"FNMR with nothing discarded {table[VIDEO_MEASURES[0]].iloc[0]:.3f}"
    )
    failed = int(ids["failed_pairs"].sum())
    top = ids.iloc[0]
    without = {}  # pAUC with the identity that holds most failures left out
    if failed:
        print(
            f"  failed genuine pairs: {failed} in {int((ids['failed_pairs'] > 0).sum())} of "
            f"{len(ids)} identities; most in {top.identity} ({top.failed_pairs}, "
            f"{top.share_of_failures:.0%})"
        )
    if top.share_of_failures > 0.5:
        print(
            "  over half of them are one identity's: the EDC mostly tells whether a measure "
            "ranks that identity's faces below the others' (identities.csv)"
        )
        without = pauc_without(faces, pairs, top.identity, threshold, measures)
    scores = {m: pauc(table, m) for m in measures}
    for m in sorted(scores, key=scores.get):
        rest_note = f"   without {top.identity}: {without[m]:.4f}" if without else ""
        print(f"  pAUC(0-30%) {m:<12} {scores[m]:.4f}{rest_note}")
    for r in best.itertuples():
        print(
            f"  best shot {r.measure:<14} matched {r.matched:6.1%} of {r.identities} identities; "
            f"matches {r.match_rate:6.1%} of the person's other faces"
        )
    for r in pose.itertuples():
        print(
            f"  min_frontalness {r.min_frontalness:.1f}: keeps {r.faces_kept:6.1%} of the faces, "
            f"{r.genuine_pairs_kept:6.1%} of the genuine pairs, FNMR {r.fnmr:.3f}"
        )
    print(
        f"wrote {out / 'edc.csv'}, {out / 'edc.png'}, {out / 'best_shot.csv'}, "
        f"{out / 'best_shot.png'}, {out / 'identities.csv'}, {out / 'pose_thresholds.csv'}"
    )
    return 0


def _cmd_label_footage(args: argparse.Namespace) -> int:
    from face_iqa.footage import FootageConfig, build_footage_set
    from face_iqa.video_eval import read_clips

    exclude = list(args.exclude)
    if args.persons:  # the clips of everyone else are held out
        kept = {p for p, _ in read_clips(args.clips, args.persons)}
        exclude += sorted({p for p, _ in read_clips(args.clips)} - kept)
    cfg = FootageConfig(
        clips=args.clips,
        holdout=tuple(exclude),
        min_gap=args.min_gap,
        per_identity=args.per_identity,
        degraded_copies=args.copies,
        seed=args.seed,
    )
    path = build_footage_set(cfg, args.out)
    print(f"wrote {path}")
    return 0


def _face_set(args: argparse.Namespace):
    """The faces ``gmad`` and ``weights-map`` compare (see :mod:`face_iqa.face_sets`)."""
    from face_iqa import face_sets
    from face_iqa.detect import DetectorConfig, build_detector

    if getattr(args, "run", None):
        return face_sets.run_faces(args.run)
    if getattr(args, "labels", None):
        return face_sets.labelled_faces(args.labels)
    detector = build_detector(DetectorConfig(device=args.device, max_side=1280))
    if args.images:
        faces, crops = face_sets.image_faces(
            args.images, detector, getattr(args, "identities", None)
        )
    else:
        from face_iqa.utility import DlibRecognizer

        faces, crops = face_sets.clip_faces(
            args.clips, detector, DlibRecognizer(), args.persons, args.min_gap, args.per_identity
        )
    if not crops:
        raise ValueError("no faces found")
    return faces, crops


def _cmd_gmad(args: argparse.Namespace) -> int:
    from face_iqa.face_sets import set_scores
    from face_iqa.gmad import agreement, gmad_pairs, write_gmad_html

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    faces, crops = _face_set(args)
    names = (args.a, args.b)
    a = set_scores(args.a, faces, crops, args.device)
    b = set_scores(args.b, faces, crops, args.device)
    pairs = gmad_pairs(a, b, names, args.levels, args.band)
    summary = None
    if "utility" in faces.columns and faces["utility"].notna().any():
        summary = agreement(pairs, faces["utility"].to_numpy())
        summary.to_csv(out / "gmad_summary.csv", index=False)
    table = pairs.assign(
        better_face=faces["face"].to_numpy()[pairs["better"]],
        worse_face=faces["face"].to_numpy()[pairs["worse"]],
    )
    if summary is not None:
        u = faces["utility"].to_numpy()
        table["utility_better"] = u[pairs["better"]]
        table["utility_worse"] = u[pairs["worse"]]
    table.to_csv(out / "gmad.csv", index=False)
    write_gmad_html(pairs, crops, list(faces["face"]), out / "gmad.html", names, summary)
    print(f"{len(faces)} faces; {len(pairs)} pairs")
    if summary is not None:
        for r in summary.itertuples():
            print(
                f"  {r.attacker} attacking {r.defender}: recognition agrees on {r.succeeded} of "
                f"{r.attacks} pairs ({r.success_rate:.0%})"
            )
    print(f"wrote {out / 'gmad.html'}, {out / 'gmad.csv'}")
    return 0


def _cmd_weights_map(args: argparse.Namespace) -> int:
    from face_iqa.weights_map import weights_map

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    faces, crops = _face_set(args)
    result = weights_map(faces, crops, out, checkpoint=args.checkpoint, device=args.device)
    for line in result["lines"]:
        print(line)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pipeline.report import write_report

    path = write_report(args.run_dir, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from pipeline.sample_job import write_sample

    paths = write_sample(args.out, fps=args.fps)
    print(f"sample clip: {paths['video']} (frames in {paths['frames']}, labels {paths['labels']})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``faceiqa`` console script. Returns the exit status."""
    _env()
    args = _parser().parse_args(argv)
    from face_iqa.checkpoint import CheckpointError
    from pipeline.config import ConfigError
    from pipeline.inputs import InputError

    try:
        return {
            "run": _cmd_run,
            "detect": _cmd_detect,
            "score": _cmd_score,
            "train": _cmd_train,
            "eval": _cmd_eval,
            "export": _cmd_export,
            "sample": _cmd_sample,
            "calibrate": _cmd_calibrate,
            "eval-recognition": _cmd_eval_recognition,
            "report": _cmd_report,
            "gmad": _cmd_gmad,
            "label-footage": _cmd_label_footage,
            "weights-map": _cmd_weights_map,
        }[args.command](args)
    except (InputError, ConfigError, CheckpointError, OSError, ValueError) as e:
        print(f"faceiqa {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
