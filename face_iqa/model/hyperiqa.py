"""HyperIQA (Su et al., CVPR 2020), as the authors published it (github SSL92/hyperIQA, MIT).

A backbone with four stages feeds (a) local distortion-aware (LDA) taps that build the
target network's input vector and (b) a hyper network that generates, per image, the
weights and biases of a small target network, which predicts the quality. Modules only:
no file I/O; build and load through :mod:`face_iqa.model.checkpoint`.

The authors apply each image's target weights with a grouped convolution; here they are
applied as one batched matrix product (``baddbmm``), which computes the same numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from face_iqa.model.backbones import BACKBONE_CHANNELS, build_backbone

__all__ = ["HEADS", "HyperIQA", "HyperIQAConfig", "TargetParams", "target_forward"]

# The full model and the three ablations of the paper's Table 5, on the same backbone:
# ``hyper`` the authors' design; ``no_lda`` without the local distortion-aware taps (the
# target network's input is the last stage alone); ``fixed_target`` one learned target
# network shared by every image instead of generated weights; ``regression`` the backbone's
# pooled last stage through a plain two-layer regression head.
HEADS = ("hyper", "no_lda", "fixed_target", "regression")


@dataclass(frozen=True)
class HyperIQAConfig:
    """Architecture arguments (stored in every checkpoint).

    The defaults are the authors' ``HyperNet(16, 112, 224, 112, 56, 28, 14, 7)`` on ResNet-50
    for 224x224 inputs. ``hyper_hidden`` are the widths of the 1x1 convs that reduce the last
    stage to ``hyper_in`` channels (2048 -> 1024 -> 512 -> 112 for ResNet-50).
    """

    backbone: str = "resnet50"
    lda_out: int = 16
    hyper_in: int = 112
    target_in: int = 224
    target_fc: tuple[int, int, int, int] = (112, 56, 28, 14)
    feature_size: int = 7
    hyper_hidden: tuple[int, int] = (1024, 512)
    lda_channels: tuple[int, int, int] = (16, 32, 64)
    lda_pool: int = 7
    head: str = "hyper"

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}: one of {', '.join(HEADS)}")
        if self.backbone not in BACKBONE_CHANNELS:
            raise ValueError(f"unknown backbone {self.backbone!r}")
        sizes = (self.target_in, *self.target_fc)
        for a, b in zip(sizes[:-1], sizes[1:]):
            if (a * b) % (self.feature_size**2):
                raise ValueError(
                    f"target layer {a}x{b} is not divisible by feature_size^2 "
                    f"({self.feature_size}^2)"
                )
        if self.target_in <= 3 * self.lda_out:
            raise ValueError("target_in must exceed 3 * lda_out")

    @property
    def input_size(self) -> int:
        """Input side in pixels: the last stage has stride 32."""
        return self.feature_size * 32

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["head"] == "hyper":
            del d["head"]  # the full model's cards read as before, by every version
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @staticmethod
    def for_backbone(backbone: str, head: str = "hyper") -> HyperIQAConfig:
        hidden = {"resnet50": (1024, 512), "efficientnet_lite0": (512, 256)}[backbone]
        return HyperIQAConfig(backbone=backbone, hyper_hidden=hidden, head=head)


@dataclass
class TargetParams:
    """Per-image target network: ``weights[i]`` is ``(B, out, in)``, ``biases[i]`` ``(B, out)``
    for the five layers 224->112->56->28->14->1."""

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]


def target_forward(x: torch.Tensor, params: TargetParams) -> torch.Tensor:
    """Run the per-image target networks: ``x`` ``(B, target_in)`` -> quality ``(B,)``.

    A sigmoid follows each of the first four layers, none the last (the authors' TargetNet).
    """
    h = x.unsqueeze(2)
    last = len(params.weights) - 1
    for i, (w, b) in enumerate(zip(params.weights, params.biases)):
        h = torch.baddbmm(b.unsqueeze(2), w, h)
        if i < last:
            h = torch.sigmoid(h)
    return h.reshape(-1)


class LDA(nn.Module):
    """Local distortion-aware taps: stages 1-3 through a 1x1 conv, a ``pool``x``pool``
    average pool and a linear layer to ``lda_out`` each; stage 4 through the average pool
    and a linear layer to ``target_in - 3 * lda_out``."""

    def __init__(self, cfg: HyperIQAConfig, channels: tuple[int, int, int, int]) -> None:
        super().__init__()
        side = cfg.input_size
        # Without the local taps (the ``no_lda`` ablation) stage 4 fills the whole vector.
        self.local = cfg.head != "no_lda"
        fcs = []
        if self.local:
            self.convs = nn.ModuleList(
                nn.Conv2d(c, o, 1, bias=False) for c, o in zip(channels[:3], cfg.lda_channels)
            )
            for stride, o in zip((4, 8, 16), cfg.lda_channels):
                cells = (side // stride // cfg.lda_pool) ** 2
                fcs.append(nn.Linear(o * cells, cfg.lda_out))
        cells4 = (side // 32 // cfg.lda_pool) ** 2
        width4 = cfg.target_in - 3 * cfg.lda_out if self.local else cfg.target_in
        fcs.append(nn.Linear(channels[3] * cells4, width4))
        self.fcs = nn.ModuleList(fcs)
        self.pool = nn.AvgPool2d(cfg.lda_pool, stride=cfg.lda_pool)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        if not self.local:
            return self.fcs[0](torch.flatten(self.pool(feats[3]), 1))
        outs = []
        for i, f in enumerate(feats):
            if i < 3:
                f = self.convs[i](f)
            # flatten channel-major (C, H, W), as the authors' .view(B, -1) does
            outs.append(self.fcs[i](torch.flatten(self.pool(f), 1)))
        return torch.cat(outs, dim=1)


class HyperHead(nn.Module):
    """The hyper network: 1x1 convs reduce the last stage to ``hyper_in`` channels; 3x3
    convs emit the target layers' weights; global average pooling plus linear layers emit
    the biases and the last layer's weights."""

    def __init__(self, cfg: HyperIQAConfig, c4: int) -> None:
        super().__init__()
        h1, h2 = cfg.hyper_hidden
        self.reduce = nn.Sequential(
            nn.Conv2d(c4, h1, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(h1, h2, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(h2, cfg.hyper_in, 1),
            nn.ReLU(inplace=True),
        )
        sizes = (cfg.target_in, *cfg.target_fc)
        self.shapes = [(o, i) for i, o in zip(sizes[:-1], sizes[1:])]
        fs2 = cfg.feature_size**2
        self.w_convs = nn.ModuleList(
            nn.Conv2d(cfg.hyper_in, o * i // fs2, 3, padding=1) for o, i in self.shapes
        )
        self.b_fcs = nn.ModuleList(nn.Linear(cfg.hyper_in, o) for o, _ in self.shapes)
        self.w5_fc = nn.Linear(cfg.hyper_in, cfg.target_fc[-1])
        self.b5_fc = nn.Linear(cfg.hyper_in, 1)
        self.feature_size = cfg.feature_size

    def forward(self, c4: torch.Tensor) -> TargetParams:
        feat = self.reduce(c4)
        if feat.shape[-1] != self.feature_size or feat.shape[-2] != self.feature_size:
            raise ValueError(
                f"hyper network expects {self.feature_size}x{self.feature_size} features, got "
                f"{tuple(feat.shape[-2:])}: the input must be {self.feature_size * 32} pixels"
            )
        b = feat.shape[0]
        pooled = feat.mean(dim=(2, 3))
        weights = [conv(feat).reshape(b, o, i) for conv, (o, i) in zip(self.w_convs, self.shapes)]
        biases = [fc(pooled) for fc in self.b_fcs]
        weights.append(self.w5_fc(pooled).reshape(b, 1, -1))
        biases.append(self.b5_fc(pooled))
        return TargetParams(weights, biases)


class FixedTarget(nn.Module):
    """The ``fixed_target`` ablation: the target network's five layers as ordinary learned
    layers, the same for every image, returned in the shape the hyper network's are."""

    def __init__(self, cfg: HyperIQAConfig) -> None:
        super().__init__()
        sizes = (cfg.target_in, *cfg.target_fc, 1)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:]))

    def forward(self, c4: torch.Tensor) -> TargetParams:
        b = c4.shape[0]
        return TargetParams(
            [fc.weight.expand(b, -1, -1) for fc in self.layers],
            [fc.bias.expand(b, -1) for fc in self.layers],
        )


class RegressionHead(nn.Module):
    """The ``regression`` ablation: the last stage, globally average-pooled, through a
    linear layer to ``target_fc[0]`` units, a ReLU and a linear layer to the score."""

    def __init__(self, cfg: HyperIQAConfig, c4: int) -> None:
        super().__init__()
        width = cfg.target_fc[0]
        self.fc1 = nn.Linear(c4, width)
        self.fc2 = nn.Linear(width, 1)

    def forward(self, c4: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(c4.mean(dim=(2, 3))))).reshape(-1)


