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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from face_iqa.checkpoint import (
    CheckpointError,
    ModelCard,
    build_model,
    init_backbone_imagenet,
    save_checkpoint,
)
from face_iqa.datasets import SyntheticConfig, assign_splits, build_synthetic_set, load_labelled
from face_iqa.degrade import DEGRADATIONS, KNOWN_DEGRADATIONS, apply_degradation
from face_iqa.detect import resolve_device
from face_iqa.footage import FootageConfig, build_footage_set
from face_iqa.hyperiqa import HyperIQA, HyperIQAConfig
from face_iqa.images import load_image
from face_iqa.metrics import iqa_metrics
from face_iqa.scorer import default_checkpoint, mirror_averaged

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "LadderConfig",
    "RankConfig",
    "TrainConfig",
    "evaluate",
    "predict",
    "train",
]


@dataclass(frozen=True)
class AugmentConfig:
    """Train-time augmentation (albumentations): a mild random crop, horizontal flips and
    mild colour jitter. Kept mild on purpose: the label describes blur, noise and exposure,
    which strong augmentation would change.

    ``crop``: ``"resized"`` takes a random crop of ``crop_scale_min`` to all of the area and
    resizes it back (bilinear), so nearly every labelled crop is resampled, a little softer
    than the crops the scorer sees; ``"shift"`` moves the crop by up to ``shift_px`` whole
    pixels (the border mirrored), which keeps every pixel as it was.
    """

    crop: str = "resized"
    crop_scale_min: float = 0.85
    shift_px: int = 16
    flip: bool = True
    color: float = 0.05

    def __post_init__(self) -> None:
        # checked when the config loads, not minutes later when the dataset is built
        if self.crop not in ("resized", "shift") or self.shift_px < 0:
            raise ValueError(
                f"augment.crop {self.crop!r} (shift_px {self.shift_px}): "
                "expected 'resized' or 'shift' with shift_px >= 0"
            )
        if not 0 < self.crop_scale_min <= 1:
            raise ValueError(f"augment.crop_scale_min must be in (0, 1], got {self.crop_scale_min}")


@dataclass(frozen=True)
class RankConfig:
    """Pairwise ranking on train-time degradations (the idea of RankIQA, Liu et al. 2017).

    A train crop is degraded twice with the same kind and random seed, once mildly and once
    more strongly (``min_gap`` to ``min_gap + 0.3`` apart in severity, see
    :mod:`face_iqa.degrade`); the milder copy must score at least ``margin`` points higher.
    It needs no labels, and teaches the monotone response to blur, JPEG, scale and light
    that recognition labels, noisy at mild levels, cannot. ``weight`` 0 turns it off.
    """

    weight: float = 0.0
    pairs: int = 8  # per batch
    margin: float = 2.0
    min_gap: float = 0.15
    # share of pairs whose milder copy is the crop itself, undegraded: with a small
    # ``min_gap`` these teach that even a slight blur or downscale of a crop is a loss
    clean_share: float = 0.25
    # Bases: the train crops that are clean (``degradation == "clean"`` when the set says)
    # from faces of at least this many pixels (``face_size``), so that even a mild downscale
    # or blur of the base is a real loss; 0 (or a set without those columns): every crop.
    base_min_face_size: float = 0.0
    # occlusion is left out: two patches of different size need not cover one another;
    # ``EXTRA_DEGRADATIONS`` (e.g. ``jpeg_strong``) may be named too. Each pair draws its kind
    # uniformly from this list, so a kind named n times is drawn n times as often (the
    # default recipe, configs/train_face.yaml, weights JPEG that way)
    kinds: tuple[str, ...] = tuple(k for k in DEGRADATIONS if k != "occlusion")


