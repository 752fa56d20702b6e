"""MTCNN face detection with facenet-pytorch's networks and the weights shipped in its wheel.

Frames in, per-frame :class:`Detections` out. Frames of one size are detected as one batch;
mixed sizes are grouped by size. Nothing is downloaded: the P/R/O-Net state dicts are read
from the installed ``facenet_pytorch`` package with ``weights_only=True``.
"""

from __future__ import annotations

import importlib.resources
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
from facenet_pytorch.models.utils.detect_face import detect_face

from face_iqa.faces.fast_mtcnn import fast_detect_face
from face_iqa.schema import check_frame

__all__ = ["DetectorConfig", "Detections", "MTCNNDetector", "build_detector", "resolve_device"]


@dataclass(frozen=True)
class DetectorConfig:
    """Detector settings; the defaults are facenet-pytorch's ``MTCNN()`` defaults.

    Attributes:
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        min_face_size: smallest face side in pixels the pyramid looks for.
        thresholds: P-Net, R-Net, O-Net score thresholds.
        factor: pyramid scale step (0 < factor < 1).
        max_side: if set, frames whose longer side exceeds it are downscaled for detection
            only; boxes and landmarks are mapped back to full-resolution pixels.
        batch_size: frames per detector call on a GPU (frames of one size only).
        cpu_batch_size: frames per detector call on the CPU. One by default: batching
            frames there was slower and held more memory (``python -m bench.cpu_batches``,
            one thread, 16 frames of 720p: 3.0 s one at a time against 4.2 s in batches of
            8, resident memory 0.95 against 1.19 GiB; 1080p 5.5 against 6.5 s, 1.22
            against 2.14 GiB).
        backend: ``fast`` (batched crops and NMS, :mod:`face_iqa.faces.fast_mtcnn`) or
            ``reference`` (facenet-pytorch's own ``detect_face``). Same weights, same rules.
    """

    device: str = "auto"
    min_face_size: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    factor: float = 0.709
    max_side: int | None = None
    batch_size: int = 16
    cpu_batch_size: int = 1
    backend: str = "fast"

    def __post_init__(self) -> None:
        if self.backend not in ("fast", "reference"):
            raise ValueError(f"detector.backend must be fast or reference, got {self.backend!r}")
        if self.min_face_size < 1:
            raise ValueError(f"detector.min_face_size must be >= 1, got {self.min_face_size}")
        if len(self.thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in self.thresholds):
            raise ValueError(
                f"detector.thresholds must be 3 values in [0, 1], got {self.thresholds}"
            )
        if not 0.0 < self.factor < 1.0:
            raise ValueError(f"detector.factor must be in (0, 1), got {self.factor}")
        if self.max_side is not None and self.max_side < 24:
            raise ValueError(f"detector.max_side must be >= 24 or null, got {self.max_side}")
        if self.batch_size < 1 or self.cpu_batch_size < 1:
            raise ValueError(
                "detector.batch_size and cpu_batch_size must be >= 1, got "
                f"{self.batch_size}, {self.cpu_batch_size}"
            )


@dataclass(frozen=True)
class Detections:
    """Faces found in one frame, sorted by detection probability (highest first).

    Attributes:
        boxes: ``float32 (N, 4)`` x1, y1, x2, y2 in frame pixels.
        probs: ``float32 (N,)`` in [0, 1].
        landmarks: ``float32 (N, 5, 2)`` left eye, right eye, nose, mouth left, mouth right.
    """

    boxes: np.ndarray
    probs: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return len(self.probs)

    @staticmethod
    def empty() -> Detections:
        return Detections(
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
            np.zeros((0, 5, 2), np.float32),
        )