class HyperIQA(nn.Module):
    """HyperIQA: normalised images ``(B, 3, S, S)`` -> quality ``(B,)``.

    ``cfg.head`` other than ``"hyper"`` builds one of the ablations (see :data:`HEADS`).
    """

    def __init__(self, cfg: HyperIQAConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or HyperIQAConfig()
        channels = BACKBONE_CHANNELS[self.cfg.backbone]
        self.backbone = build_backbone(self.cfg.backbone)
        head = self.cfg.head
        if head == "regression":
            self.regressor = RegressionHead(self.cfg, channels[3])
        else:
            self.lda = LDA(self.cfg, channels)
            if head == "fixed_target":
                self.target = FixedTarget(self.cfg)
            else:
                self.hyper = HyperHead(self.cfg, channels[3])
        self.reset_head()

    def _head_modules(self) -> list[nn.Module]:
        return [m for m in self.children() if m is not self.backbone]

    def reset_head(self) -> None:
        """The authors' initialisation of the LDA taps and the hyper network: Kaiming-normal
        weights (their hyper layers and LDA layers), default biases; the ablations' heads
        likewise."""
        for part in self._head_modules():
            for m in part.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(m.weight)

    def output_bias(self) -> torch.Tensor:
        """The bias of the score's last layer (training starts it at the mean label)."""
        if self.cfg.head == "regression":
            return self.regressor.fc2.bias
        if self.cfg.head == "fixed_target":
            return self.target.layers[-1].bias
        return self.hyper.b5_fc.bias

    def forward_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, TargetParams]:
        """The target network's input vector ``(B, target_in)`` and its per-image weights
        (for ``fixed_target``, the shared weights repeated per image)."""
        if self.cfg.head == "regression":
            raise ValueError("the regression head has no target network")
        feats = self.backbone(x)
        weights = self.target if self.cfg.head == "fixed_target" else self.hyper
        return self.lda(feats), weights(feats[3])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.head == "regression":
            return self.regressor(self.backbone(x)[3])
        vec, params = self.forward_parts(x)
        return target_forward(vec, params)

    def head_parameters(self) -> list[nn.Parameter]:
        """LDA and hyper network parameters (trained at 10x the backbone's rate); for an
        ablation, its head's."""
        return [p for part in self._head_modules() for p in part.parameters()]