@dataclass(frozen=True)
class LadderConfig:
    """Pairwise ordering on resolution ladders (``data.synthetic.ladder_rungs``): two
    renderings of one train face captured at different sizes, at least ``min_ratio`` apart;
    the larger must score at least ``margin`` points higher per doubling of the detail its
    crop holds (hinge; the detail stops growing once the face fills the crop's pixels, so
    two captures larger than the crop need only not be reversed). The recognition labels
    cannot say this: a face reduced from 400 to 250 pixels loses nothing dlib measures,
    and a model trained on them alone scored a 1080p face below the same photo's 720p file
    (model card). ``weight`` 0 turns it off.
    """

    weight: float = 0.0
    pairs: int = 8  # per batch
    margin: float = 2.0  # points per doubling of the detail a crop holds
    min_ratio: float = 1.25
    # share of pairs drawn from the faces the crop reduces at full size (zoom < 1; the
    # rest from every face): the few large photo faces are where the alignment's rendering
    # of a reduced face meets a 1:1 one, and a uniform draw reaches them rarely
    large_share: float = 0.0

    def __post_init__(self) -> None:
        if (
            self.weight < 0
            or self.pairs < 1
            or self.min_ratio <= 1
            or self.margin < 0
            or not 0 <= self.large_share <= 1
        ):
            raise ValueError(
                f"ladder: weight {self.weight} >= 0, pairs {self.pairs} >= 1, margin "
                f"{self.margin} >= 0, min_ratio {self.min_ratio} > 1 and large_share "
                f"{self.large_share} in [0, 1] expected"
            )


@dataclass(frozen=True)
class DataConfig:
    """Attributes:
    labels: a labelled CSV/Parquet (``path, score[, identity, split]``). When
        ``synthetic`` is set, the synthetic set is built (or reused) under ``synthetic_dir``
        and its ``labels.parquet`` is used instead.
    val_fraction / test_fraction: share of faces held out, grouped by identity, for rows
        without a ``split``.
    split_seed: seed of that grouping.
    footage: real footage labelled by recognition (:mod:`face_iqa.footage`), added to the
        labels under ``footage_dir``; its persons are split on their own (whole clips to
        train or val, ``footage_val_fraction``; its held-out clips are never read), so the
        other set's split stays what it was.
    """

    labels: str | None = None
    synthetic: SyntheticConfig | None = None
    synthetic_dir: str = "runs/face_data"
    footage: FootageConfig | None = None
    footage_dir: str = "runs/footage_data"
    footage_val_fraction: float = 0.15
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split_seed: int = 0


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    backbone: str = "efficientnet_lite0"
    head: str = "hyper"  # hyper | no_lda | fixed_target | regression (the ablations)
    init: str = "imagenet"  # imagenet (Lite0 only) | random | a checkpoint path
    epochs: int = 16
    batch_size: int = 16
    lr: float = 2e-5
    head_lr_mult: float = 10.0
    weight_decay: float = 5e-4
    lr_decay_every: int = 6  # epochs; the authors divide the lr by 10 every 6 epochs
    max_steps: int | None = None  # stop early (tests)
    seed: int = 0
    device: str = "auto"
    workers: int = 1
    out_dir: str = "runs/face"
    resume: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    rank: RankConfig = field(default_factory=RankConfig)
    ladder: LadderConfig = field(default_factory=LadderConfig)
    progress: bool = True


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds libraries that use the legacy global RNG
    torch.manual_seed(seed)


