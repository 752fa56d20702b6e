"""Detect + align stage: frames in, one row per face (or per faceless / failed frame) out."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from face_iqa.faces.align import align_face, crop_box, landmarks_plausible
from face_iqa.faces.detect import Detections, DetectorConfig, build_detector
from face_iqa.faces.identity import context_phash
from face_iqa.faces.track import SIGNATURE_BINS, frame_signature
from face_iqa.schema import (
    STATUS_ERROR,
    STATUS_NO_FACE,
    STATUS_OK,
    SchemaError,
    check_batch,
    check_frame,
)

__all__ = ["DetectStage", "DetectStageConfig"]


@dataclass(frozen=True)
class DetectStageConfig:
    """Attributes:
    detector: MTCNN settings.
    crop_size: side of the aligned face crop in pixels.
    align: ``"landmarks"`` (5-point similarity onto the ArcFace template; falls back to the
        box crop when the landmarks are implausible) or ``"box"`` (box plus margin always).
    box_margin: margin of the box crop, as a fraction of the box side on each side.
    """

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    crop_size: int = 224
    align: str = "landmarks"
    box_margin: float = 0.2

    def __post_init__(self) -> None:
        if self.align not in ("landmarks", "box"):
            raise ValueError(f"detect.align must be 'landmarks' or 'box', got {self.align!r}")
        if not 16 <= self.crop_size <= 1024:
            raise ValueError(f"detect.crop_size must be in [16, 1024], got {self.crop_size}")
        if not 0.0 <= self.box_margin <= 2.0:
            raise ValueError(f"detect.box_margin must be in [0, 2], got {self.box_margin}")


def _column(batch: dict[str, Any], name: str, n: int, default: Any, dtype: Any) -> np.ndarray:
    if name in batch:
        return np.asarray(batch[name])
    return np.full(n, default, dtype=dtype)


class DetectStage:
    """``DetectStage(cfg)(batch)``: detect and align the faces of a batch of frames.

    Input columns: ``source`` str, ``frame_index`` int, ``frame`` uint8 HxWx3 RGB (an object
    array, or one ``(N, H, W, 3)`` array); optional ``timestamp_s``, ``status``, ``error``.

    Output: the face batch of :mod:`face_iqa.schema`, plus ``align`` (``"landmarks"`` or
    ``"box"``), ``frame_sig`` (the frame's colour histogram, for the tracker's shot cuts:
    :func:`face_iqa.faces.track.frame_signature`; NaN for a failed frame), ``detect_s`` and
    ``align_s`` (the detector's time, and the cropping's with the signatures, for this
    batch, seconds, shared out over the rows so that a column's sum is the total).
    ``phash`` is each face's 64-bit perceptual hash with its surroundings
    (:func:`face_iqa.faces.identity.context_phash`, for near-duplicates; 0 on other rows).
    ``stream_frames``, when the batch has it, is carried to every row of its frame.
    A frame with no face gives one ``status="no_face"`` row, a failed frame one
    ``status="error"`` row with the message; the batch never raises for one bad frame.
    """

    def __init__(self, cfg: DetectStageConfig | None = None) -> None:
        self.cfg = cfg or DetectStageConfig()
        self.detector = build_detector(self.cfg.detector)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = check_batch(batch, ("source", "frame_index", "frame"), "DetectStage", spec={})
        frames = batch["frame"]
        sources = np.asarray(batch["source"]).astype(str)
        findex = np.asarray(batch["frame_index"]).astype(np.int64)
        tstamp = _column(batch, "timestamp_s", n, np.nan, np.float64).astype(np.float64)
        in_status = _column(batch, "status", n, STATUS_OK, object).astype(str)
        in_error = _column(batch, "error", n, "", object).astype(str)

        errors: dict[int, str] = {}
        todo: list[int] = []
        for i in range(n):
            if in_status[i] == STATUS_ERROR:
                errors[i] = in_error[i] or "upstream error"
                continue
            try:
                check_frame(frames[i], f"{sources[i]} frame {findex[i]}")
                todo.append(i)
            except SchemaError as e:
                errors[i] = str(e)

        t0 = time.perf_counter()
        dets = self._detect(frames, todo, sources, findex, errors)
        detect_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        rows: list[dict[str, Any]] = []
        size = self.cfg.crop_size
        unknown = np.full(SIGNATURE_BINS, np.nan, np.float32)
        for i in range(n):
            frame = frames[i]
            shp = tuple(getattr(frame, "shape", ())) + (0, 0)
            base = {
                "_frame": i,
                "source": sources[i],
                "frame_index": findex[i],
                "timestamp_s": tstamp[i],
                "frame_height": int(shp[0]),
                "frame_width": int(shp[1]),
                "frame_sig": unknown if i in errors else frame_signature(frame),
            }
            if i in errors:
                rows.append(
                    {**base, **_empty_face(size), "status": STATUS_ERROR, "error": errors[i]}
                )
                continue
            det = dets[i]
            if len(det) == 0:
                rows.append({**base, **_empty_face(size), "status": STATUS_NO_FACE, "error": ""})
                continue
            for k in range(len(det)):
                box, lms = det.boxes[k], det.landmarks[k]
                try:
                    crop, how = self._crop(frame, box, lms)
                    status, err = STATUS_OK, ""
                except (ValueError, np.linalg.LinAlgError) as e:
                    crop, how = np.zeros((size, size, 3), np.uint8), ""
                    status = STATUS_ERROR
                    err = f"{sources[i]} frame {findex[i]} face {k}: alignment failed ({e})"
                rows.append(
                    {
                        **base,
                        "face_index": k,
                        "box": box,
                        "landmarks": lms,
                        "det_prob": float(det.probs[k]),
                        "face_size": float(min(box[2] - box[0], box[3] - box[1])),
                        "phash": context_phash(frame, box),
                        "crop": crop,
                        "align": how,
                        "status": status,
                        "error": err,
                    }
                )
        out = _rows_to_batch(rows, size)
        align_s = time.perf_counter() - t0
        # Timings are per-row shares, so that summing a column over rows gives the total;
        # upstream timings (e.g. decode_s) are split among the rows of their frame.
        frame_of = np.array([r["_frame"] for r in rows], np.int64)
        per_frame = np.bincount(frame_of, minlength=n)
        out["detect_s"] = np.full(len(rows), detect_s / max(len(rows), 1), np.float64)
        out["align_s"] = np.full(len(rows), align_s / max(len(rows), 1), np.float64)
        for name in [k for k in batch if k.endswith("_s") and k != "timestamp_s"]:
            v = np.asarray(batch[name], np.float64)
            out[name] = v[frame_of] / np.maximum(per_frame[frame_of], 1)
        if "stream_frames" in batch:  # the decoder's frame count, on a video's last frame
            out["stream_frames"] = np.asarray(batch["stream_frames"], np.int64)[frame_of]
        return out

    def _detect(
        self,
        frames: Any,
        todo: list[int],
        sources: np.ndarray,
        findex: np.ndarray,
        errors: dict[int, str],
    ) -> dict[int, Detections]:
        if not todo:
            return {}
        try:
            return dict(zip(todo, self.detector.detect([frames[i] for i in todo])))
        except Exception:
            pass  # isolate the frame that broke the batch, below
        dets: dict[int, Detections] = {}
        for i in todo:
            try:
                dets[i] = self.detector.detect([frames[i]])[0]
            except Exception as e:  # noqa: BLE001 - one bad frame must not abort the batch
                errors[i] = f"{sources[i]} frame {findex[i]}: detection failed ({e!r})"
        return dets

    def _crop(self, frame: np.ndarray, box: np.ndarray, lms: np.ndarray) -> tuple[np.ndarray, str]:
        if self.cfg.align == "landmarks" and landmarks_plausible(box, lms):
            return align_face(frame, lms, self.cfg.crop_size)[0], "landmarks"
        return crop_box(frame, box, self.cfg.crop_size, self.cfg.box_margin)[0], "box"


def _empty_face(size: int) -> dict[str, Any]:
    return {
        "face_index": -1,
        "box": np.full(4, np.nan, np.float32),
        "landmarks": np.full((5, 2), np.nan, np.float32),
        "det_prob": np.nan,
        "face_size": np.nan,
        "phash": 0,
        "crop": np.zeros((size, size, 3), np.uint8),
        "align": "",
    }


def _rows_to_batch(rows: list[dict[str, Any]], size: int) -> dict[str, np.ndarray]:
    if not rows:
        return {
            "source": np.zeros(0, str),
            "frame_index": np.zeros(0, np.int64),
            "timestamp_s": np.zeros(0),
            "frame_height": np.zeros(0, np.int64),
            "frame_width": np.zeros(0, np.int64),
            "frame_sig": np.zeros((0, SIGNATURE_BINS), np.float32),
            "face_index": np.zeros(0, np.int64),
            "box": np.zeros((0, 4), np.float32),
            "landmarks": np.zeros((0, 5, 2), np.float32),
            "det_prob": np.zeros(0, np.float32),
            "face_size": np.zeros(0, np.float32),
            "phash": np.zeros(0, np.int64),
            "crop": np.zeros((0, size, size, 3), np.uint8),
            "align": np.zeros(0, str),
            "status": np.zeros(0, str),
            "error": np.zeros(0, str),
        }

    def col(name: str, dtype: Any) -> np.ndarray:
        return np.asarray([r[name] for r in rows], dtype=dtype)

    return {
        "source": col("source", str),
        "frame_index": col("frame_index", np.int64),
        "timestamp_s": col("timestamp_s", np.float64),
        "frame_height": col("frame_height", np.int64),
        "frame_width": col("frame_width", np.int64),
        "frame_sig": np.stack([r["frame_sig"] for r in rows]).astype(np.float32),
        "face_index": col("face_index", np.int64),
        "box": np.stack([r["box"] for r in rows]).astype(np.float32),
        "landmarks": np.stack([r["landmarks"] for r in rows]).astype(np.float32),
        "det_prob": col("det_prob", np.float32),
        "face_size": col("face_size", np.float32),
        "phash": col("phash", np.int64),
        "crop": np.stack([r["crop"] for r in rows]).astype(np.uint8),
        "align": col("align", str),
        "status": col("status", str),
        "error": col("error", str),
    }
