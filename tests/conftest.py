"""Shared fixtures: the shared real data, one detector per session."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEIQA_SHARED", REPO.parent / "shared")).resolve()


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data. Without that folder the test is skipped on a user's
    machine (a clone on its own), but fails in CI, where it must be present."""
    p = SHARED.joinpath("data", *parts)
    if not p.exists():
        if os.environ.get("CI"):
            pytest.fail(f"shared test data missing in CI: {p}")
        pytest.skip(f"shared test data not present: {p} (set FACEIQA_SHARED)")
    return p


@pytest.fixture(scope="session")
def faces_csv() -> list[dict[str, str]]:
    with open(shared_path("faces.csv"), newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def detector():
    from face_iqa.faces.detect import DetectorConfig, build_detector

    return build_detector(DetectorConfig(device="cpu"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A Lite0 HyperIQA with ImageNet backbone and a random head: plumbing, not quality. Its
    card admits any score (a random head is not on the 0-100 scale, and clipping it there
    would flatten most scores to 0)."""
    import torch

    from face_iqa.model.checkpoint import ModelCard, init_backbone_imagenet, save_checkpoint
    from face_iqa.model.hyperiqa import HyperIQA, HyperIQAConfig

    torch.manual_seed(0)
    card = ModelCard(
        arch=HyperIQAConfig.for_backbone("efficientnet_lite0"),
        trained_on="random",
        score_range=(-1e6, 1e6),
    )
    model = init_backbone_imagenet(HyperIQA(card.arch))
    return save_checkpoint(model, card, tmp_path_factory.mktemp("tiny") / "tiny.pt")


@pytest.fixture(scope="session")
def ray_local():
    """One embedded Ray instance for the whole test session (starting Ray costs seconds)."""
    from pipeline.graph import RayConfig, init_ray

    ray = init_ray(RayConfig(num_cpus=2))
    yield ray
    ray.shutdown()
