"""Identities in ``faceiqa run``: which person each source is (``--identities FILE`` or
``--identity-from parent``), and the driver's book of identities in flight.

A finished source whose person still has sources out waits in the book; once the last one is
back the identity is decided at once (:class:`workers.identity.IdentityStage`) and its rows
go on, so the driver holds the rows (no pixels: a descriptor and a hash a face) of the
identities in flight only. Sources come in input order and a folder per person keeps a
person's photos together, so that is a few identities at a time however large the set.
Across identities it keeps only a 64-bit hash per kept face (a copy filed under two names is
a ``duplicate of`` the first) and one centre per identity (two identities whose centres
nearly coincide are listed in ``summary.json`` as perhaps one person).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from face_iqa.faces.identity import hamming64
from pipeline.inputs import InputError
from workers.identity import IdentityConfig, IdentityStage

__all__ = ["ALIKE_DISTANCE", "IdentityBook", "identities_of"]

# two identities whose centres lie closer than this may be one person filed twice
ALIKE_DISTANCE = 0.4
# a copy filed under another name: hashes this close (4 chunks of 16 bits: two hashes this
# close share a chunk exactly, so the index finds them without comparing every pair)
CROSS_HAMMING = 3


def identities_of(sources: list[str], cfg: IdentityConfig) -> dict[str, str]:
    """Each source's person: from ``cfg.file`` (``path``, ``identity``; paths relative to
    the file; a source it does not list has none) or from the source's folder name.

    Raises:
        InputError: the file is missing, lacks a column, or lists a path that does not exist.
    """
    if cfg.from_folder:
        return {s: Path(s).parent.name for s in sources}
    path = Path(cfg.file)
    if not path.is_file():
        raise InputError(f"identities file not found: {path}")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = set(rows[0]) if rows else set()
    if not {"path", "identity"} <= cols:
        raise InputError(f"{path}: needs 'path' and 'identity' columns, found {sorted(cols)}")
    named: dict[str, str] = {}
    for r in rows:
        p = Path(r["path"])
        p = p if p.is_absolute() else path.parent / p
        if not p.exists():
            raise InputError(f"{path}: lists {r['path']}, which does not exist")
        named[str(p.resolve())] = str(r["identity"])
    return {s: named[str(Path(s).resolve())] for s in sources if str(Path(s).resolve()) in named}


class _HashIndex:
    """Kept faces' hashes by 16-bit chunk: ``find`` returns a kept face within
    :data:`CROSS_HAMMING` bits of another identity, if any."""

    def __init__(self) -> None:
        self.chunks: list[dict[int, list[int]]] = [defaultdict(list) for _ in range(4)]
        self.hashes: list[int] = []
        self.owner: list[tuple[str, str]] = []

    @staticmethod
    def _parts(h: int) -> list[int]:
        u = int(np.int64(h).view(np.uint64))
        return [(u >> (16 * k)) & 0xFFFF for k in range(4)]

    def find(self, h: int, identity: str) -> tuple[str, str] | None:
        seen: set[int] = set()
        for k, part in enumerate(self._parts(h)):
            for j in self.chunks[k].get(part, ()):
                if j in seen:
                    continue
                seen.add(j)
                if self.owner[j][1] != identity and hamming64(h, self.hashes[j]) <= CROSS_HAMMING:
                    return self.owner[j]
        return None

    def add(self, h: int, source: str, identity: str) -> None:
        j = len(self.hashes)
        self.hashes.append(int(h))
        self.owner.append((source, identity))
        for k, part in enumerate(self._parts(h)):
            self.chunks[k][part].append(j)


class IdentityBook:
    """The identities in flight of one run (see the module docstring)."""

    def __init__(self, cfg: IdentityConfig, identity_of: dict[str, str], todo: list[str]) -> None:
        self.stage = IdentityStage(cfg)
        self.identity_of = identity_of
        self.left: dict[str, int] = defaultdict(int)
        for s in todo:
            if s in identity_of:
                self.left[identity_of[s]] += 1
        self.held: dict[str, list[pd.DataFrame]] = defaultdict(list)
        self.index = _HashIndex()
        self.centres: list[tuple[str, np.ndarray]] = []  # decided in this run
        self._new: list[tuple[str, np.ndarray]] = []  # decided since take_centres

    def take(self, tracked: list[pd.DataFrame]) -> list[pd.DataFrame]:
        """Finished sources in; the rows ready for the frame decisions out: sources without
        a person at once, a person's sources once all of theirs are back (decided)."""
        ready = []
        for faces in tracked:
            src = str(faces["source"].iloc[0])
            ident = self.identity_of.get(src)
            faces = faces.assign(identity=ident or "")
            if not ident:
                ready.append(faces)
                continue
            self.held[ident].append(faces)
            self.left[ident] -= 1
            if self.left[ident] <= 0:
                del self.left[ident]
                ready.append(
                    self._decide(ident, pd.concat(self.held.pop(ident), ignore_index=True))
                )
        return ready

    def drain(self) -> list[pd.DataFrame]:
        """Identities still waiting when the stream ends (sources that never came back were
        already given error rows, so this is only a safeguard)."""
        return [
            self._decide(i, pd.concat(self.held.pop(i), ignore_index=True)) for i in list(self.held)
        ]

    def _decide(self, ident: str, faces: pd.DataFrame) -> pd.DataFrame:
        if "descriptor" not in faces:
            faces["descriptor"] = None
        if "phash" not in faces:
            faces["phash"] = 0
        f, info = self.stage.decide(faces)
        passes = f["face_pass"].to_numpy(bool).copy()
        reason = f["face_reason"].to_numpy(object).copy()
        ok = passes & (f["face_index"].to_numpy() >= 0)
        for i in np.flatnonzero(ok):
            h = int(f["phash"].iloc[i])
            hit = self.index.find(h, ident)
            if hit is not None:
                passes[i] = False
                reason[i] = f"duplicate of {hit[0]} (filed as {hit[1]})"
                f.loc[f.index[i], "duplicate_of"] = hit[0]
            else:
                self.index.add(h, str(f["source"].iloc[i]), ident)
        f["face_pass"], f["face_reason"] = passes, reason.astype(str)
        if info["centre"] is not None:
            c = (ident, np.asarray(info["centre"], np.float32))
            self.centres.append(c)
            self._new.append(c)
        return f

    def take_centres(self) -> list[tuple[str, np.ndarray]]:
        """The centres decided since the last call (for the part store)."""
        out, self._new = self._new, []
        return out

    def alike(self, centres: list[tuple[str, np.ndarray]] | None = None) -> list[dict]:
        """Pairs of identities whose centres lie within :data:`ALIKE_DISTANCE`, among
        ``centres`` (every identity's, resumed ones too; default: this run's)."""
        centres = self.centres if centres is None else centres
        if len(centres) < 2:
            return []
        names = [n for n, _ in centres]
        c = np.stack([v for _, v in centres])
        out = []
        for s in range(0, len(c), 1024):
            d = np.linalg.norm(c[s : s + 1024, None] - c[None], axis=2)
            for i, j in zip(*np.nonzero(d < ALIKE_DISTANCE)):
                if s + i < j:
                    out.append(
                        {"a": names[s + i], "b": names[j], "distance": round(float(d[i, j]), 3)}
                    )
        return out
