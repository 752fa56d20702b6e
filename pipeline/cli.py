"""The ``faceiqa`` command: a thin layer over the functions a Python user calls."""

from __future__ import annotations

import argparse
import os
import sys

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faceiqa", description="Face detection, alignment and quality filtering."
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

    x = sub.add_parser("export", help="ship a training run's best model (float16 + card)")
    x.add_argument("--run", required=True, metavar="DIR", help="the training out_dir")
    x.add_argument("--out", required=True, metavar="DIR")
    x.add_argument("--minutes", type=float, help="measured training time, for the card")
    x.add_argument("--machine", default="", help="where it was trained, for the card")

    e = sub.add_parser("eval", help="SRCC/PLCC/KRCC/RMSE of a model on a labelled set")
    e.add_argument(
        "--data",
        required=True,
        metavar="FILE",
        help="CSV/Parquet of path,score (paths are face crops)",
    )
    e.add_argument("--checkpoint", help="default: the embedded face model")
    e.add_argument("--device", default="auto")

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
    frames = run(args.inputs, args.out, cfg, resume=args.resume, progress=not args.quiet)
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
    from face_iqa.train import evaluate

    m = evaluate(args.data, args.checkpoint, device=args.device)
    print("  ".join(f"{k.upper()} {v:.4f}" for k, v in m.items()))
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
        }[args.command](args)
    except (InputError, ConfigError, CheckpointError, OSError, ValueError) as e:
        print(f"faceiqa {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
