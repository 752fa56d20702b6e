"""The ``faceiqa`` command: the parser and the dispatch, nothing else. The commands' bodies
live in :mod:`pipeline.commands` by family (running, evaluating, training), each a thin layer
over functions a Python user can call too."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

__all__ = ["COMMANDS", "main"]


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


class _Version(argparse.Action):
    """``--version``: computed only when asked (hashing the model costs a moment)."""

    def __init__(self, option_strings: list[str], dest: str, **kw: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        from pipeline.commands.running import version_text

        print(version_text())
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
    who = r.add_mutually_exclusive_group()
    who.add_argument(
        "--identities",
        metavar="FILE",
        help="CSV of path, identity: each photo's person (finds wrong people and duplicates)",
    )
    who.add_argument(
        "--identity-from",
        choices=["parent"],
        help="parent: each photo's folder names its person",
    )
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
    src.add_argument(
        "--identities",
        metavar="FILE",
        help="CSV: path (or file), identity[, set]: the person's face chosen in each photo, "
        "the EDC per set and pooled with a bootstrap over people, the best photo per person",
    )
    src.add_argument("--clips", metavar="FILE", help="CSV: file, person (one person a video clip)")
    e.add_argument(
        "--levels",
        nargs="+",
        type=float,
        default=[10.0, 20.0, 35.0, 50.0, 70.0],
        metavar="Q",
        help="the min_quality levels of thresholds.csv (photos; default 10 20 35 50 70)",
    )
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
        "--sets", nargs="+", default=[], metavar="SET", help="with --identities: only these sets"
    )
    e.add_argument(
        "--agree",
        type=float,
        default=0.7,
        help="with --identities: a photo's face is the person's when its median dlib distance "
        "to the person's other photos is at most this (0.7); else a failure to acquire",
    )
    e.add_argument(
        "--bootstrap",
        type=int,
        default=200,
        help="resamples of the people (with --degraded: of the source photos) for the pAUC "
        "(200; 0: none)",
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


# command -> (module of pipeline.commands, function); imported only when that command runs,
# so ``faceiqa --help`` and a typo answer without loading torch or ray
COMMANDS = {
    "run": ("running", "run"),
    "detect": ("running", "detect"),
    "score": ("running", "score"),
    "calibrate": ("running", "calibrate"),
    "report": ("running", "report"),
    "sample": ("running", "sample"),
    "train": ("training", "train"),
    "export": ("training", "export"),
    "label-footage": ("training", "label_footage"),
    "eval": ("evaluating", "eval"),
    "eval-recognition": ("evaluating", "eval_recognition"),
    "gmad": ("evaluating", "gmad"),
    "weights-map": ("evaluating", "weights_map"),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``faceiqa`` console script. Returns the exit status."""
    _env()
    args = _parser().parse_args(argv)
    from face_iqa.model.checkpoint import CheckpointError
    from pipeline.config import ConfigError
    from pipeline.inputs import InputError

    family, name = COMMANDS[args.command]
    command = getattr(importlib.import_module(f"pipeline.commands.{family}"), name)
    try:
        return command(args)
    except (InputError, ConfigError, CheckpointError, OSError, ValueError) as e:
        print(f"faceiqa {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
