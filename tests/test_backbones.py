import cv2
import numpy as np
import torch

from face_iqa.backbones import EfficientNetLite0, build_backbone
from face_iqa.checkpoint import IMAGENET_MEAN, IMAGENET_STD, imagenet_lite0_state


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
    from face_iqa.backbones import SameConv2d

    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    conv.weight.data.zero_()
    conv.weight.data[0, 0, 0, 0] = 1.0  # picks the top-left tap
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y = conv(x)
    # TF SAME on 4 -> 2 with k=3, s=2 pads 1 pixel at the end only: top-left tap = x[0, 0]
    assert y.shape[-2:] == (2, 2) and y[0, 0, 0, 0].item() == 0.0 and y[0, 0, 1, 1].item() == 10.0
