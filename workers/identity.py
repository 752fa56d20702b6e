"""Identity stage: for a face dataset labelled by person, which face of each photo is the
person's, which photos show another person, and which are near-duplicates.

It runs on the driver once all the photos of one identity are back (like the frame rule,
it needs a whole group, not a streaming batch), on the face rows the workers sent: each face
with its dlib ``descriptor`` and the perceptual hash ``phash`` of its surroundings, no pixels.
Only faces that pass the face rules get a descriptor (dlib's costs about 60 ms a face on a CPU
core) and are judged here: a face too small or too poor to keep is rejected for that, and its
descriptor would say little of who it is anyway.

- **Centre**: one face per photo (the largest that passes the face rules) gives a robust
  centre (:func:`face_iqa.faces.identity.robust_centre`: medoid, then the mean of the half
  nearest it), so wrong photos fewer than half of the person's cannot pull it. It is computed
  again from the faces chosen in the first round.
- **The person's face**: in each photo the face nearest the centre; the photo's other faces
  are rejected with ``another face in the photo``. Its distance to the centre is
  ``identity_distance``; above ``max_distance`` the photo is rejected with ``another person
  (0.71 > 0.60)``. With fewer than ``min_photos`` photos there is no majority to trust: the
  distances are written, the rule is not applied (the summary counts such identities).
- **Near-duplicates**: faces of the person whose descriptors lie within ``duplicate_distance``
  or whose hashes differ in at most ``duplicate_hamming`` bits are one group; its best face
  (highest quality among those passing) is kept, the others are rejected with ``duplicate of
  PATH`` and carry ``duplicate_of``.

These reasons replace a face rule's (a wrong person's photo says ``another person`` even when
its face is small too), except a low quality or exposure: the descriptor of a face too poor to
recognise says nothing of who it is, so such a face keeps its quality reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from face_iqa.faces.identity import duplicate_groups, robust_centre
from face_iqa.schema import STATUS_OK

__all__ = ["IdentityConfig", "IdentityStage"]


@dataclass(frozen=True)
class IdentityConfig:
    """Attributes:
    file: a CSV of ``path, identity`` (paths relative to the CSV): each photo's person.
    from_folder: the photo's folder names its person (``--identity-from parent``).
    max_distance: a face farther than this (dlib descriptor distance) from its person's
        centre is another person. Chosen on 60 CelebA people with 30 photos moved into the
        wrong folder (docs/benchmarks.md): at 0.7, 28 of the 30 and 4 of 530 right photos
        lie beyond it (at dlib's own 0.6: all 30 and 16).
    min_photos: identities with fewer photos with a face are not checked for wrong photos.
    duplicate_distance: faces of one person whose descriptors lie this close are copies,
    duplicate_hamming: ... or whose 64-bit perceptual hashes with their surroundings
        (:func:`face_iqa.faces.identity.context_phash`) differ in at most this many bits. On
        60 CelebA people with 30 rescaled, cropped and recompressed copies (docs/benchmarks.md):
        29 of the copies and 4 of 2,115 pairs of different photos of one person (some of them
        shots of one moment) lie within 0.12 or 8 bits.
    """

    file: str | None = None
    from_folder: bool = False
    max_distance: float = 0.7
    min_photos: int = 3
    duplicate_distance: float = 0.12
    duplicate_hamming: int = 8

    def __post_init__(self) -> None:
        if self.file and self.from_folder:
            raise ValueError("identity.file and identity.from_folder exclude each other")
        if self.max_distance <= 0 or self.duplicate_distance < 0:
            raise ValueError("identity.max_distance must be > 0, duplicate_distance >= 0")
        if not 0 <= self.duplicate_hamming <= 64:
            raise ValueError(
                f"identity.duplicate_hamming must be in [0, 64], got {self.duplicate_hamming}"
            )
        if self.min_photos < 1:
            raise ValueError(f"identity.min_photos must be >= 1, got {self.min_photos}")

    @property
    def enabled(self) -> bool:
        return bool(self.file) or self.from_folder


class IdentityStage:
    """See the module docstring."""

    def __init__(self, cfg: IdentityConfig | None = None) -> None:
        self.cfg = cfg or IdentityConfig()

    def decide(self, faces: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
        """The rows of one identity's photos (with ``face_pass``/``face_reason``,
        ``descriptor``, ``phash``, ``quality``) with ``identity_distance``, ``duplicate_of``
        and ``bystander`` added and the face rules' verdicts updated; and what was found:
        ``photos`` (with a face), ``checked`` (the wrong-photo rule applied), the
        ``centre`` (or None)."""
        c = self.cfg
        f = faces.copy().reset_index(drop=True)
        f["identity_distance"] = np.nan
        f["duplicate_of"] = ""
        f["bystander"] = False
        desc = np.stack([_vector(d) for d in f["descriptor"]]) if len(f) else np.zeros((0, 128))
        is_face = (f["status"].to_numpy(str) == STATUS_OK) & (f["face_index"].to_numpy() >= 0)
        cand = is_face & np.isfinite(desc).all(axis=1)
        photo = list(zip(f["source"], f["frame_index"]))
        photos = sorted({photo[i] for i in np.flatnonzero(cand)})
        info = {"photos": len(photos), "checked": len(photos) >= c.min_photos, "centre": None}
        passes = f["face_pass"].to_numpy(bool).copy()
        size = f["face_size"].to_numpy(float)
        by_photo: dict[tuple, list[int]] = {}
        for i in np.flatnonzero(cand):
            by_photo.setdefault(photo[i], []).append(int(i))

        def seeds(rows_of: dict[tuple, list[int]]) -> list[int]:
            out = []
            for rows in rows_of.values():
                good = [i for i in rows if passes[i]] or rows
                out.append(max(good, key=lambda i: size[i]))
            return out

        chosen: dict[tuple, int] = {}
        reason = f["face_reason"].to_numpy(object).copy()
        if by_photo:
            centre, _ = robust_centre(desc[seeds(by_photo)])
            for _ in range(2):  # choose each photo's face, then centre again on the choices
                dist = np.linalg.norm(desc - centre, axis=1)
                chosen = {p: min(rows, key=lambda i: dist[i]) for p, rows in by_photo.items()}
                mine = [i for i in chosen.values() if dist[i] <= c.max_distance] or list(
                    chosen.values()
                )
                centre, _ = robust_centre(desc[mine])
            dist = np.linalg.norm(desc - centre, axis=1)
            chosen = {p: min(rows, key=lambda i: dist[i]) for p, rows in by_photo.items()}
            info["centre"] = centre
            f.loc[cand, "identity_distance"] = dist[cand]
            for p, rows in by_photo.items():
                me = chosen[p]
                wrong = info["checked"] and dist[me] > c.max_distance
                for i in rows:  # who a face is outranks how it was taken: these reasons win
                    if wrong:
                        if _too_poor(reason[i]):
                            continue  # a face too poor to judge is no evidence of another person
                        passes[i] = False
                        reason[i] = f"another person ({dist[i]:.2f} > {c.max_distance:.2f})"
                        # the photo is judged by its nearest face: the others do not make it
                        # "too many faces" as well
                        f.loc[i, "bystander"] = i != me
                    elif i != me:
                        f.loc[i, "bystander"] = True
                        passes[i] = False
                        reason[i] = "another face in the photo"
        # photos whose faces all failed the face rules (no descriptor) take part in the
        # duplicates by their largest face's hash: a small copy is still a copy
        rest: dict[tuple, int] = {}
        for i in np.flatnonzero(is_face & ~cand):
            q = photo[i]
            if q not in by_photo and (q not in rest or size[i] > size[rest[q]]):
                rest[q] = int(i)
        # a photo is judged by one face (its person's, else its largest): its other faces,
        # which failed the face rules before they were judged, keep their reasons and do not
        # make the photo "too many faces"
        main = {**rest, **chosen}
        for i in np.flatnonzero(is_face & ~cand):
            if main.get(photo[i], i) != i:
                f.loc[i, "bystander"] = True
        self._duplicates(f, desc, list(chosen.values()) + list(rest.values()), passes, reason)
        f["face_pass"], f["face_reason"] = passes, reason.astype(str)
        return f, info

    def _duplicates(self, f, desc, mine, passes, reason) -> None:
        c = self.cfg
        if len(mine) < 2:
            return
        mine = np.array(sorted(mine))
        hashes = f["phash"].to_numpy(np.int64)[mine]
        groups = duplicate_groups(desc[mine], hashes, c.duplicate_distance, c.duplicate_hamming)
        quality = f["quality"].to_numpy(float)
        src = f["source"].to_numpy(str)
        for g in np.unique(groups):
            rows = mine[groups == g]
            if len(rows) < 2:
                continue
            ranked = sorted(
                rows, key=lambda i: (not passes[i], -np.nan_to_num(quality[i], nan=-1e9))
            )
            keep = ranked[0]
            for i in ranked[1:]:
                f.loc[i, "duplicate_of"] = src[keep]
                if not str(reason[i]).startswith("another person"):
                    passes[i] = False
                    reason[i] = f"duplicate of {src[keep]}"


def _too_poor(reason: str) -> bool:
    return str(reason).startswith(("quality", "exposure", "not scored"))


def _vector(d) -> np.ndarray:
    if d is None:
        return np.full(128, np.nan)
    v = np.asarray(d, np.float64).ravel()
    return v if v.size == 128 else np.full(128, np.nan)
