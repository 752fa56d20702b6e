"""Scorer throughput against a bare torchvision ResNet-50 forward, in one process.

    python -m bench.score_bench [--device auto] [--batch 256] [--iters 10]

Same batch size, same dtype (bfloat16 autocast on GPU, float32 on CPU), channels-last for
both. HyperIQA-ResNet50 is timed through the production :class:`Scorer` (uint8 crops in,
preprocessing included); the baseline gets a ready normalised tensor, so the ratio is a
conservative figure for our side. Prints faces/s and the ratio.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torchvision

from bench.common import describe_machine, timed
from face_iqa.faces.detect import resolve_device
from face_iqa.model.checkpoint import ModelCard
from face_iqa.model.hyperiqa import HyperIQA, HyperIQAConfig
from face_iqa.model.scorer import Scorer, ScorerConfig


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=None, help="default: 256 on GPU, 32 on CPU")
    ap.add_argument("--iters", type=int, default=None, help="default: 20 on GPU, 3 on CPU")
    ap.add_argument("--backbones", default="resnet50,efficientnet_lite0")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    bs = args.batch or (256 if gpu else 32)
    iters = args.iters or (20 if gpu else 3)
    warm = 3 if gpu else 1
    dtype = "bfloat16 autocast" if gpu else "float32"
    print(describe_machine(device))
    print(f"batch={bs} dtype={dtype} iters={iters}")

    base = torchvision.models.resnet50(weights=None).to(device).eval()
    base = base.to(memory_format=torch.channels_last)
    x = torch.randn(bs, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)

    def run_base() -> None:
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=gpu):
            base(x)

    t_base = timed(run_base, device, warm, iters)
    res = {"resnet50_faces_per_s": bs / t_base}
    print(f"torchvision resnet50 (bare forward): {bs / t_base:10.1f} faces/s")

    crops = np.random.default_rng(0).integers(0, 256, (bs, 224, 224, 3), dtype=np.uint8)
    for name in args.backbones.split(","):
        card = ModelCard(arch=HyperIQAConfig.for_backbone(name))
        scorer = Scorer(  # the network alone, like the baseline (the default also scores mirrors)
            HyperIQA(card.arch).to(device).eval(),
            card,
            ScorerConfig(device=str(device), batch_size=bs, flip=False),
            device,
        )
        t = timed(lambda s=scorer: s(crops), device, warm, iters)
        res[f"hyperiqa_{name}_faces_per_s"] = bs / t
        print(
            f"HyperIQA-{name:<18} (scorer): {bs / t:10.1f} faces/s  "
            f"ratio vs resnet50 = {t_base / t:.3f}"
        )
    return res


if __name__ == "__main__":
    main()
