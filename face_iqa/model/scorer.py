"""Face quality scoring: aligned ``uint8`` crops in, ``float32`` quality out.

Preprocessing (input size, mean, std) comes from the checkpoint's :class:`ModelCard`; the
output is clipped to the card's ``score_range`` (0-100 for the face models; higher is better
unless the card says otherwise): the network's head is an unbounded regression, which puts
a few faces worse than anything in its training set slightly below 0 or above 100.
Inference runs under ``inference_mode`` in channels-last layout, with the backbone's batch
norms folded into its convolutions, bfloat16 autocast on a GPU and float32 on the CPU.
Test-time crops are deterministic. By default each face is scored together with its mirror
image and the two scores are averaged (``flip``): the network's score of a face and of its
mirror differ by about 4 points on average, and the average ranks faces better (held-out SRCC
0.895 -> 0.900 for the default model, see its model card).
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from face_iqa.faces.detect import resolve_device
from face_iqa.model.backbones import fold_batchnorm_
from face_iqa.model.checkpoint import ModelCard, build_model
from face_iqa.model.hyperiqa import HyperIQA

__all__ = [
    "DEFAULT_CHECKPOINT",
    "Scorer",
    "ScorerConfig",
    "build_scorer",
    "default_checkpoint",
    "mirror_averaged",
]

DEFAULT_CHECKPOINT = "face_hyperiqa_lite0.pt"


def default_checkpoint() -> Path:
    """The face-quality model embedded in the package (``face_iqa/weights/``)."""
    return Path(str(importlib.resources.files("face_iqa") / "weights" / DEFAULT_CHECKPOINT))


def mirror_averaged(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model``'s scores of the images ``x`` (N, C, H, W) averaged with those of their
    mirror images, in one forward pass over both."""
    q = model(torch.cat([x, x.flip(-1)])).float()
    return (q[: len(x)] + q[len(x) :]) / 2


@dataclass(frozen=True)
class ScorerConfig:
    """Attributes:
    checkpoint: path of a checkpoint (ours or the authors'); ``None`` for the embedded
        default face model.
    device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
    batch_size: faces per forward pass on a GPU.
    cpu_batch_size: faces per forward pass on the CPU: small batches are as fast there and
        hold less memory (``python -m bench.cpu_batches``, one thread, mirror average on,
        128 faces: 4.6 s and 0.92 GiB resident at 8 against 4.9 s and 1.70 GiB at 64).
    n_crops: test-time crops averaged per face (1: the centre crop; the authors used 25).
    resize: side the face crop is resized to before cropping; ``None`` uses the model's
        input size (so one crop is the whole face).
    seed: seed of the crop positions when ``n_crops > 1`` (the same positions for every
        face, so a face's score does not depend on its batch).
    amp: bfloat16 autocast on CUDA (ignored on the CPU, which always runs float32).
    flip: also score each crop's mirror image and average the two (twice the model's work;
        aligned faces are left-right symmetric, so the mirror is an equally valid view).
    fixed_shapes: on a GPU, pad every forward pass to ``batch_size`` faces, so that cuDNN
        plans each convolution once. Without it every new face count was planned afresh
        (1.4-1.9 s on an H200), a CPU-bound step that left the GPU idle: the pipeline's
        scorer took 39 ms of worker time a frame, 5.6 ms with it.
    """

    checkpoint: str | None = None
    device: str = "auto"
    batch_size: int = 64
    cpu_batch_size: int = 8
    n_crops: int = 1
    resize: int | None = None
    seed: int = 0
    amp: bool = True
    flip: bool = True
    fixed_shapes: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.cpu_batch_size < 1 or self.n_crops < 1:
            raise ValueError("score.batch_size, cpu_batch_size and n_crops must be >= 1")
        if self.resize is not None and self.resize < 32:
            raise ValueError(f"score.resize must be >= 32 or null, got {self.resize}")


