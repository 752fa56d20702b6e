"""The bodies of ``faceiqa train``, ``export`` and ``label-footage``: each calls
:mod:`face_iqa.learn` and prints."""

from __future__ import annotations

import argparse


def train(args: argparse.Namespace) -> int:
    import json

    from face_iqa.learn.config import TrainConfig
    from face_iqa.learn.loop import train
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


def export(args: argparse.Namespace) -> int:
    from face_iqa.learn.export import export_model

    path = export_model(args.run, args.out, train_minutes=args.minutes, machine=args.machine)
    print(f"exported {path} ({path.stat().st_size / 2**20:.1f} MiB) with MODEL_CARD.md")
    return 0


def label_footage(args: argparse.Namespace) -> int:
    from face_iqa.faces.clips import read_clips
    from face_iqa.learn.footage import FootageConfig, build_footage_set

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
