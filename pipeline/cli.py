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

    s = sub.add_parser("sample", help="write the self-made demo clip (no data needed)")
    s.add_argument("--out", required=True, metavar="DIR")
    s.add_argument("--fps", type=float, default=8.0)
    return parser


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
        return {"detect": _cmd_detect, "score": _cmd_score, "sample": _cmd_sample}[args.command](
            args
        )
    except (InputError, ConfigError, CheckpointError, OSError) as e:
        print(f"faceiqa {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