def _normalised(img: np.ndarray, size: int, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """A ``uint8`` HxWx3 crop as the model's ``(3, size, size)`` float input."""
    import cv2

    if img.shape[:2] != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    x = (img.astype(np.float32) - mean) / std
    return torch.from_numpy(x.transpose(2, 0, 1).copy())


class _FaceDataset(Dataset):
    def __init__(
        self, table: pd.DataFrame, size: int, mean, std, augment: AugmentConfig | None, seed: int
    ) -> None:
        self.paths = table["path"].tolist()
        self.scores = table["score"].to_numpy(np.float32)
        self.size = size
        self.mean = np.asarray(mean, np.float32) * 255
        self.std = np.asarray(std, np.float32) * 255
        self.seed = seed
        self.epoch = 0
        self.aug = None
        if augment is not None:
            import albumentations as A

            if augment.crop == "resized":
                ts = [
                    A.RandomResizedCrop(
                        size=(size, size),
                        scale=(augment.crop_scale_min, 1.0),
                        ratio=(0.95, 1.05),
                        p=1.0,
                    )
                ]
            else:  # "shift" (AugmentConfig checks the value)
                import cv2

                # crops are stored at the model's size: mirror-pad, then cut a window back
                pad = size + 2 * augment.shift_px
                ts = [
                    A.Resize(height=size, width=size, interpolation=cv2.INTER_AREA, p=1.0),
                    A.PadIfNeeded(
                        min_height=pad, min_width=pad, border_mode=cv2.BORDER_REFLECT_101, p=1.0
                    ),
                    A.RandomCrop(height=size, width=size, p=1.0),
                ]
            if augment.flip:
                ts.append(A.HorizontalFlip(p=0.5))
            if augment.color > 0:
                c = augment.color
                ts.append(
                    A.ColorJitter(
                        brightness=(1 - c, 1 + c),
                        contrast=(1 - c, 1 + c),
                        saturation=(1 - c, 1 + c),
                        hue=(0, 0),
                        p=1.0,
                    )
                )
            self.aug = A.Compose(ts, seed=seed)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:

        img = load_image(self.paths[i])
        if self.aug is not None:
            # a per-(epoch, item) seed: reproducible whatever the worker count
            self.aug.set_random_seed(self.seed * 1_000_003 + self.epoch * 100_003 + i)
            img = self.aug(image=img)["image"]
        return _normalised(img, self.size, self.mean, self.std), torch.tensor(self.scores[i])


class _RankPairs(Dataset):
    """``(milder, stronger)`` degraded copies of each train crop (see :class:`RankConfig`),
    drawn afresh every epoch from a per-(epoch, item) seed."""

    def __init__(
        self,
        table: pd.DataFrame,
        size: int,
        mean,
        std,
        rank: RankConfig,
        seed: int,
        length: int | None = None,
    ):
        unknown = set(rank.kinds) - set(KNOWN_DEGRADATIONS)
        if unknown or not rank.kinds:
            raise ValueError(f"rank.kinds: unknown degradations {sorted(unknown)} or none")
        if not (0.0 <= rank.clean_share <= 1.0 and 0.0 < rank.min_gap <= 1.0):
            raise ValueError(
                f"rank.clean_share {rank.clean_share} must lie in [0, 1] and rank.min_gap "
                f"{rank.min_gap} in (0, 1]"
            )
        self.paths = self.bases(table, rank)
        # at least one pass over the bases, and enough pairs for every step of an epoch
        self.length = max(len(self.paths), length or 0)
        self.size, self.rank, self.seed, self.epoch = size, rank, seed, 0
        self.mean = np.asarray(mean, np.float32) * 255
        self.std = np.asarray(std, np.float32) * 255

    @staticmethod
    def bases(table: pd.DataFrame, rank: RankConfig) -> list[str]:
        """The crops pairs are made from (see ``RankConfig.base_min_face_size``)."""
        t = table
        if rank.base_min_face_size > 0 and {"degradation", "face_size"} <= set(t.columns):
            t = t[(t["degradation"] == "clean") & (t["face_size"] >= rank.base_min_face_size)]
            if t.empty:
                raise ValueError(
                    f"rank.base_min_face_size={rank.base_min_face_size}: no clean train crop "
                    "of a face that large"
                )
        return t["path"].tolist()

    def __len__(self) -> int:
        return self.length

    def draw(self, i: int) -> tuple[dict, dict]:
        """The two degradation specs of item ``i`` this epoch."""
        rng = np.random.default_rng((self.seed, self.epoch, i))
        kind = str(rng.choice(self.rank.kinds))
        lo = 0.0 if rng.random() < self.rank.clean_share else float(rng.uniform(0.05, 0.7))
        hi = min(1.0, lo + self.rank.min_gap + float(rng.uniform(0.0, 0.3)))
        seed = int(rng.integers(0, 2**31 - 1))

        def spec(sev: float) -> dict:
            comps = [{"kind": kind, "severity": sev}] if sev > 0 else []
            return {"components": comps, "seed": seed}

        return spec(lo), spec(hi)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = load_image(self.paths[i % len(self.paths)])
        mild, strong = self.draw(i)
        return (
            _normalised(apply_degradation(img, mild), self.size, self.mean, self.std),
            _normalised(apply_degradation(img, strong), self.size, self.mean, self.std),
        )


class _LadderPairs(Dataset):
    """``(larger, smaller, margin)``: two rungs of one train face's resolution ladder (see
    :class:`LadderConfig`), drawn afresh every epoch from a per-(epoch, item) seed."""

    def __init__(
        self,
        ladders: pd.DataFrame,
        size: int,
        mean,
        std,
        ladder: LadderConfig,
        seed: int,
        length: int,
    ) -> None:
        self.pairs: list[list[tuple[str, str, float]]] = []
        self.large: list[int] = []  # indices into pairs of faces reduced at full size
        for _, g in ladders.groupby("face_id", sort=True):
            g = g.sort_values("scale", ascending=False)
            reduced = "zoom" in g.columns and float(g["zoom"].iloc[0]) < 1.0
            paths, scales = g["path"].tolist(), g["scale"].to_numpy(np.float64)
            # the detail a rung's crop holds: all the crop can show for a face the crop
            # reduces (zoom <= 1), 1 / zoom of it for an enlarged one
            detail = (
                np.minimum(1.0, 1.0 / g["zoom"].to_numpy(np.float64))
                if "zoom" in g.columns
                else scales
            )
            ps = [
                (paths[i], paths[j], float(np.log2(max(detail[i] / detail[j], 1.0))))
                for i in range(len(g))
                for j in range(i + 1, len(g))
                if scales[i] >= ladder.min_ratio * scales[j]
            ]
            if ps:
                if reduced:
                    self.large.append(len(self.pairs))
                self.pairs.append(ps)
        if not self.pairs:
            raise ValueError(
                f"ladder: no train face has two rungs {ladder.min_ratio}x apart in size"
            )
        self.length = max(length, len(self.pairs))
        self.size, self.ladder, self.seed, self.epoch = size, ladder, seed, 0
        self.mean = np.asarray(mean, np.float32) * 255
        self.std = np.asarray(std, np.float32) * 255

    def __len__(self) -> int:
        return self.length

    def draw(self, i: int) -> tuple[str, str, float]:
        """Item ``i``'s pair this epoch: a face (a reduced one with probability
        ``large_share``), then one of its pairs, uniformly."""
        rng = np.random.default_rng((self.seed, self.epoch, i, 7))
        # (no draw at large_share 0: the pairs stay those of runs made before it existed)
        if self.large and self.ladder.large_share > 0 and rng.random() < self.ladder.large_share:
            face = self.pairs[self.large[int(rng.integers(len(self.large)))]]
        else:
            face = self.pairs[int(rng.integers(len(self.pairs)))]
        return face[int(rng.integers(len(face)))]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        big, small, octaves = self.draw(i)
        return (
            _normalised(load_image(big), self.size, self.mean, self.std),
            _normalised(load_image(small), self.size, self.mean, self.std),
            torch.tensor(self.ladder.margin * octaves, dtype=torch.float32),
        )


def _ladder_table(labels: str, train_faces: pd.DataFrame) -> pd.DataFrame:
    """The rungs of the train split's faces, from the ``ladders.parquet`` beside ``labels``."""
    path = Path(labels).parent / "ladders.parquet"
    if not path.is_file():
        raise ValueError(
            f"ladder.weight > 0 needs {path}: build the synthetic set with "
            "data.synthetic.ladder_rungs > 0"
        )
    t = pd.read_parquet(path)
    keep = set(train_faces["face_id"]) if "face_id" in train_faces.columns else set()
    t = t[t["face_id"].isin(keep)].copy()
    t["path"] = [str(path.parent / q) for q in t["path"]]
    return t


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


def _loader(ds: Dataset, bs: int, shuffle: bool, workers: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(
        ds,
        batch_size=bs,
        shuffle=shuffle,
        num_workers=workers,
        generator=g,
        drop_last=False,
        persistent_workers=False,
    )


def _resolve_data(cfg: TrainConfig, log: Callable[[str], None]) -> tuple[pd.DataFrame, dict]:
    labels, table, lo, hi = None, None, 0.0, 100.0
    if cfg.data.synthetic is not None:
        labels = build_synthetic_set(cfg.data.synthetic, cfg.data.synthetic_dir, log)
    elif cfg.data.labels is not None:
        labels = Path(cfg.data.labels)
    elif cfg.data.footage is None:
        raise ValueError("train: set data.labels, data.synthetic or data.footage")
    if labels is not None:
        ls = load_labelled(labels)
        lo, hi = ls.score_min, ls.score_max
        table = assign_splits(
            ls.table, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed
        )
    footage = None
    if cfg.data.footage is not None:
        footage = build_footage_set(cfg.data.footage, cfg.data.footage_dir, log)
        ft = pd.read_parquet(footage)
        ft["path"] = [str(footage.parent / q) for q in ft["path"]]
        ft = assign_splits(ft, cfg.data.footage_val_fraction, 0.0, cfg.data.split_seed)
        table = ft if table is None else pd.concat([table, ft], ignore_index=True)
    info = {
        "labels": str(labels if labels is not None else footage),
        "footage": None if footage is None else str(footage),
        "score_min": lo,
        "score_max": hi,
        "n": {s: int((table["split"] == s).sum()) for s in ("train", "val", "test")},
        "identities": {
            s: int(table.loc[table["split"] == s, "identity"].nunique())
            for s in ("train", "val", "test")
        },
    }
    for s in ("train", "val"):
        if info["n"][s] == 0:
            raise ValueError(
                f"train: the {s} split is empty ({labels}): no identity group fitted its "
                "share in the order data.split_seed dealt them; try another "
                "data.split_seed or larger data.val_fraction / data.test_fraction"
            )
    return table, info


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
    table, info = _resolve_data(cfg, log)
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
    train_ds = _FaceDataset(train_tab, size, card.mean, card.std, cfg.augment, cfg.seed)
    val_ds = _FaceDataset(table[table["split"] == "val"], size, card.mean, card.std, None, 0)
    rank_ds = None
    if cfg.rank.weight > 0:
        rank_ds = _RankPairs(
            train_tab, size, card.mean, card.std, cfg.rank, cfg.seed, steps * cfg.rank.pairs
        )  # the bases repeated as needed
    ladder_ds = None
    if cfg.ladder.weight > 0:
        lad = _ladder_table(info["labels"], train_tab)
        ladder_ds = _LadderPairs(
            lad, size, card.mean, card.std, cfg.ladder, cfg.seed, steps * cfg.ladder.pairs
        )
        log(f"resolution ladders: {len(ladder_ds.pairs)} train faces, {len(lad)} rungs")
    test_tab = table[table["split"] == "test"]
    test_ds = _FaceDataset(test_tab, size, card.mean, card.std, None, 0) if len(test_tab) else None

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
        loader = _loader(train_ds, cfg.batch_size, True, cfg.workers, cfg.seed + epoch)
        t0, losses, rank_losses, ordered = time.perf_counter(), [], [], []
        ladder_losses, ladder_ordered = [], []
        rank_it = ladder_it = None
        if ladder_ds is not None:
            ladder_ds.epoch = epoch
            ladder_it = iter(
                _loader(ladder_ds, cfg.ladder.pairs, True, cfg.workers, cfg.seed + epoch)
            )
        if rank_ds is not None:
            rank_ds.epoch = epoch
            rank_it = iter(_loader(rank_ds, cfg.rank.pairs, True, cfg.workers, cfg.seed + epoch))
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
        val_loader = _loader(val_ds, 64, False, cfg.workers, 0)
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
        "config": _plain(asdict(cfg)),
        "data": info,
        "history": history,
        "best_val_srcc": best,
    }
    best_path = out / "best.pt"
    if test_ds is not None and best_path.is_file():
        best_model, _ = build_model(best_path, device=device)
        tm = iqa_metrics(
            predict(best_model, _loader(test_ds, 64, False, cfg.workers, 0), device), test_ds.scores
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
    ds = _FaceDataset(table, card.input_size, card.mean, card.std, None, 0)
    pred = predict(model, _loader(ds, batch_size, False, 0, 0), dev, flip=flip)
    return iqa_metrics(pred, ds.scores)


def split_table(cfg: TrainConfig, split: str, log: Callable[[str], None] = print) -> pd.DataFrame:
    """The faces a training run with ``cfg`` puts in ``split`` (train, val or test): its data
    resolved and split exactly as :func:`train` does (a synthetic or footage set is built
    first if its folder holds none), so a model can be tested on another recipe's split."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, not {split!r}")
    table, _ = _resolve_data(cfg, log)
    part = table[table["split"] == split].reset_index(drop=True)
    if part.empty:
        raise ValueError(f"the {split} split of this training config is empty")
    return part


def _plain(v):
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


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
