"""Track stage: link the faces of one source (an ordered stream of frames) into tracks."""

from __future__ import annotations

import hashlib

import numpy as np

from face_iqa.faces.track import SIGNATURE_BINS, TrackerConfig, shot_starts, track_faces
from face_iqa.schema import STATUS_OK, check_batch

__all__ = ["TrackStage", "track_prefix"]


def track_prefix(source: str) -> str:
    """The track-id prefix of a source: a readable stem and a hash of the whole path, so ids
    are unique across sources and safe as folder names (``crops/TRACK_ID/``)."""
    stem = source.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in stem)[:24] or "source"
    return f"{stem}-{hashlib.sha1(source.encode()).hexdigest()[:8]}"


class TrackStage:
    """``TrackStage(cfg)(batch)``: add ``track_id`` to the rows of one whole source.

    Input columns: ``source`` (one value), ``frame_index``, ``face_index``, ``box``,
    ``landmarks``, ``status``; every sampled frame of the source present (faceless and failed
    frames as their rows), so that gaps between frames are known. With ``reid``: a
    ``descriptor`` column (128-d dlib descriptors, NaN where unknown), or a ``crop`` column
    from which they are computed. With a ``frame_sig`` column (the detect stage's frame
    signatures) no track continues across a shot cut (``cut_threshold``). Output: the batch
    plus ``track_id`` (``""`` on rows that are not faces). Tracks depend on this source's
    rows only, so they are the same whether the source is processed alone or with others.
    """

    def __init__(self, cfg: TrackerConfig | None = None) -> None:
        self.cfg = cfg or TrackerConfig()
        self._recognizer = None

    def _descriptors(self, batch: dict, ok: np.ndarray) -> np.ndarray | None:
        if not self.cfg.reid:
            return None
        if "descriptor" in batch:
            return np.stack([np.asarray(d, np.float64) for d in batch["descriptor"]])[ok]
        if "crop" not in batch:
            raise ValueError("TrackStage: track.reid needs a 'descriptor' or 'crop' column")
        if self._recognizer is None:
            from face_iqa.faces.recognizer import DlibRecognizer

            self._recognizer = DlibRecognizer()
        return np.stack([self._recognizer.image_descriptor(c) for c in batch["crop"][ok]])

    def _cuts(self, batch: dict, pos: np.ndarray, n_frames: int) -> np.ndarray | None:
        """Frame positions that begin a new shot, from each frame's first row's signature
        (a row without a proper one, e.g. a frame that failed to decode, counts as unknown)."""
        if "frame_sig" not in batch or self.cfg.cut_threshold <= 0:
            return None
        sig = np.full((n_frames, SIGNATURE_BINS), np.nan)
        first = np.unique(pos, return_index=True)[1]  # one row of each frame, in frame order
        for p, k in zip(pos[first], first):
            r = np.asarray(batch["frame_sig"][k], np.float64).ravel()
            if r.shape == (SIGNATURE_BINS,):
                sig[p] = r
        return shot_starts(sig, self.cfg.cut_threshold)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = check_batch(
            batch,
            ("source", "frame_index", "face_index", "box", "landmarks", "status"),
            "TrackStage",
            spec={},
        )
        out = dict(batch)
        if n == 0:
            out["track_id"] = np.zeros(0, str)
            return out
        sources = set(np.asarray(batch["source"]).astype(str))
        if len(sources) != 1:
            raise ValueError(f"TrackStage works on one source at a time, got {len(sources)}")
        source = sources.pop()
        findex = np.asarray(batch["frame_index"], np.int64)
        ok = (np.asarray(batch["status"]).astype(str) == STATUS_OK) & (
            np.asarray(batch["face_index"], np.int64) >= 0
        )
        frames = np.unique(findex)
        pos = np.searchsorted(frames, findex)
        boxes = np.array([np.asarray(b, np.float64).reshape(4) for b in batch["box"][ok]])
        lms = np.array([np.asarray(m, np.float64).reshape(5, 2) for m in batch["landmarks"][ok]])
        tracks = track_faces(
            pos[ok],
            boxes.reshape(-1, 4),
            lms.reshape(-1, 5, 2),
            self.cfg,
            self._descriptors(batch, ok),
            self._cuts(batch, pos, len(frames)),
        )
        ids = np.full(n, "", dtype=object)
        prefix = track_prefix(source)
        ids[ok] = [f"{prefix}-t{t:03d}" if t >= 0 else "" for t in tracks]  # -1: too short
        out["track_id"] = ids.astype(str)
        return out
