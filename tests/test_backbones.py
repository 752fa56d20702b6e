import cv2
import numpy as np
import torch

from face_iqa.model.backbones import EfficientNetLite0, build_backbone
from face_iqa.model.checkpoint import IMAGENET_MEAN, IMAGENET_STD, imagenet_lite0_state


def _imagenet_input(img: np.ndarray) -> torch.Tensor:
    h, w = img.shape[:2]
    s = 256 / min(h, w)
    img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    h, w = img.shape[:2]
    img = img[(h - 224) // 2 : (h - 224) // 2 + 224, (w - 224) // 2 : (w - 224) // 2 + 224]
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (x - mean) / std


def test_lite0_loads_strict_and_classifies_a_cat():
    from skimage import data

    model = EfficientNetLite0()
    model.load_state_dict(imagenet_lite0_state(), strict=True)
    model.eval()
    with torch.inference_mode():
        logits = model(_imagenet_input(data.chelsea()))
    assert logits.argmax(1).item() == 285  # ImageNet class 285: Egyptian cat
    # and it is not a cat-of-any-kind lottery: a rocket photo is no cat
    with torch.inference_mode():
        other = model(_imagenet_input(data.rocket())).argmax(1).item()
    assert other not in range(281, 294)


def test_stage_channels_and_strides():
    x = torch.zeros(1, 3, 224, 224)
    for name, chans in [
        ("resnet50", (256, 512, 1024, 2048)),
        ("efficientnet_lite0", (24, 40, 112, 320)),
    ]:
        feats = build_backbone(name).eval()(x)
        assert [f.shape[1] for f in feats] == list(chans)
        assert [f.shape[-1] for f in feats] == [56, 28, 14, 7]


def test_same_padding_is_asymmetric_like_tensorflow():
    from face_iqa.model.backbones import SameConv2d

    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    conv.weight.data.zero_()
    conv.weight.data[0, 0, 0, 0] = 1.0  # picks the top-left tap
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y = conv(x)
    # TF SAME on 4 -> 2 with k=3, s=2 pads 1 pixel at the end only: top-left tap = x[0, 0]
    assert y.shape[-2:] == (2, 2) and y[0, 0, 0, 0].item() == 0.0 and y[0, 0, 1, 1].item() == 10.0


def test_same_padding_matches_explicit_pad_at_every_size_and_stride():
    """The symmetric case lets the convolution pad; it must equal padding first."""
    import math

    import torch.nn.functional as F

    from face_iqa.model.backbones import SameConv2d

    torch.manual_seed(0)
    for k, stride, size in [(3, 1, 9), (5, 1, 8), (3, 2, 8), (3, 2, 9), (5, 2, 11), (1, 1, 7)]:
        conv = SameConv2d(4, 4, k, stride=stride, groups=4, bias=True)
        x = torch.randn(2, 4, size, size)
        p = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
        padded = F.pad(x, [p // 2, p - p // 2] * 2)
        want = F.conv2d(padded, conv.weight, conv.bias, stride, groups=4)
        got = conv(x)
        assert got.shape == want.shape == (2, 4, math.ceil(size / stride), math.ceil(size / stride))
        torch.testing.assert_close(got, want)


def test_batchnorm_folding_keeps_outputs():
    """Folded backbones (the scorer's) give the same stage outputs as the unfolded ones,
    with non-trivial running statistics; folding needs eval mode and is idempotent."""
    import copy

    import pytest
    from torch import nn

    from face_iqa.model.backbones import fold_batchnorm_

    torch.manual_seed(0)
    x = torch.randn(2, 3, 96, 96)
    for name in ("efficientnet_lite0", "resnet50"):
        net = build_backbone(name)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
        with pytest.raises(ValueError, match="eval-mode"):
            fold_batchnorm_(copy.deepcopy(net).train())
        net.eval()
        with torch.no_grad():
            want = net(x)
            folded = fold_batchnorm_(copy.deepcopy(net))
            assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
            got = folded(x)
            again = fold_batchnorm_(folded)(x)
        for w, g, a in zip(want, got, again):
            torch.testing.assert_close(g, w, rtol=1e-3, atol=1e-3 * float(w.abs().max()))
            torch.testing.assert_close(a, g)
