"""The bodies of ``faceiqa eval``, ``eval-recognition``, ``gmad`` and ``weights-map``: each
calls :mod:`face_iqa.judge` and prints what it found."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def eval(args: argparse.Namespace) -> int:
    from face_iqa.learn.config import TrainConfig
    from face_iqa.learn.export import split_table
    from face_iqa.learn.loop import evaluate
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


def eval_recognition(args: argparse.Namespace) -> int:
    from face_iqa.faces.detect import DetectorConfig, build_detector
    from face_iqa.faces.recognizer import DlibRecognizer
    from face_iqa.judge.recognition import (
        MEASURES,
        build_degraded_set,
        evaluate_photos,
        pairs_from_identities,
        plot_edc,
        read_identities,
        read_pairs,
    )
    from pipeline.writers import check_writable_dir, write_parquet

    out = check_writable_dir(args.out)
    if args.degraded and not args.identities:
        raise ValueError("--degraded needs --identities")
    if not (args.pairs or args.identities or args.clips or args.videos):
        raise ValueError("give --pairs, --identities, --clips or --videos")
    scorers = _scorers(args)  # the checkpoints load and the names are checked before any work
    if args.clips or args.videos:
        return _eval_footage(args, out, scorers)
    if args.identities and not args.degraded:
        return _eval_identity_photos(args, out, scorers)
    if args.identities:
        ids = read_identities(args.identities)
        if args.degraded:
            ids = build_degraded_set(list(zip(ids["path"], ids["identity"])), out / "degraded")
        pairs = pairs_from_identities(ids)
        paths = list(ids["path"])
    else:
        pairs = read_pairs(args.pairs)
        paths = list(dict.fromkeys([*pairs["a"], *pairs["b"]]))
    detector = build_detector(DetectorConfig(device=args.device, max_side=1280))
    ev = evaluate_photos(
        paths, pairs, detector, scorers, DlibRecognizer(), args.fmr, args.threshold, args.levels
    )
    faces, table = ev.faces, ev.edc
    table.to_csv(out / "edc.csv", index=False)
    ev.pair_quality.to_csv(out / "pair_quality.csv", index=False)
    write_parquet(faces.drop(columns=["descriptor"], errors="ignore"), out / "faces.parquet")
    plot_edc(table, out / "edc.png", title=f"EDC at FMR {args.fmr:g}")
    scores = ev.pauc()
    beats = _degraded_bootstrap(ev, ids, args.bootstrap, out) if args.degraded else None
    print(
        f"{int(faces['ok'].sum())} of {len(faces)} images described; {len(ev.pair_quality)} "
        f"genuine pairs; threshold {ev.threshold:.3f} ({_operating_point(args)}); FNMR with "
        f"nothing discarded {table[MEASURES[0]].iloc[0]:.3f}"
    )
    for m in sorted(scores, key=scores.get):
        note = ""
        if beats is not None and m == MEASURES[0]:
            note = f"   beats the best simple measure in {beats:.0%} of resamples of the photos"
        print(f"  pAUC(0-30%) {m:<10} {scores[m]:.4f}{note}")
    ev.levels.to_csv(out / "thresholds.csv", index=False)
    for r in ev.levels.itertuples():
        print(
            f"  min_quality {r.min_quality:>4g}: {r.faces_kept:6.1%} of faces kept, "
            f"FNMR {r.fnmr:.3f} on the {r.genuine_pairs_kept:.1%} of genuine pairs left"
        )
    print(f"wrote {out / 'edc.csv'}, {out / 'edc.png'}, {out / 'thresholds.csv'}")
    return 0


def _degraded_bootstrap(ev, ids, n: int, out: Path) -> float | None:
    """``--degraded``: the pAUC of every measure in ``n`` resamples of the source photos
    (each bringing its damaged copies; ``bootstrap.csv``) and the share where the model
    beats the best simple measure; None without resamples or pairs."""
    from face_iqa.judge.identities import beats_share, bootstrap_pauc
    from face_iqa.judge.recognition import MEASURES, described_genuine

    f, g = described_genuine(ev.faces, ev.pairs)
    if not n or g.empty:
        return None
    f["photo"] = ids.set_index("path").loc[f.index, "photo"].to_numpy()
    boot = bootstrap_pauc(f, g, ev.threshold, ev.measures, n=n, by="photo")
    boot.to_csv(out / "bootstrap.csv", index=False)
    return beats_share(boot, MEASURES[0], MEASURES[1:])


def _eval_identity_photos(args: argparse.Namespace, out: Path, scorers: dict) -> int:
    """``eval-recognition --identities``: the person's face in each photo, the EDC per set
    and pooled, the bootstrap, the failures per person, the best photo (see
    :mod:`face_iqa.judge.identities`)."""
    from face_iqa.faces.detect import DetectorConfig, build_detector
    from face_iqa.faces.recognizer import DlibRecognizer
    from face_iqa.judge.identities import (
        PHOTO_MEASURES,
        acquire_faces,
        choose_faces,
        evaluate_identities,
        photo_faces,
        read_identity_photos,
    )
    from face_iqa.judge.recognition import plot_edc, threshold_table
    from pipeline.writers import write_parquet

    photos = read_identity_photos(args.identities)
    if args.sets:
        unknown = set(args.sets) - set(photos["set"])
        if unknown:
            raise ValueError(f"{args.identities}: no set {sorted(unknown)}")
        photos = photos[photos["set"].isin(args.sets)].reset_index(drop=True)
    detector = build_detector(DetectorConfig(device=args.device, max_side=1280))
    cands, crops = acquire_faces(photos, detector, DlibRecognizer(), log=_stderr)
    chosen = choose_faces(cands, agree=args.agree)
    faces, _ = photo_faces(cands, crops, chosen, scorers)
    measures = (*PHOTO_MEASURES, *list(scorers)[1:])
    ev = evaluate_identities(
        faces,
        measures,
        fmr=args.fmr,
        bootstrap=args.bootstrap,
        threshold=args.threshold,
        rivals=PHOTO_MEASURES,
    )
    faces["label"] = _photo_labels(faces, ev.thresholds["pooled"])
    srcc = _label_srcc(faces, measures)
    srcc.to_csv(out / "label_srcc.csv", index=False)
    write_parquet(faces.drop(columns=["descriptor"], errors="ignore"), out / "faces.parquet")
    write_parquet(cands.drop(columns=["descriptor"], errors="ignore"), out / "candidates.parquet")
    pooled = ev.edc[ev.edc["set"] == "pooled"].drop(columns="set")
    pooled.to_csv(out / "edc.csv", index=False)
    ev.edc.to_csv(out / "edc_sets.csv", index=False)
    ev.pair_quality.to_csv(out / "pair_quality.csv", index=False)
    ev.pauc.to_csv(out / "pauc.csv", index=False)
    ev.acquired.to_csv(out / "acquired.csv", index=False)
    ev.identities.to_csv(out / "identities.csv", index=False)
    ev.best_photo.to_csv(out / "best_photo.csv", index=False)
    plot_edc(pooled, out / "edc.png", title=f"EDC (photos, pooled) at FMR {args.fmr:g}")
    levels = threshold_table(faces, ev.pairs, ev.thresholds["pooled"], args.levels)
    levels.to_csv(out / "thresholds.csv", index=False)
    for r in ev.acquired.itertuples():
        print(
            f"{r.set}: {r.photos} photos of {r.people} people; the person's face in {r.acquired} "
            f"(failures to acquire: {r.no_face} no face, {r.no_agreement} none agreeing, "
            f"{r.unreadable} unreadable)"
        )
    for s, g in ev.pauc.groupby("set", sort=False):
        first = g.iloc[0]
        print(
            f"{s}: {int(first.genuine_pairs)} genuine pairs, threshold {first.threshold:.3f} "
            f"({_operating_point(args)}), FNMR with nothing discarded {first.fnmr:.3f}"
        )
        for r in g.sort_values("pauc").itertuples():
            boot = getattr(r, "beats_best_other", float("nan"))
            note = f"   beats the best other in {boot:.0%} of resamples" if boot == boot else ""
            print(f"  pAUC(0-30%) {r.measure:<12} {r.pauc:.4f}{note}")
    for r in srcc[srcc["set"] == "pooled"].itertuples():
        print(f"  SRCC with the recognition label {r.measure:<12} {r.srcc:+.3f}")
    for r in ev.best_photo[ev.best_photo["set"] == "pooled"].itertuples():
        print(
            f"  best photo {r.measure:<14} matches {r.match_rate:6.1%} of the person's other "
            f"photos ({r.identities} people)"
        )
    print(
        f"wrote {out / 'edc.csv'}, {out / 'pauc.csv'}, {out / 'identities.csv'}, "
        f"{out / 'best_photo.csv'}, {out / 'acquired.csv'}, {out / 'faces.parquet'}"
    )
    return 0


def _photo_labels(faces, threshold: float, softness: float = 0.05):
    """The training's label (:func:`face_iqa.learn.photos.label_photo_faces`) of every
    acquired face, here on the evaluated people at ``threshold``; NaN elsewhere."""
    import numpy as np

    from face_iqa.learn.photos import label_photo_faces

    ok = faces[faces["ok"]]
    rows = ok[["identity", "descriptor"]].assign(face_id=ok.index, variant=0)
    labelled, _ = label_photo_faces(rows, 0.0, softness, threshold=threshold)
    label = np.full(len(faces), np.nan)
    label[faces.index.get_indexer(ok.index)] = labelled["score"].to_numpy()
    return label


def _label_srcc(faces, measures):
    """Spearman correlation of each measure with ``label``, per set and pooled."""
    import pandas as pd

    rows = []
    good = faces[faces["ok"] & faces["label"].notna()]
    for s, g in [("pooled", good), *good.groupby("set", sort=True)]:
        for m in measures:
            rows.append({"set": s, "measure": m, "srcc": g[m].corr(g["label"], "spearman")})
    return pd.DataFrame(rows)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _scorers(args: argparse.Namespace) -> dict:
    """``{"hyperiqa": the --checkpoint model, NAME: model ...}`` with ``--compare
    NAME=CHECKPOINT ...``; a name may not be one of the simple measures'."""
    from face_iqa.judge.video import VIDEO_MEASURES
    from face_iqa.model.scorer import ScorerConfig, build_scorer

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
    footage (see :mod:`face_iqa.judge.video`)."""
    from face_iqa.faces.detect import DetectorConfig, build_detector
    from face_iqa.faces.recognizer import DlibRecognizer
    from face_iqa.judge.recognition import plot_edc
    from face_iqa.judge.video import (
        VIDEO_MEASURES,
        evaluate_footage,
        footage_faces,
        plot_best_shot,
    )
    from pipeline.writers import write_parquet

    detector = build_detector(DetectorConfig(device=args.device, max_side=1280))
    faces = footage_faces(
        detector,
        scorers,
        DlibRecognizer(),
        clips=args.clips,
        persons=args.persons,
        videos=args.videos,
        min_gap=args.min_gap,
        per_identity=args.per_identity,
    )
    measures = (*VIDEO_MEASURES, *list(scorers)[1:])
    ev = evaluate_footage(faces, measures, args.min_gap, args.fmr, args.threshold)
    table, best, ids, pose, pairs = ev.edc, ev.best, ev.identities, ev.pose, ev.pairs
    table.to_csv(out / "edc.csv", index=False)
    plot_edc(table, out / "edc.png", title=f"EDC (video) at FMR {args.fmr:g}")
    best.to_csv(out / "best_shot.csv", index=False)
    plot_best_shot(best, out / "best_shot.png")
    ids.to_csv(out / "identities.csv", index=False)
    pose.to_csv(out / "pose_thresholds.csv", index=False)
    write_parquet(faces.drop(columns=["descriptor"]), out / "faces.parquet")
    n_gen = int(pairs["same"].sum())
    print(
        f"{len(faces)} faces of {faces['identity'].nunique()} identities; {n_gen} genuine and "
        f"{len(pairs) - n_gen} impostor pairs; threshold {ev.threshold:.3f} "
        f"({_operating_point(args)}); FNMR with nothing discarded "
        f"{table[VIDEO_MEASURES[0]].iloc[0]:.3f}"
    )
    failed = int(ids["failed_pairs"].sum())
    top = ids.iloc[0]
    if failed:
        print(
            f"  failed genuine pairs: {failed} in {int((ids['failed_pairs'] > 0).sum())} of "
            f"{len(ids)} identities; most in {top.identity} ({top.failed_pairs}, "
            f"{top.share_of_failures:.0%})"
        )
    if ev.without:
        print(
            "  over half of them are one identity's: the EDC mostly tells whether a measure "
            "ranks that identity's faces below the others' (identities.csv)"
        )
    scores = ev.pauc()
    for m in sorted(scores, key=scores.get):
        rest_note = f"   without {top.identity}: {ev.without[m]:.4f}" if ev.without else ""
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


def _face_set(args: argparse.Namespace):
    """The faces ``gmad`` and ``weights-map`` compare (see :mod:`face_iqa.judge.face_sets`)."""
    from face_iqa.faces.detect import DetectorConfig, build_detector
    from face_iqa.judge import face_sets

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
        from face_iqa.faces.recognizer import DlibRecognizer

        faces, crops = face_sets.clip_faces(
            args.clips, detector, DlibRecognizer(), args.persons, args.min_gap, args.per_identity
        )
    if not crops:
        raise ValueError("no faces found")
    return faces, crops


def gmad(args: argparse.Namespace) -> int:
    from face_iqa.judge.face_sets import set_scores
    from face_iqa.judge.gmad import agreement, gmad_pairs, write_gmad_html

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


def weights_map(args: argparse.Namespace) -> int:
    from face_iqa.judge.weights_map import weights_map

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    faces, crops = _face_set(args)
    result = weights_map(faces, crops, out, checkpoint=args.checkpoint, device=args.device)
    for line in result["lines"]:
        print(line)
    return 0
