"""From a training run to a shipped model: :func:`export_model` writes the best checkpoint
with its card (what it was trained on, its figures) and ``MODEL_CARD.md``;
:func:`split_table` gives the faces of one split of a recipe, for evaluation."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from face_iqa.learn.config import TrainConfig
from face_iqa.learn.data import resolve_data
from face_iqa.learn.label_sets import assign_splits, load_labelled
from face_iqa.model.checkpoint import (
    ModelCard,
    build_model,
    save_checkpoint,
)

__all__ = ["export_model", "split_table"]


def split_table(cfg: TrainConfig, split: str, log: Callable[[str], None] = print) -> pd.DataFrame:
    """The faces a training run with ``cfg`` puts in ``split`` (train, val or test): its data
    resolved and split exactly as :func:`train` does (a synthetic or footage set is built
    first if its folder holds none), so a model can be tested on another recipe's split."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, not {split!r}")
    table, _ = resolve_data(cfg, log)
    part = table[table["split"] == split].reset_index(drop=True)
    if part.empty:
        raise ValueError(f"the {split} split of this training config is empty")
    return part


def _data_relative(path: str) -> str:
    """``path`` from below its last ``data`` folder (``.../data/images/a.jpg`` ->
    ``images/a.jpg``), so a shipped file names no folder of the machine it was made on."""
    parts = Path(path).parts
    if "data" not in parts[:-1]:
        return str(path)
    last = len(parts) - 1 - parts[::-1].index("data")
    return "/".join(parts[last + 1 :])


