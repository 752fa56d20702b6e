"""What the training loop reads: the labelled faces (:class:`FaceDataset`), the pairs of the
ranking loss (:class:`RankPairs`) and of the resolution ladder (:class:`LadderPairs`), and
the resolved table of labelled faces with their splits (:func:`resolve_data`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from face_iqa.images import load_image
from face_iqa.learn.config import AugmentConfig, LadderConfig, RankConfig, TrainConfig
from face_iqa.learn.context import build_context_set
from face_iqa.learn.degrade import KNOWN_DEGRADATIONS, apply_degradation
from face_iqa.learn.footage import build_footage_set
from face_iqa.learn.label_sets import assign_splits, load_labelled
from face_iqa.learn.photos import build_photo_copies, build_photo_ladders, build_photo_set
from face_iqa.learn.prints import build_print_set
from face_iqa.learn.synthetic import build_synthetic_set

__all__ = [
    "FaceDataset",
    "LadderPairs",
    "RankPairs",
    "ladder_table",
    "make_loader",
    "normalised",
    "resolve_data",
]


def normalised(img: np.ndarray, size: int, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """A ``uint8`` HxWx3 crop as the model's ``(3, size, size)`` float input."""
    import cv2

    if img.shape[:2] != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    x = (img.astype(np.float32) - mean) / std
    return torch.from_numpy(x.transpose(2, 0, 1).copy())


class FaceDataset(Dataset):
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
        return normalised(img, self.size, self.mean, self.std), torch.tensor(self.scores[i])


class RankPairs(Dataset):
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
        """The crops pairs are made from (see ``RankConfig.base_min_face_size``); never a
        non-face (label 0: it has no quality to lose)."""
        t = table
        if "degradation" in t.columns:
            t = t[t["degradation"] != "nonface"]
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
            normalised(apply_degradation(img, mild), self.size, self.mean, self.std),
            normalised(apply_degradation(img, strong), self.size, self.mean, self.std),
        )


class LadderPairs(Dataset):
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
            normalised(load_image(big), self.size, self.mean, self.std),
            normalised(load_image(small), self.size, self.mean, self.std),
            torch.tensor(self.ladder.margin * octaves, dtype=torch.float32),
        )


def ladder_table(labels, train_faces: pd.DataFrame) -> pd.DataFrame:
    """The rungs of the train split's faces, from the ``ladders.parquet`` beside ``labels``
    (one labels path, or several: each set's ladders that exist)."""
    paths = [
        Path(p).parent / "ladders.parquet"
        for p in ([labels] if isinstance(labels, (str, Path)) else labels)
    ]
    found = [p for p in paths if p.is_file()]
    if not found:
        raise ValueError(
            f"ladder.weight > 0 needs {paths[0]}: build the synthetic set with "
            "data.synthetic.ladder_rungs > 0 (or the photos with data.photos_ladder_rungs > 0)"
        )
    keep = set(train_faces["face_id"]) if "face_id" in train_faces.columns else set()
    parts = []
    for path in found:
        t = pd.read_parquet(path)
        t = t[t["face_id"].isin(keep)].copy()
        t["path"] = [str(path.parent / q) for q in t["path"]]
        parts.append(t)
    return pd.concat(parts, ignore_index=True)


def make_loader(
    ds: Dataset, bs: int, shuffle: bool, workers: int, seed: int, weights=None
) -> DataLoader:
    """Batches of ``ds``; with ``weights`` (one per item) ``len(ds)`` items drawn with
    replacement in proportion to them, else each item once (shuffled or in order)."""
    g = torch.Generator().manual_seed(seed)
    sampler = None
    if weights is not None:
        from torch.utils.data import WeightedRandomSampler

        sampler = WeightedRandomSampler(
            torch.as_tensor(weights, dtype=torch.double), len(ds), replacement=True, generator=g
        )
    return DataLoader(
        ds,
        batch_size=bs,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        generator=g,
        drop_last=False,
        persistent_workers=False,
    )