class Scorer:
    """Scores batches of aligned face crops. Build it with :func:`build_scorer`.

    It takes ``model`` over for inference: switched to eval mode and its backbone's batch
    norms folded into the convolutions in place (same scores to float rounding; 1.4x faster
    on the CPU), so do not train or save that model afterwards."""

    def __init__(
        self, model: HyperIQA, card: ModelCard, cfg: ScorerConfig, device: torch.device
    ) -> None:
        model.eval()
        fold_batchnorm_(model.backbone)
        self.model = model.to(memory_format=torch.channels_last)
        self.card = card
        self.cfg = cfg
        self.device = device
        self.size = card.input_size
        self.resize = cfg.resize or card.input_size
        if self.resize < self.size:
            raise ValueError(
                f"score.resize ({self.resize}) is below the model's input size ({self.size})"
            )
        self._mean = torch.tensor(card.mean, device=device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(card.std, device=device).view(1, 3, 1, 1) * 255.0
        self.offsets = self._crop_offsets()
        self.pad_shapes = cfg.fixed_shapes and device.type == "cuda"
        self.oom_splits = 0  # how often a batch was split after running out of GPU memory
        # No planning pass here: PyTorch keeps cuDNN's plans per thread, and Ray Data calls
        # a worker on another thread than the one that built it, so such a pass only
        # lengthened each worker's start.

    def _crop_offsets(self) -> list[tuple[int, int]]:
        span = self.resize - self.size
        centre = (span // 2, span // 2)
        if self.cfg.n_crops == 1 or span == 0:
            return [centre] * (1 if span == 0 else self.cfg.n_crops)
        rng = np.random.default_rng(self.cfg.seed)
        return [centre] + [
            tuple(int(v) for v in rng.integers(0, span + 1, 2)) for _ in range(self.cfg.n_crops - 1)
        ]

    def _prepare(self, crops: np.ndarray, pad_to: int = 0) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device, non_blocking=True)
        if len(x) < pad_to:  # zero faces after the real ones (every face is scored alone)
            x = torch.cat([x, x.new_zeros((pad_to - len(x), *x.shape[1:]))])
        x = x.permute(0, 3, 1, 2).float()
        if x.shape[-1] != self.resize or x.shape[-2] != self.resize:
            x = F.interpolate(
                x,
                size=(self.resize, self.resize),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        return ((x - self._mean) / self._std).contiguous(memory_format=torch.channels_last)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """Score ``uint8 (N, H, W, 3)`` RGB crops; returns ``float32 (N,)`` within the card's
        ``score_range`` (a non-finite network output stays NaN: it is not a score)."""
        crops = np.asarray(crops)
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[3] != 3:
            raise ValueError(f"expected uint8 (N, H, W, 3) crops, got {crops.dtype} {crops.shape}")
        out = np.empty(len(crops), np.float32)
        bs = self.cfg.cpu_batch_size if self.device.type == "cpu" else self.cfg.batch_size
        pad_to = bs if self.pad_shapes else 0
        for s in range(0, len(crops), bs):
            out[s : s + bs] = self._score_split(crops[s : s + bs], pad_to)
        lo, hi = self.card.score_range
        return np.clip(out, lo, hi)

    def _score_split(self, crops: np.ndarray, pad_to: int = 0) -> np.ndarray:
        """Score a batch; on a GPU out-of-memory error, free the cache and score the two
        halves instead (unpadded, down to single crops), so a crowded batch costs time, not
        the run."""
        try:
            return self._score(crops, pad_to)
        except torch.OutOfMemoryError:
            if len(crops) == 1:
                raise
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.oom_splits += 1
        half = len(crops) // 2
        return np.concatenate([self._score_split(crops[:half]), self._score_split(crops[half:])])

    def _score(self, crops: np.ndarray, pad_to: int = 0) -> np.ndarray:
        use_amp = self.cfg.amp and self.device.type == "cuda"
        with (
            torch.inference_mode(),
            torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=use_amp),
        ):
            x = self._prepare(crops, pad_to)
            total = None
            for oy, ox in self.offsets:
                view = x[:, :, oy : oy + self.size, ox : ox + self.size]
                q = mirror_averaged(self.model, view) if self.cfg.flip else self.model(view)
                total = q.float() if total is None else total + q.float()
            return (total[: len(crops)] / len(self.offsets)).cpu().numpy()


def build_scorer(cfg: ScorerConfig | None = None) -> Scorer:
    """Load the checkpoint (or the embedded default) and return a ready :class:`Scorer`."""
    cfg = cfg or ScorerConfig()
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        from face_iqa.cpu_alloc import tune_cpu_malloc

        tune_cpu_malloc()  # reuse freed activations instead of faulting in new pages
    path = cfg.checkpoint if cfg.checkpoint is not None else default_checkpoint()
    model, card = build_model(path, device=device)
    return Scorer(model, card, cfg, device)