def resolve_device(device: str) -> torch.device:
    """``"auto"`` becomes CUDA when available, else CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class MTCNNDetector:
    """Runs the three MTCNN stages on batches of frames.

    Build it with :func:`build_detector`; the constructor only stores ready modules.
    """

    def __init__(
        self,
        pnet: torch.nn.Module,
        rnet: torch.nn.Module,
        onet: torch.nn.Module,
        cfg: DetectorConfig,
        device: torch.device,
    ) -> None:
        self.pnet, self.rnet, self.onet = pnet, rnet, onet
        self.cfg = cfg
        self.device = device

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """Detect faces in each frame (``uint8`` HxWx3 RGB); one :class:`Detections` per frame."""
        for i, f in enumerate(frames):
            check_frame(f, f"frame {i}")
        out: list[Detections | None] = [None] * len(frames)
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, f in enumerate(frames):
            groups[f.shape].append(i)
        bs = self.cfg.cpu_batch_size if self.device.type == "cpu" else self.cfg.batch_size
        for idx in groups.values():
            for s in range(0, len(idx), bs):
                chunk = idx[s : s + bs]
                for i, det in zip(chunk, self._detect_same_size([frames[i] for i in chunk])):
                    out[i] = det
        return out  # type: ignore[return-value]

    def _detect_same_size(self, frames: list[np.ndarray]) -> list[Detections]:
        h0, w0 = frames[0].shape[:2]
        h, w = h0, w0
        if self.cfg.max_side is not None and max(h, w) > self.cfg.max_side:
            scale = self.cfg.max_side / max(h, w)
            w, h = max(1, round(w * scale)), max(1, round(h * scale))
            frames = [cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames]
        # detection pixels -> frame pixels (identity unless downscaled)
        to_frame = np.array([w0 / w, h0 / h], np.float64)
        # The pyramid's first level shrinks the frame by 12/min_face_size: a frame whose short
        # side falls below 12 px there cannot hold a face, and facenet-pytorch would crash on it.
        if min(h, w) * 12.0 / self.cfg.min_face_size < 12.0:
            return [Detections.empty() for _ in frames]
        run = fast_detect_face if self.cfg.backend == "fast" else detect_face
        with torch.inference_mode():
            batch_boxes, batch_points = run(
                np.stack(frames),
                self.cfg.min_face_size,
                self.pnet,
                self.rnet,
                self.onet,
                list(self.cfg.thresholds),
                self.cfg.factor,
                self.device,
            )
        results = []
        for boxes, points in zip(batch_boxes, batch_points):
            # numpy 2 turns facenet's per-frame results into object arrays: cast explicitly.
            b = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
            p = np.asarray(points, dtype=np.float64).reshape(-1, 5, 2)
            if len(b) == 0:
                results.append(Detections.empty())
                continue
            order = np.argsort(-b[:, 4], kind="stable")
            b, p = b[order], p[order]
            results.append(
                Detections(
                    boxes=(b[:, :4] * np.tile(to_frame, 2)).astype(np.float32),
                    probs=b[:, 4].astype(np.float32),
                    landmarks=(p * to_frame).astype(np.float32),
                )
            )
        return results


def _facenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    path = importlib.resources.files("facenet_pytorch") / "data" / f"{name}.pt"
    with importlib.resources.as_file(path) as p:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: facenet-pytorch's {name} weights are missing")
        return torch.load(p, map_location="cpu", weights_only=True)


def build_detector(cfg: DetectorConfig | None = None) -> MTCNNDetector:
    """Build the MTCNN networks, load facenet-pytorch's weights (``strict=True``), move to the
    configured device and switch to eval mode."""
    cfg = cfg or DetectorConfig()
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        from face_iqa.cpu_alloc import tune_cpu_malloc

        tune_cpu_malloc()  # reuse freed activations instead of faulting in new pages
    nets = []
    for name, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
        net = cls(pretrained=False)
        net.load_state_dict(_facenet_state_dict(name), strict=True)
        net = net.to(device).eval()
        if cfg.backend == "fast" and device.type == "cpu":
            net = net.to(memory_format=torch.channels_last)  # oneDNN's fast layout on CPU
        nets.append(net)
    return MTCNNDetector(*nets, cfg=cfg, device=device)
