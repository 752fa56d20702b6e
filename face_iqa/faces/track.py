"""Face tracks within one ordered stream of frames (one video source).

Faces of consecutive sampled frames are linked by box overlap with a constant-velocity
prediction, or, when the boxes overlap too little (a fast move, a low sampling rate), by
how far the five landmarks moved relative to the face size. A track survives up to
``max_gap`` sampled frames without a face (a missed detection, a brief occlusion); after
that it ends and a face that appears later starts a new track, unless appearance
re-linking (``reid``) finds that its dlib descriptor is close to an ended track's.

Edited video cuts from one shot to another; a face of the new shot often sits near where a
face of the old one was, and linking them would put two people in one track (its "best
shot" then is of someone else). Every track ends at a **shot cut**: a sampled frame whose
colour histogram (:func:`frame_signature`) differs from the previous frame's by more than
``cut_threshold`` (:func:`shot_starts`). A false cut only splits a track, which ``reid`` can
join again; a missed cut merges two people.

Matching is greedy, best pair first, and every tie is broken by order, so the tracks of a
source depend on that source's faces alone (not on other sources processed alongside).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["SIGNATURE_BINS", "TrackerConfig", "frame_signature", "shot_starts", "track_faces"]

_HSV_BINS = (8, 4, 4)
SIGNATURE_BINS = int(np.prod(_HSV_BINS))  # length of a frame signature


@dataclass(frozen=True)
class TrackerConfig:
    """Attributes:
    iou_min: least IoU between a track's predicted box and a face to link them.
    landmark_max: or link when the mean landmark displacement (after the predicted motion)
        is at most this fraction of the face size.
    max_gap: sampled frames a track may go without a face before it ends.
    min_faces: a track needs this many faces to count (shorter ones, mostly one-frame
        false detections, leave their faces without a track, as SORT's ``min_hits``).
    reid: re-link a face that starts a new track to an ended track of the same person
        (dlib descriptor distance at most ``reid_distance``); needs the face crops.
    reid_distance: descriptor distance for re-linking (dlib's same-person threshold is
        0.6; stricter by default, since a wrong merge is worse than a split).
    cut_threshold: histogram distance (0-1) between consecutive sampled frames that counts
        as a shot cut, where every track ends; 0 turns cut detection off. Cuts in edited
        video measure 0.3-0.6, motion within a shot mostly under 0.2 (a fast camera move
        sampled 10 frames apart reached 0.33: a false cut, which only splits a track).
    """

    iou_min: float = 0.3
    landmark_max: float = 0.8
    max_gap: int = 15
    min_faces: int = 3
    reid: bool = False
    reid_distance: float = 0.5
    cut_threshold: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_min <= 1.0:
            raise ValueError(f"track.iou_min must be in (0, 1], got {self.iou_min}")
        if self.landmark_max < 0:
            raise ValueError(f"track.landmark_max must be >= 0, got {self.landmark_max}")
        if self.max_gap < 0:
            raise ValueError(f"track.max_gap must be >= 0, got {self.max_gap}")
        if self.min_faces < 1:
            raise ValueError(f"track.min_faces must be >= 1, got {self.min_faces}")
        if not 0.0 < self.reid_distance < 2.0:
            raise ValueError(f"track.reid_distance must be in (0, 2), got {self.reid_distance}")
        if not 0.0 <= self.cut_threshold < 1.0:
            raise ValueError(f"track.cut_threshold must be in [0, 1), got {self.cut_threshold}")


def frame_signature(frame: np.ndarray) -> np.ndarray:
    """A frame's colour histogram for cut detection: ``(SIGNATURE_BINS,)`` float32 summing
    to 1, over hue, saturation and value of a 64x36 thumbnail of the RGB ``frame``."""
    thumb = cv2.resize(np.ascontiguousarray(frame), (64, 36), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(thumb, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, list(_HSV_BINS), [0, 180, 0, 256, 0, 256])
    hist = hist.ravel().astype(np.float32)
    return hist / max(float(hist.sum()), 1.0)


def shot_starts(signatures: np.ndarray, threshold: float) -> np.ndarray:
    """Positions (indexes into ``signatures``, one row per sampled frame in order) of the
    frames that begin a new shot: their histogram distance (half the L1 distance, 0-1) to
    the last known frame before them exceeds ``threshold``. Rows with NaN (a frame that
    could not be decoded) are skipped; ``threshold`` 0 finds none."""
    sig = np.asarray(signatures, np.float64)
    if threshold <= 0 or len(sig) < 2:
        return np.zeros(0, np.int64)
    known = np.flatnonzero(np.isfinite(sig).all(axis=1))
    dist = np.abs(np.diff(sig[known], axis=0)).sum(axis=1) / 2
    return known[1:][dist > threshold].astype(np.int64)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes ``a (M, 4)`` and ``b (N, 4)``."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


class _Track:
    def __init__(self, tid: int, pos: int, box: np.ndarray, lms: np.ndarray, desc) -> None:
        self.id = tid
        self.pos = pos
        self.box = box
        self.lms = lms
        self.vel = np.zeros(4)
        self.descs = [] if desc is None else [desc]

    def predict(self, pos: int) -> tuple[np.ndarray, np.ndarray]:
        dt = pos - self.pos
        box = self.box + self.vel * dt
        shift = (self.vel[:2] + self.vel[2:]) / 2 * dt  # the centre's motion
        return box, self.lms + shift

    def update(self, pos: int, box: np.ndarray, lms: np.ndarray, desc) -> None:
        v = (box - self.box) / max(pos - self.pos, 1)
        self.vel = v if not self.vel.any() else 0.5 * self.vel + 0.5 * v
        self.pos, self.box, self.lms = pos, box, lms
        if desc is not None:
            self.descs.append(desc)


def track_faces(
    frame_pos: np.ndarray,
    boxes: np.ndarray,
    landmarks: np.ndarray,
    cfg: TrackerConfig | None = None,
    descriptors: np.ndarray | None = None,
    cuts: np.ndarray | None = None,
) -> np.ndarray:
    """Track numbers (0, 1, ... in order of appearance) for the faces of one source; -1 for
    faces whose track has fewer than ``min_faces`` faces.

    Args:
        frame_pos: ``(N,)`` position of each face's frame among the source's sampled
            frames (0, 1, 2, ...; faceless frames count, so that gaps are real gaps).
        boxes: ``(N, 4)`` x1, y1, x2, y2.  landmarks: ``(N, 5, 2)``.
        descriptors: ``(N, 128)`` dlib descriptors, for ``reid`` (NaN rows: unknown).
        cuts: positions (as ``frame_pos``) of the frames that begin a new shot, as from
            :func:`shot_starts`: no track continues across one.
    """
    cfg = cfg or TrackerConfig()
    n = len(frame_pos)
    out = np.full(n, -1, np.int64)
    if n == 0:
        return out
    frame_pos = np.asarray(frame_pos, np.int64)
    boxes = np.asarray(boxes, np.float64).reshape(n, 4)
    landmarks = np.asarray(landmarks, np.float64).reshape(n, 5, 2)
    use_reid = cfg.reid and descriptors is not None
    cuts = np.sort(np.asarray([] if cuts is None else cuts, np.int64))
    active: list[_Track] = []
    ended: list[_Track] = []
    next_id = 0
    for pos in np.unique(frame_pos):
        idx = np.flatnonzero(frame_pos == pos)
        shot = np.searchsorted(cuts, pos, side="right")  # tracks of an earlier shot end
        alive = [
            pos - t.pos <= cfg.max_gap + 1 and np.searchsorted(cuts, t.pos, side="right") == shot
            for t in active
        ]
        ended += [t for t, a in zip(active, alive) if not a]
        active = [t for t, a in zip(active, alive) if a]
        pairs = []
        if active:
            pred = [t.predict(int(pos)) for t in active]
            ious = _iou(np.stack([p[0] for p in pred]), boxes[idx])
            for a in range(len(active)):
                size = max(pred[a][0][2] - pred[a][0][0], pred[a][0][3] - pred[a][0][1], 1.0)
                for b, j in enumerate(idx):
                    lm = float(np.linalg.norm(landmarks[j] - pred[a][1], axis=1).mean()) / size
                    if ious[a, b] >= cfg.iou_min or lm <= cfg.landmark_max:
                        pairs.append((-ious[a, b], lm, a, b))
        pairs.sort()
        used_t, used_f = set(), set()
        for _, _, a, b in pairs:
            if a in used_t or b in used_f:
                continue
            used_t.add(a)
            used_f.add(b)
            j = idx[b]
            desc = descriptors[j] if use_reid and np.isfinite(descriptors[j]).all() else None
            active[a].update(int(pos), boxes[j], landmarks[j], desc)
            out[j] = active[a].id
        for b, j in enumerate(idx):
            if b in used_f:
                continue
            desc = descriptors[j] if use_reid and np.isfinite(descriptors[j]).all() else None
            track = None
            if desc is not None and ended:
                dist = [
                    min(float(np.linalg.norm(desc - d)) for d in t.descs) if t.descs else np.inf
                    for t in ended
                ]
                k = int(np.argmin(dist))
                if dist[k] <= cfg.reid_distance:
                    track = ended.pop(k)
                    track.update(int(pos), boxes[j], landmarks[j], desc)
                    track.vel = np.zeros(4)
            if track is None:
                track = _Track(next_id, int(pos), boxes[j], landmarks[j], desc)
                next_id += 1
            active.append(track)
            out[j] = track.id
    counts = np.bincount(out[out >= 0], minlength=next_id)
    keep = np.flatnonzero(counts >= cfg.min_faces)
    renumber = np.full(next_id + 1, -1, np.int64)
    renumber[keep] = np.arange(len(keep))  # numbered in order of appearance
    return renumber[out]
