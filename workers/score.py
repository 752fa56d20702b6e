"""Quality stage: adds the ``quality``, ``exposure`` and ``frontalness`` columns to a face batch."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from face_iqa.faces.exposure import face_exposure
from face_iqa.faces.pose import frontalness
from face_iqa.model.scorer import Scorer, ScorerConfig, build_scorer
from face_iqa.schema import STATUS_ERROR, STATUS_OK, check_batch

__all__ = ["ScoreStage", "ScoreStageConfig"]


@dataclass(frozen=True)
class ScoreStageConfig:
    scorer: ScorerConfig = field(default_factory=ScorerConfig)


class ScoreStage:
    """``ScoreStage(cfg)(batch)``: score the aligned crop of every ``status="ok"`` row.

    Adds ``quality`` (``float32``, the model's score range; NaN on rows without a face or
    with an error), ``exposure`` (0-255, how bright the inner face's highlights are,
    :func:`face_iqa.faces.exposure.face_exposure`; NaN likewise), ``frontalness`` (1 frontal, lower
    as the head turns, from the ``landmarks`` column, :func:`face_iqa.faces.pose.frontalness`; NaN
    on rows without a face or without that column) and ``score_s`` (each row's
    share of the model's time for this batch). Rows keep their order; the ``crop`` column
    is kept for later stages (writers drop it).
    """

    def __init__(self, cfg: ScoreStageConfig | None = None, scorer: Scorer | None = None) -> None:
        self.cfg = cfg or ScoreStageConfig()
        self.scorer = scorer or build_scorer(self.cfg.scorer)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = check_batch(batch, ("status", "crop"), "ScoreStage")
        out = dict(batch)
        quality = np.full(n, np.nan, np.float32)
        exposure = np.full(n, np.nan, np.float32)
        ok = np.flatnonzero(np.asarray(batch["status"]) == STATUS_OK)
        t0 = time.perf_counter()
        status = np.asarray(batch["status"]).astype(str).astype(object)
        error = np.asarray(batch.get("error", np.full(n, "", object))).astype(str).astype(object)
        if len(ok):
            try:
                crops = np.asarray(batch["crop"])
                if crops.dtype == object:  # Ray may hand ragged tensors over as objects
                    crops = np.stack(list(crops))
                quality[ok] = self.scorer(crops[ok])
                exposure[ok] = face_exposure(crops[ok])
            except Exception:  # noqa: BLE001 - find the row that broke the batch, below
                for i in ok:
                    try:
                        one = np.asarray(batch["crop"][i])[None]
                        quality[i] = self.scorer(one)[0]
                        exposure[i] = face_exposure(one)[0]
                    except Exception as e:  # noqa: BLE001 - one bad crop is one error row
                        status[i] = STATUS_ERROR
                        where = f"{batch['source'][i]} " if "source" in batch else ""
                        if "frame_index" in batch:
                            where += f"frame {batch['frame_index'][i]} "
                        error[i] = f"{where}face: scoring failed ({e!r})"
        bad = [i for i in ok if status[i] == STATUS_OK and not np.isfinite(quality[i])]
        for i in bad:  # never an ok face without a real score
            status[i] = STATUS_ERROR
            error[i] = (
                f"{batch['source'][i] if 'source' in batch else ''} face: the model gave no finite score"
            )
        out["status"] = status.astype(str)
        out["error"] = error.astype(str)
        out["quality"] = quality
        out["exposure"] = exposure
        pose = np.full(n, np.nan, np.float32)
        if "landmarks" in batch and len(ok):
            lms = np.asarray(batch["landmarks"])
            if lms.dtype == object:
                lms = np.stack(list(lms))
            pose[ok] = frontalness(np.asarray(lms, np.float64)[ok])
        pose[status != STATUS_OK] = np.nan
        out["frontalness"] = pose
        out["score_s"] = np.full(n, (time.perf_counter() - t0) / max(n, 1), np.float64)
        return out
