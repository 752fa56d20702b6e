import json
import math
import pickle

import pytest
import torch

from face_iqa.model.checkpoint import (
    CheckpointError,
    ModelCard,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from face_iqa.model.hyperiqa import HyperIQA, HyperIQAConfig, target_forward
from tests.conftest import SHARED, shared_path  # noqa: F401


def parity_fixture() -> dict:
    p = shared_path("..", "fixtures", "hyperiqa_parity", "parity.json")
    return json.loads(p.read_text())


def authors_state_dict(fx: dict) -> dict[str, torch.Tensor]:
    """The fixture's recipe: the i-th key's tensor drawn from a generator seeded with i."""
    out = {}
    for i, (key, shape) in enumerate(fx["state_dict"]):
        g = torch.Generator().manual_seed(i)
        shape = tuple(shape)
        if key.endswith("num_batches_tracked"):
            t = torch.zeros(shape, dtype=torch.long)
        elif key.endswith("running_var"):
            t = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean"):
            t = 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1 and ("bn" in key or "downsample.1" in key):
            base = 1.0 if key.endswith("weight") else 0.0
            t = base + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:
            t = 0.1 * torch.randn(shape, generator=g)
        else:
            t = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        out[key] = t
    return out


@pytest.fixture(scope="module")
def authors_pkl(tmp_path_factory):
    fx = parity_fixture()
    path = tmp_path_factory.mktemp("ckpt") / "koniq_pretrained.pkl"
    torch.save(authors_state_dict(fx), path)
    return path, fx


@pytest.mark.slow
def test_parity_with_authors_model(authors_pkl):
    path, fx = authors_pkl
    assert fx["hyper_net_args"] == [16, 112, 224, 112, 56, 28, 14, 7]
    model, card = build_model(path)
    assert card.arch == HyperIQAConfig()
    assert "KonIQ" in card.trained_on
    x = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(1234))
    with torch.inference_mode():
        vec, params = model.forward_parts(x)
        scores = target_forward(vec, params)
    expected = torch.tensor(fx["expected_scores"])
    assert torch.allclose(scores, expected, atol=1e-4), (scores, expected)
    exp_vec = torch.tensor(fx["expected_target_in_vec_first8"])
    assert torch.allclose(vec[:, :8], exp_vec, atol=1e-4)
    # self-adaptive: two different images get different target-net weights
    for w in params.weights:
        assert (w[0] - w[1]).abs().max() > 1e-4


def _grouped_conv_target(vec, params):
    """The authors' TargetFC: a grouped 1x1 convolution, one group per image."""
    import torch.nn.functional as F

    b = vec.shape[0]
    h = vec.reshape(1, -1, 1, 1)
    for i, (w, bias) in enumerate(zip(params.weights, params.biases)):
        out_f = w.shape[1]
        h = F.conv2d(h, w.reshape(b * out_f, -1, 1, 1), bias.reshape(-1), groups=b)
        if i < len(params.weights) - 1:
            h = torch.sigmoid(h)
    return h.reshape(b)


@pytest.mark.parametrize("backbone", ["resnet50", "efficientnet_lite0"])
def test_batched_target_equals_grouped_conv(backbone):
    torch.manual_seed(0)
    model = HyperIQA(HyperIQAConfig.for_backbone(backbone)).eval()
    x = torch.randn(3, 3, 224, 224)
    with torch.inference_mode():
        vec, params = model.forward_parts(x)
        ours = target_forward(vec, params)
        ref = _grouped_conv_target(vec, params)
        # one image alone gives the same score as inside the batch
        alone = model(x[1:2])
    assert vec.shape == (3, 224)
    assert [tuple(w.shape[1:]) for w in params.weights] == [
        (112, 224),
        (56, 112),
        (28, 56),
        (14, 28),
        (1, 14),
    ]
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone, ours[1:2], atol=1e-4, rtol=1e-4)


def test_round_trip_identical_scores(tmp_path):
    torch.manual_seed(1)
    card = ModelCard(
        arch=HyperIQAConfig.for_backbone("efficientnet_lite0"),
        trained_on="test",
        metrics={"srcc": 0.5},
    )
    model = HyperIQA(card.arch).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        before = model(x)
    path = save_checkpoint(model, card, tmp_path / "m.pt")
    loaded, card2 = build_model(path)
    assert card2 == card
    with torch.inference_mode():
        assert torch.equal(loaded(x), before)


