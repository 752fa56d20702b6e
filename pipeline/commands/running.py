"""The bodies of ``faceiqa run``, ``detect``, ``score``, ``calibrate``, ``report``, ``sample``
and ``--version``: each parses nothing, calls the library or the pipeline, and prints."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np


def run(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.run_job import run

    sets = list(args.sets)
    if args.ray_address:
        sets.append(f"ray.address={args.ray_address}")
    if args.crops:
        sets.append("output.crops=true")
    if args.kept_frames:
        sets.append("output.kept_frames=true")
    if args.identities:
        sets.append(f"identity.file={args.identities}")
    if args.identity_from == "parent":
        sets.append("identity.from_folder=true")
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
    from workers.threshold import reason_kind

    why = frames.loc[~frames["keep"], "reason"].map(reason_kind).value_counts()
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


def detect(args: argparse.Namespace) -> int:
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


def score(args: argparse.Namespace) -> int:
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


def calibrate(args: argparse.Namespace) -> int:
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


def report(args: argparse.Namespace) -> int:
    from pipeline.report import write_report

    path = write_report(args.run_dir, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


def sample(args: argparse.Namespace) -> int:
    from pipeline.sample_job import write_sample

    paths = write_sample(args.out, fps=args.fps)
    print(f"sample clip: {paths['video']} (frames in {paths['frames']}, labels {paths['labels']})")
    return 0


def version_text() -> str:
    import importlib.metadata as md

    from face_iqa.model.checkpoint import file_sha256
    from face_iqa.model.scorer import DEFAULT_CHECKPOINT, default_checkpoint

    try:
        version = md.version("face-iqa-pipeline")
    except md.PackageNotFoundError:
        version = "unknown (not installed)"
    sha = file_sha256(default_checkpoint())
    return f"faceiqa {version}\nmodel {DEFAULT_CHECKPOINT} sha256 {sha}"
