"""The training recipe as typed, frozen settings: what data, which augmentation, the ranking
and ladder losses, the optimiser. YAML presets (``configs/train_*.yaml``) override them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from face_iqa.learn.degrade import DEGRADATIONS
from face_iqa.learn.footage import FootageConfig
from face_iqa.learn.photos import PhotoSetConfig
from face_iqa.learn.synthetic import SyntheticConfig

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "LadderConfig",
    "RankConfig",
    "TrainConfig",
    "plain_config",
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
    :mod:`face_iqa.learn.degrade`); the milder copy must score at least ``margin`` points higher.
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
    footage: real footage labelled by recognition (:mod:`face_iqa.learn.footage`), added to the
        labels under ``footage_dir``; its persons are split on their own (whole clips to
        train or val, ``footage_val_fraction``; its held-out clips are never read), so the
        other set's split stays what it was.
    photos: real photos of known people labelled by recognition
        (:mod:`face_iqa.learn.photos`), added under ``photos_dir``; their people are split
        on their own (``photos_val_fraction`` of them to val; the held-out people are never
        read). ``photos_sets``: only the photos of these sets (empty: all), the set built
        once for all of them.
    photos_ladder_rungs: when above 0, the train photo faces of at least
        ``photos_ladder_min_face`` pixels also get a resolution ladder of this many rungs
        (:func:`face_iqa.learn.photos.build_photo_ladders`), ordered by ``ladder`` beside the
        synthetic set's: large real faces, which the synthetic set has few of.
        ``photos_ladder_jpeg`` (lowest, highest quality; empty: none): each rung saved as a
        JPEG of a quality in that range, as each size of a photo is a file of its own.
    photos_copies: when above 0, each photo face also gets this many copies damaged by one
        kind, ``photos_copies_kind`` (:func:`face_iqa.learn.photos.build_photo_copies`),
        labelled by their own matching, under ``photos_copies_dir``; they follow their
        person's split and are drawn as photo rows. For a kind the set's mixed damage
        draws too rarely to teach (``low_light``).
    synthetic_weight / photos_weight / footage_weight / nonface_weight: how often a train
        row of the synthetic (or ``labels``) set, of the photo set, of the footage set, or a
        non-face (label 0) is drawn: an epoch draws as many rows as the train split has,
        with replacement, in proportion to these weights (all 1: each row once, shuffled).
    prints: when above 0, this many drawn face-like graphics (skulls, smileys, cartoons,
        blobs: :mod:`face_iqa.learn.prints`) are added under ``prints_dir`` as non-faces
        (label 0), drawn ``prints_weight`` times as often as a synthetic row (a tenth of
        them in val).
    context: when above 0, at most this many off-face crops around the footage set's faces
        (chest, hands, prints worn on the cloth, shoulders, background:
        :mod:`face_iqa.learn.context`) are added under ``context_dir`` as non-faces (label
        0), each split with its clip's person and drawn ``context_weight`` times as often as
        a synthetic row. Needs ``footage``.
    """

    labels: str | None = None
    synthetic: SyntheticConfig | None = None
    synthetic_dir: str = "runs/face_data"
    footage: FootageConfig | None = None
    footage_dir: str = "runs/footage_data"
    footage_val_fraction: float = 0.15
    photos: PhotoSetConfig | None = None
    photos_dir: str = "runs/photo_data"
    photos_val_fraction: float = 0.1
    photos_sets: tuple[str, ...] = ()
    photos_ladder_rungs: int = 0
    photos_ladder_min_face: float = 160.0
    photos_ladder_jpeg: tuple[int, ...] = ()
    photos_copies: int = 0
    photos_copies_kind: str = "low_light"
    photos_copies_dir: str = "runs/photo_copies"
    synthetic_weight: float = 1.0
    photos_weight: float = 1.0
    footage_weight: float = 1.0
    nonface_weight: float = 1.0
    prints: int = 0
    prints_dir: str = "runs/prints"
    prints_weight: float = 1.0
    context: int = 0
    context_dir: str = "runs/context"
    context_weight: float = 1.0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split_seed: int = 0

    def __post_init__(self) -> None:
        weights = (
            self.synthetic_weight,
            self.photos_weight,
            self.footage_weight,
            self.nonface_weight,
            self.prints_weight,
            self.context_weight,
        )
        jpeg = self.photos_ladder_jpeg
        if jpeg and not (len(jpeg) == 2 and 1 <= jpeg[0] <= jpeg[1] <= 100):
            raise ValueError(f"data.photos_ladder_jpeg: [lowest, highest] in 1-100, got {jpeg}")
        if (
            min(weights) <= 0
            or self.photos_ladder_rungs < 0
            or self.photos_ladder_rungs == 1
            or self.photos_copies < 0
            or self.prints < 0
            or self.context < 0
        ):
            raise ValueError(
                f"data: synthetic_weight, photos_weight, footage_weight, nonface_weight, "
                f"prints_weight and context_weight > 0 (got {weights}), prints >= 0 (got "
                f"{self.prints}), context >= 0 (got {self.context}), photos_copies >= 0 (got "
                f"{self.photos_copies}) "
                f"and photos_ladder_rungs 0 or >= 2 (got {self.photos_ladder_rungs}) expected"
            )

    def row_weights(self, table: pd.DataFrame) -> np.ndarray | None:
        """Each row's draw weight (see the attributes), from its ``part`` and
        ``degradation``; None when every weight is 1."""
        if (
            self.synthetic_weight
            == self.photos_weight
            == self.footage_weight
            == self.nonface_weight
            == self.prints_weight
            == self.context_weight
            == 1.0
        ):
            return None
        part = table["part"].to_numpy()
        w = np.full(len(table), self.synthetic_weight)
        w[part == "photos"] = self.photos_weight
        w[part == "footage"] = self.footage_weight
        if "degradation" in table.columns:
            w[(table["degradation"] == "nonface").to_numpy()] = self.nonface_weight
        w[part == "prints"] = self.prints_weight
        w[part == "context"] = self.context_weight
        return w


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


def plain_config(v):
    """``asdict`` of a config with tuples as lists: what JSON and YAML write back."""
    if isinstance(v, dict):
        return {k: plain_config(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain_config(x) for x in v]
    return v