def test_bad_checkpoints_fail_clearly(tmp_path):
    card = ModelCard(arch=HyperIQAConfig.for_backbone("efficientnet_lite0"))
    good = save_checkpoint(HyperIQA(card.arch), card, tmp_path / "good.pt")

    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"trunc\.pt.*(truncated|corrupt)"):
        build_model(trunc)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    with pytest.raises(CheckpointError, match=r"evil\.pt.*refused"):
        build_model(evil)

    obj = torch.load(good, weights_only=True)
    obj["state_dict"].pop("lda.fcs.0.bias")
    obj["state_dict"]["extra.weight"] = torch.zeros(1)
    wrong_keys = tmp_path / "keys.pt"
    torch.save(obj, wrong_keys)
    with pytest.raises(CheckpointError, match=r"keys\.pt.*missing keys.*lda\.fcs\.0\.bias"):
        build_model(wrong_keys)

    obj = torch.load(good, weights_only=True)
    obj["state_dict"]["lda.fcs.0.bias"] = torch.zeros(3)
    wrong_shape = tmp_path / "shape.pt"
    torch.save(obj, wrong_shape)
    with pytest.raises(CheckpointError, match=r"shape\.pt.*lda\.fcs\.0\.bias.*\(3,\)"):
        build_model(wrong_shape)

    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match=r"other\.pt.*not a HyperIQA"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")


def test_authors_unknown_key_named(tmp_path):
    from face_iqa.model.checkpoint import map_authors_keys

    with pytest.raises(CheckpointError, match="res.weird"):
        map_authors_keys({"res.weird": torch.zeros(1)}, "x.pkl")


def test_half_checkpoint_is_smaller_and_close(tmp_path):
    torch.manual_seed(2)
    card = ModelCard(arch=HyperIQAConfig.for_backbone("efficientnet_lite0"))
    model = HyperIQA(card.arch).eval()
    full = save_checkpoint(model, card, tmp_path / "f.pt")
    half = save_checkpoint(model, card, tmp_path / "h.pt", half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, _ = build_model(half)
    assert next(loaded.parameters()).dtype == torch.float32
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x), atol=0.05, rtol=0.01)


@pytest.mark.parametrize("head", ["no_lda", "fixed_target", "regression"])
def test_ablation_heads_build_train_and_round_trip(tmp_path, head):
    from face_iqa.model.backbones import BACKBONE_CHANNELS

    torch.manual_seed(0)
    arch = HyperIQAConfig.for_backbone("efficientnet_lite0", head)
    model = HyperIQA(arch)
    x = torch.randn(3, 3, 224, 224)
    out = model(x)
    assert out.shape == (3,) and torch.isfinite(out).all()
    head_ids = {id(p) for p in model.head_parameters()}
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    assert head_ids and not head_ids & backbone_ids
    assert head_ids | backbone_ids == {id(p) for p in model.parameters()}
    assert id(model.output_bias()) in head_ids
    if head == "regression":
        assert not hasattr(model, "lda") and not hasattr(model, "hyper")
        with pytest.raises(ValueError, match="no target network"):
            model.forward_parts(x)
    else:
        vec, params = model.forward_parts(x)
        assert vec.shape == (3, arch.target_in)
        assert not hasattr(model, "hyper") or head == "no_lda"
        if head == "fixed_target":  # one target network for every image
            assert torch.equal(params.weights[0][0], params.weights[0][2])
        else:  # no local taps: the first layer reads stage 4 alone
            assert len(model.lda.fcs) == 1
            assert model.lda.fcs[0].in_features == BACKBONE_CHANNELS["efficientnet_lite0"][3]
    out.sum().backward()
    assert model.output_bias().grad is not None
    model.eval()
    card = ModelCard(arch=arch, trained_on="test")
    path = save_checkpoint(model, card, tmp_path / "m.pt")
    loaded, card2 = build_model(path)
    assert card2.arch.head == head
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x))
    # the full model's card is written as before: no head key
    assert "head" not in HyperIQAConfig.for_backbone("efficientnet_lite0").to_dict()
    with pytest.raises(ValueError, match="unknown head"):
        HyperIQAConfig(head="mlp")
