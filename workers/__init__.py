"""Pipeline stages: one callable class per stage, ``__call__(batch: dict) -> dict``.

Stages never import ``ray``: Ray Data hands them to ``map_batches``, a test calls them.
"""

from workers.detect import DetectStage, DetectStageConfig
from workers.score import ScoreStage, ScoreStageConfig

__all__ = ["DetectStage", "DetectStageConfig", "ScoreStage", "ScoreStageConfig"]
