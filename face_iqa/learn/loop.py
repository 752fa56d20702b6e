"""Fine-tuning HyperIQA on face crops.

Defaults follow the paper: Adam, weight decay 5e-4, backbone learning rate 2e-5 and 10x that
for the LDA taps and the hyper network, L1 loss. Unlike the authors' script, the optimiser
keeps training the hyper network after the first epoch (theirs rebuilt the optimiser from an
exhausted parameter iterator, silently freezing it).

Each epoch reports SRCC/PLCC/KRCC on the validation split (grouped by identity, so no face
leaks across splits), keeps the best checkpoint, and can be resumed.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from face_iqa.faces.detect import resolve_device
from face_iqa.learn.config import TrainConfig, plain_config
from face_iqa.learn.data import (
    FaceDataset,
    LadderPairs,
    RankPairs,
    ladder_table,
    make_loader,
    resolve_data,
)
from face_iqa.learn.label_sets import load_labelled
from face_iqa.metrics import iqa_metrics
from face_iqa.model.checkpoint import (
    CheckpointError,
    ModelCard,
    build_model,
    init_backbone_imagenet,
    save_checkpoint,
)
from face_iqa.model.hyperiqa import HyperIQA, HyperIQAConfig
from face_iqa.model.scorer import default_checkpoint, mirror_averaged

__all__ = ["evaluate", "predict", "train"]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds libraries that use the legacy global RNG
    torch.manual_seed(seed)


def _pair_hinge(
    scores: torch.Tensor, start: int, q: int, margin: float | torch.Tensor
) -> tuple[torch.Tensor, float]:
    """The ranking hinge on ``q`` pairs laid out in one forward batch: ``scores[start:
    start + q]`` must exceed ``scores[start + q : start + 2q]`` by ``margin`` (a number, or
    one per pair). Returns the mean hinge and the share of pairs in order."""
    gap = scores[start : start + q] - scores[start + q : start + 2 * q]
    return torch.relu(margin - gap).mean(), float((gap > 0).float().mean())


def predict(
    model: HyperIQA, loader: DataLoader, device: torch.device, flip: bool = False
) -> np.ndarray:
    """Scores of a loader's images, in order (eval mode, no augmentation); ``flip``
    averages each image's score with its mirror image's, as the default scorer does."""
    model.eval()
    out = []
    amp = device.type == "cuda"
    with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=amp):
        for x, _ in loader:
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            q = mirror_averaged(model, x) if flip else model(x).float()
            out.append(q.cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _optimizer(model: HyperIQA, cfg: TrainConfig) -> torch.optim.Optimizer:
    head = {id(p) for p in model.head_parameters()}
    backbone = [p for p in model.parameters() if id(p) not in head]
    # Both groups are built once from lists, so every parameter keeps training every epoch.
    return torch.optim.Adam(
        [
            {"params": backbone, "lr": cfg.lr},
            {"params": model.head_parameters(), "lr": cfg.lr * cfg.head_lr_mult},
        ],
        weight_decay=cfg.weight_decay,
    )


def _set_lr(opt: torch.optim.Optimizer, cfg: TrainConfig, epoch: int) -> None:
    factor = 0.1 ** (epoch // cfg.lr_decay_every) if cfg.lr_decay_every > 0 else 1.0
    opt.param_groups[0]["lr"] = cfg.lr * factor
    opt.param_groups[1]["lr"] = cfg.lr * cfg.head_lr_mult * factor


def _initial_model(cfg: TrainConfig) -> tuple[HyperIQA, ModelCard]:
    if cfg.init in ("imagenet", "random"):
        arch = HyperIQAConfig.for_backbone(cfg.backbone, cfg.head)
        model = HyperIQA(arch)
        if cfg.init == "imagenet":
            init_backbone_imagenet(model)
        return model, ModelCard(arch=arch)
    model, card = build_model(cfg.init)
    return model, card


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> dict:
    """Train; returns a summary with the best validation and the test metrics.

    Writes ``out_dir/best.pt`` (our checkpoint format), ``out_dir/last.pt``,
    ``out_dir/train_state.pt`` (optimizer and epoch, for ``resume``) and
    ``out_dir/history.json``.
    """
    _seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        from face_iqa.cpu_alloc import tune_cpu_malloc

        tune_cpu_malloc()  # activations are reused instead of faulted in every step
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table, info = resolve_data(cfg, log)
    log(f"data: {info['n']} faces, identities {info['identities']} ({info['labels']})")
    model, card = _initial_model(cfg)
    if cfg.init in ("imagenet", "random"):
        # Start the generated output bias at the mean label: the target net's output then
        # begins on the label scale, and the first epochs learn the ranking, not an offset.
        with torch.no_grad():
            model.output_bias().fill_(float(table.loc[table["split"] == "train", "score"].mean()))
    model = model.to(device).to(memory_format=torch.channels_last)
    opt = _optimizer(model, cfg)
    size = card.arch.input_size
    train_tab = table[table["split"] == "train"]
    steps = math.ceil(len(train_tab) / cfg.batch_size)  # per epoch
    train_ds = FaceDataset(train_tab, size, card.mean, card.std, cfg.augment, cfg.seed)
    train_weights = cfg.data.row_weights(train_tab)
    if train_weights is not None:
        share = train_tab.assign(w=train_weights).groupby("part")["w"].sum()
        log(f"train draws by part: {(share / share.sum()).round(3).to_dict()}")
    val_ds = FaceDataset(table[table["split"] == "val"], size, card.mean, card.std, None, 0)
    rank_ds = None
    if cfg.rank.weight > 0:
        rank_ds = RankPairs(
            train_tab, size, card.mean, card.std, cfg.rank, cfg.seed, steps * cfg.rank.pairs
        )  # the bases repeated as needed
    ladder_ds = None
    if cfg.ladder.weight > 0:
        lad = ladder_table(info["label_files"], train_tab)
        ladder_ds = LadderPairs(
            lad, size, card.mean, card.std, cfg.ladder, cfg.seed, steps * cfg.ladder.pairs
        )
        log(f"resolution ladders: {len(ladder_ds.pairs)} train faces, {len(lad)} rungs")
    test_tab = table[table["split"] == "test"]
    test_ds = FaceDataset(test_tab, size, card.mean, card.std, None, 0) if len(test_tab) else None

    start_epoch, best, history, step = 0, -math.inf, [], 0
    state_path = out / "train_state.pt"
    if cfg.resume and state_path.is_file():
        try:
            st = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a broken state file: say which and stop
            raise CheckpointError(f"{state_path}: cannot resume ({e})") from None
        model.load_state_dict(st["model"], strict=True)
        opt.load_state_dict(st["optimizer"])
        start_epoch, best, step = int(st["epoch"]) + 1, float(st["best"]), int(st["step"])
        history = json.loads((out / "history.json").read_text())
        log(f"resumed after epoch {start_epoch} (best val SRCC {best:.4f})")

    amp = device.type == "cuda"
    loss_fn = torch.nn.L1Loss()
    for epoch in range(start_epoch, cfg.epochs):
        _set_lr(opt, cfg, epoch)
        train_ds.epoch = epoch
        model.train()
        loader = make_loader(
            train_ds, cfg.batch_size, True, cfg.workers, cfg.seed + epoch, train_weights
        )
        t0, losses, rank_losses, ordered = time.perf_counter(), [], [], []
        ladder_losses, ladder_ordered = [], []
        rank_it = ladder_it = None
        if ladder_ds is not None:
            ladder_ds.epoch = epoch
            ladder_it = iter(
                make_loader(ladder_ds, cfg.ladder.pairs, True, cfg.workers, cfg.seed + epoch)
            )
        if rank_ds is not None:
            rank_ds.epoch = epoch
            rank_it = iter(
                make_loader(rank_ds, cfg.rank.pairs, True, cfg.workers, cfg.seed + epoch)
            )
        it = loader
        if cfg.progress:
            from tqdm import tqdm

            it = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
        for x, y in it:
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            y = y.to(device)
            n, pairs = x.shape[0], None
            if rank_it is not None:
                pairs = next(rank_it, None)  # a batch of pairs for every step
            if pairs is not None:
                mild, strong = pairs
                p = mild.shape[0]
                x = torch.cat([x, mild.to(device), strong.to(device)])
                x = x.contiguous(memory_format=torch.channels_last)
            rungs = next(ladder_it, None) if ladder_it is not None else None
            if rungs is not None:
                big, small, lmargin = rungs
                q, lmargin = big.shape[0], lmargin.to(device)
                x = torch.cat([x, big.to(device), small.to(device)])
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                scores = model(x).float()
            l1 = loss_fn(scores[:n], y)
            loss = l1
            if pairs is not None:
                rank_loss, share = _pair_hinge(scores, n, p, cfg.rank.margin)
                loss = loss + cfg.rank.weight * rank_loss
                rank_losses.append(rank_loss.item())
                ordered.append(share)
            if rungs is not None:
                ladder_loss, share = _pair_hinge(scores, len(scores) - 2 * q, q, lmargin)
                loss = loss + cfg.ladder.weight * ladder_loss
                ladder_losses.append(ladder_loss.item())
                ladder_ordered.append(share)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(l1.item())
            step += 1
            if cfg.max_steps is not None and step >= cfg.max_steps:
                break
        val_loader = make_loader(val_ds, 64, False, cfg.workers, 0)
        m = iqa_metrics(predict(model, val_loader, device), val_ds.scores)
        rec = {
            "epoch": epoch + 1,
            "step": step,
            "train_l1": float(np.mean(losses)),
            **(
                {
                    "train_rank": float(np.mean(rank_losses)),
                    "train_ordered": float(np.mean(ordered)),
                }
                if rank_losses
                else {}
            ),
            **(
                {
                    "train_ladder": float(np.mean(ladder_losses)),
                    "train_ladder_ordered": float(np.mean(ladder_ordered)),
                }
                if ladder_losses
                else {}
            ),
            "seconds": time.perf_counter() - t0,
            **{f"val_{k}": v for k, v in m.items()},
        }
        history.append(rec)
        log(json.dumps(rec))
        card_now = ModelCard(
            arch=card.arch,
            input_size=size,
            mean=card.mean,
            std=card.std,
            score_range=(0.0, 100.0),
            higher_is_better=True,
            trained_on=info["labels"],
            metrics={"val": m, "epoch": epoch + 1},
        )
        save_checkpoint(model, card_now, out / "last.pt")
        score = m["srcc"] if not math.isnan(m["srcc"]) else -math.inf
        if score > best:
            best = score
            save_checkpoint(model, card_now, out / "best.pt")
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "epoch": epoch,
                "best": best,
                "step": step,
            },
            state_path,
        )
        (out / "history.json").write_text(json.dumps(history, indent=1))
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break

    summary = {
        "config": plain_config(asdict(cfg)),
        "data": info,
        "history": history,
        "best_val_srcc": best,
    }
    best_path = out / "best.pt"
    if test_ds is not None and best_path.is_file():
        best_model, _ = build_model(best_path, device=device)
        tm = iqa_metrics(
            predict(best_model, make_loader(test_ds, 64, False, cfg.workers, 0), device),
            test_ds.scores,
        )
        summary["test"] = tm
        log(f"held-out test (identities never seen in training): {json.dumps(tm)}")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def evaluate(
    labels: str | os.PathLike[str] | pd.DataFrame,
    checkpoint: str | os.PathLike[str] | None,
    device: str = "auto",
    batch_size: int = 64,
    flip: bool = True,
) -> dict[str, float]:
    """SRCC, PLCC, KRCC and RMSE of a checkpoint on a labelled set of face crops (a file,
    labels normalised to [0, 100] as for training, or a table of ``path`` and ``score`` such
    as :func:`split_table` gives), scored like the pipeline scores (each crop averaged with
    its mirror image; ``flip=False``: the network alone)."""
    dev = resolve_device(device)
    model, card = build_model(checkpoint or default_checkpoint(), device=dev)
    model = model.to(memory_format=torch.channels_last)
    table = labels if isinstance(labels, pd.DataFrame) else load_labelled(labels).table
    ds = FaceDataset(table, card.input_size, card.mean, card.std, None, 0)
    pred = predict(model, make_loader(ds, batch_size, False, 0, 0), dev, flip=flip)
    return iqa_metrics(pred, ds.scores)