def resolve_data(cfg: TrainConfig, log: Callable[[str], None]) -> tuple[pd.DataFrame, dict]:
    labels, table, lo, hi = None, None, 0.0, 100.0
    if cfg.data.synthetic is not None:
        labels = build_synthetic_set(cfg.data.synthetic, cfg.data.synthetic_dir, log)
    elif cfg.data.labels is not None:
        labels = Path(cfg.data.labels)
    elif cfg.data.footage is None and cfg.data.photos is None:
        raise ValueError("train: set data.labels, data.synthetic, data.footage or data.photos")
    if labels is not None:
        ls = load_labelled(labels)
        lo, hi = ls.score_min, ls.score_max
        table = assign_splits(
            ls.table, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed
        )
        table["part"] = "labels" if cfg.data.synthetic is None else "synthetic"
    footage = None
    if cfg.data.footage is not None:
        footage = build_footage_set(cfg.data.footage, cfg.data.footage_dir, log)
        ft = pd.read_parquet(footage)
        ft["path"] = [str(footage.parent / q) for q in ft["path"]]
        ft = assign_splits(ft, cfg.data.footage_val_fraction, 0.0, cfg.data.split_seed)
        ft["part"] = "footage"
        table = ft if table is None else pd.concat([table, ft], ignore_index=True)
    photos = copies = None
    if cfg.data.photos is not None:
        photos = build_photo_set(cfg.data.photos, cfg.data.photos_dir, log)
        pt = pd.read_parquet(photos)
        pt["path"] = [str(photos.parent / q) for q in pt["path"]]
        if cfg.data.photos_sets:
            pt = pt[pt["set"].isin(cfg.data.photos_sets)].reset_index(drop=True)
        pt = assign_splits(pt, cfg.data.photos_val_fraction, 0.0, cfg.data.split_seed)
        pt["part"] = "photos"
        if cfg.data.photos_ladder_rungs:
            build_photo_ladders(
                photos,
                pt[pt["split"] == "train"],
                cfg.data.photos_ladder_rungs,
                cfg.data.photos_ladder_min_face,
                log,
                jpeg=tuple(cfg.data.photos_ladder_jpeg) or None,
            )
        if cfg.data.photos_copies:
            copies = build_photo_copies(
                photos,
                cfg.data.photos_copies_kind,
                cfg.data.photos_copies,
                cfg.data.photos_copies_dir,
                cfg.data.photos.seed,
                log,
            )
            cp = pd.read_parquet(copies)
            cp["path"] = [str(copies.parent / q) for q in cp["path"]]
            person_split = pt.drop_duplicates("identity").set_index("identity")["split"]
            cp["split"] = cp["identity"].map(person_split)
            cp = cp[cp["split"].notna()].reset_index(drop=True)  # people of photos_sets only
            cp["part"] = "photos"
            pt = pd.concat([pt, cp], ignore_index=True)
        table = pt if table is None else pd.concat([table, pt], ignore_index=True)
    prints = None
    if cfg.data.prints:
        if table is None:
            raise ValueError("train: data.prints are non-faces to add to a set of faces")
        prints = build_print_set(cfg.data.prints, cfg.data.prints_dir, cfg.seed, log=log)
        pr = pd.read_parquet(prints)
        pr["path"] = [str(prints.parent / q) for q in pr["path"]]
        pr["split"] = np.where(pr.index % 10 == 9, "val", "train")
        pr["part"] = "prints"
        table = pd.concat([table, pr], ignore_index=True)
    context = None
    if cfg.data.context:
        if footage is None:
            raise ValueError(
                "train: data.context takes the surroundings of data.footage's faces; "
                "set data.footage"
            )
        context = build_context_set(
            footage, cfg.data.context, cfg.data.context_dir, cfg.seed, log=log
        )
        cx = pd.read_parquet(context)
        cx["path"] = [str(context.parent / q) for q in cx["path"]]
        person_split = ft.drop_duplicates("identity").set_index("identity")["split"]
        cx["split"] = cx["identity"].map(person_split).fillna("train")
        cx["part"] = "context"
        table = pd.concat([table, cx], ignore_index=True)
    files = (labels, footage, photos, copies, prints, context)
    info = {
        "labels": str(next(p for p in files if p is not None)),
        "label_files": [str(p) for p in files if p is not None],
        "footage": None if footage is None else str(footage),
        "photos": None if photos is None else str(photos),
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