def export_model(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    name: str = "face_hyperiqa_lite0.pt",
    command: str = "",
    train_minutes: float | None = None,
    machine: str = "",
) -> Path:
    """Ship a training run: its best checkpoint in float16 with the test metrics in its card,
    ``MODEL_CARD.md`` and ``heldout.json`` (the held-out photos) next to it."""
    run = Path(run_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = json.loads((run / "summary.json").read_text())
    model, card = build_model(run / "best.pt")
    test = summary.get("test", {})
    card = ModelCard(
        arch=card.arch,
        input_size=card.input_size,
        mean=card.mean,
        std=card.std,
        score_range=card.score_range,
        higher_is_better=card.higher_is_better,
        trained_on="synthetic face degradations"
        + (" and real one-person clips" if summary["data"].get("footage") else "")
        + " labelled by dlib recognition utility",
        metrics={
            "val": card.metrics.get("val", {}),
            "test": test,
            "epoch": card.metrics.get("epoch"),
        },
    )
    path = save_checkpoint(model, card, out / name, half=True)
    dcfg = summary["config"]["data"]
    table = assign_splits(
        load_labelled(summary["data"]["labels"]).table,
        dcfg["val_fraction"],
        dcfg["test_fraction"],
        dcfg["split_seed"],
    )
    src_col = "source" if "source" in table.columns else "path"
    test_src = sorted({_data_relative(s) for s in table.loc[table["split"] == "test", src_col]})
    photos = [s for s in test_src if not s.lower().endswith((".mp4", ".avi", ".mov", ".mkv"))]
    (out / "heldout.json").write_text(
        json.dumps(
            {
                "photos": photos,
                "sources": test_src,
                "clips": sorted((dcfg.get("footage") or {}).get("holdout", [])),
                "note": "identities never seen in training; paths relative to the data folder; "
                "clips: persons of the footage clips never read in training",
            },
            indent=1,
        )
    )
    h = summary["history"]
    best = max(h, key=lambda r: r["val_srcc"])
    n = summary["data"]["n"]
    ids = summary["data"]["identities"]
    cfg = summary["config"]
    syn = cfg["data"].get("synthetic")
    lines = [
        "# Model card: face_hyperiqa_lite0 (the embedded default)",
        "",
        "HyperIQA (Su et al., CVPR 2020) with an EfficientNet-Lite0 backbone, fine-tuned to",
        "predict how recognisable a face crop is (0-100, higher is better).",
        "",
        "## Data",
        (
            f"- Clean faces: MTCNN-detected and aligned (224x224) from "
            f"{[_data_relative(x) for x in syn['images'] + syn['videos']]}; faces under "
            f"{syn['min_face_size']} px are not "
            "used as clean references."
            if syn
            else f"- Labelled set: {summary['data']['labels']}."
        ),
        (
            f"- Each clean crop plus {syn['variants']} degraded copies"
            + (
                f" ({syn['photo_variants']} for faces from photos)"
                if syn.get("photo_variants") is not None
                else ""
            )
            + " (albumentations: blur, noise, JPEG"
            + (f", {', '.join(syn['extra_degradations'])}" if syn.get("extra_degradations") else "")
            + ", downscale, exposure, dimming, gamma, contrast, occlusion, and combinations), "
            + (
                f"{syn['frame_fraction']:.0%} of them made in the photo or video frame around "
                "the face before alignment, "
                if syn.get("frame_fraction")
                else ""
            )
            + (
                f"{syn['scaled_fraction']:.0%} of them applied at another resolution than the "
                f"crop's (between the face's own, at least half the crop, and "
                f"{syn['max_scale']:g}x the crop, then resized back), "
                if syn.get("scaled_fraction")
                else ""
            )
            + ("severities and scales" if syn.get("scaled_fraction") else "severities")
            + " recorded in `labels.parquet`."
            if syn
            else ""
        ),
        "- Label: recognition utility, `100 * exp(-d / 0.25)` with `d` the dlib descriptor "
        "distance between the clean and the degraded crop (9 at dlib's same-person "
        "threshold 0.6)"
        + (
            ", plus the distance a face loses when captured small (the clean crop's zoom; "
            "measured on the set's large faces, `resolution_curve.json`): a clean 100-pixel "
            "face is labelled below a clean 400-pixel one."
            if syn and syn.get("resolution_label")
            else "."
        ),
        f"- Split by identity (dlib-descriptor clusters): train {n['train']} crops / "
        f"{ids['train']} identities, val {n['val']} / {ids['val']}, test {n['test']} / "
        f"{ids['test']} (held out: identities never seen in training; `heldout.json`).",
        "",
        "## Command",
        f"`{command or 'faceiqa train --config configs/train_face.yaml'}` then "
        "`faceiqa export --run runs/face --out face_iqa/weights`",
        f"- seed {cfg['seed']}, {cfg['epochs']} epochs, batch {cfg['batch_size']}, Adam, "
        f"lr {cfg['lr']} (backbone) / x{cfg['head_lr_mult']} (LDA + hyper network), weight "
        f"decay {cfg['weight_decay']}, L1 loss, lr / 10 every {cfg['lr_decay_every']} epochs.",
        (
            f"- Plus a ranking term (RankIQA-style, weight {rk['weight']}): {rk['pairs']} pairs "
            "a batch, each a train crop degraded twice by one kind "
            f"({', '.join(rk['kinds'])}), the milder copy required to score "
            f"{rk['margin']} points higher (hinge)"
            + (
                f"; pairs are made from clean train faces of {rk['base_min_face_size']:g} px "
                "or more."
                if rk.get("base_min_face_size")
                else "."
            )
            if (rk := cfg.get("rank")) and rk.get("weight", 0) > 0
            else None
        ),
        (
            f"- Plus a resolution-ladder term (weight {ld['weight']}): {ld['pairs']} pairs a "
            f"batch, each one train face rendered at two of its {syn.get('ladder_rungs')} "
            "capture sizes (the frame reduced with an antialiased Lanczos filter, then "
            "aligned; faces "
            f"down to {syn.get('ladder_min_side'):g} px"
            + (
                f"; no ladders from {', '.join(syn['ladder_exclude'])}"
                if syn.get("ladder_exclude")
                else ""
            )
            + f") at least {ld['min_ratio']:g}x apart, the larger required to score "
            f"{ld['margin']:g} points higher per doubling of the detail its crop holds, and "
            "not lower once both fill the crop (hinge)"
            + (
                f"; {ld['large_share']:.0%} of the pairs from faces larger than the crop."
                if ld.get("large_share")
                else "."
            )
            if (ld := cfg.get("ladder")) and ld.get("weight", 0) > 0 and syn
            else None
        ),
        (
            "- Train-time augmentation of the labelled crops: "
            + (
                f"moved by up to {au.get('shift_px', 16)} whole pixels (mirrored border, never "
                "resampled)"
                if au.get("crop") == "shift"
                else f"a random resized crop ({au.get('crop_scale_min', 0.85):.0%} to all of the "
                "area, resized back bilinearly)"
            )
            + (", horizontal flips" if au.get("flip", True) else "")
            + (f", colour jitter +-{au['color']:g}" if au.get("color") else "")
            + "."
            if (au := cfg.get("augment")) is not None
            else None
        ),
        f"- Training time: {train_minutes:.0f} minutes on {machine}." if train_minutes else None,
        "",
        "## Metrics",
        f"- Best validation epoch {best['epoch']}: SRCC {best['val_srcc']:.3f}, "
        f"PLCC {best['val_plcc']:.3f}, KRCC {best['val_krcc']:.3f}.",
        "- Held-out test identities: "
        + ", ".join(f"{k.upper()} {v:.3f}" for k, v in test.items())
        + ".",
        "",
        "## Limits",
        "- A few hundred faces of a few dozen people (public figures and two short videos):",
        "  little variety of age, ethnicity, pose and lighting. Fine-tune on your own faces.",
        "- Labels measure what synthetic degradations do to one recogniser (dlib); real",
        "  capture defects and other recognisers may differ.",
        "- Scores are relative: calibrate `threshold.min_quality` on your own data.",
        "- Stored in float16 (loaded as float32); 224x224 aligned crops expected.",
    ]
    (out / "MODEL_CARD.md").write_text("\n".join(x for x in lines if x is not None) + "\n")
    return path
