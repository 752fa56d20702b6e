"""The one batch schema every stage speaks, named once.

A batch is a ``dict[str, np.ndarray]`` of equal-length columns (the Ray Data "numpy" batch
format). Frames are ``uint8`` HxWx3 RGB; boxes ``float32 [x1, y1, x2, y2]`` in frame pixels;
landmarks ``float32 (5, 2)``; quality ``float32``.

Frame batch (decoder -> DetectStage): ``source`` str, ``frame_index`` int64, ``frame``
(object array of HxWx3 uint8, or one ``(N, H, W, 3)`` uint8 array), optional
``timestamp_s`` float64, ``status``/``error`` str (a decode failure arrives as a row with
``status="error"``).

Face batch (DetectStage -> ScoreStage -> ...): one row per face, and one row per frame that
has no face (``status="no_face"``, ``face_index=-1``) or failed (``status="error"``), so that
every input frame is still visible downstream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

__all__ = [
    "FACE_COLUMNS",
    "STATUS_ERROR",
    "STATUS_NO_FACE",
    "STATUS_OK",
    "SchemaError",
    "check_batch",
    "check_frame",
]

STATUS_OK = "ok"
STATUS_NO_FACE = "no_face"
STATUS_ERROR = "error"

# name -> (dtype kind, trailing shape) of the face batch. Kinds: "U" str, "i" int, "f" float,
# "u" uint8, "b" bool. A trailing shape of None means "any".
FACE_COLUMNS: dict[str, tuple[str, tuple[int, ...] | None]] = {
    "source": ("U", ()),
    "frame_index": ("i", ()),
    "timestamp_s": ("f", ()),
    "frame_height": ("i", ()),
    "frame_width": ("i", ()),
    "face_index": ("i", ()),
    "box": ("f", (4,)),
    "landmarks": ("f", (5, 2)),
    "det_prob": ("f", ()),
    "face_size": ("f", ()),
    "crop": ("u", None),
    "status": ("U", ()),
    "error": ("U", ()),
}


class SchemaError(ValueError):
    """A batch does not match the schema; the message names the stage and the column."""


def check_frame(frame: object, what: str = "frame") -> None:
    """Raise :class:`SchemaError` unless ``frame`` is a ``uint8`` HxWx3 array."""
    if not isinstance(frame, np.ndarray):
        raise SchemaError(f"{what}: expected a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise SchemaError(
            f"{what}: expected uint8 HxWx3 RGB, got {frame.dtype} with shape {frame.shape}"
        )


def _kind_ok(arr: np.ndarray, kind: str) -> bool:
    k = arr.dtype.kind
    if kind == "U":
        return k in ("U", "O", "S")
    if kind == "i":
        return k in ("i", "u")
    if kind == "f":
        return k == "f"
    if kind == "u":
        return arr.dtype == np.uint8 or k == "O"
    if kind == "b":
        return k == "b"
    return False


def check_batch(
    batch: Mapping[str, np.ndarray],
    required: Iterable[str],
    stage: str,
    spec: Mapping[str, tuple[str, tuple[int, ...] | None]] = FACE_COLUMNS,
) -> int:
    """Check that ``batch`` has the ``required`` columns, equal lengths and schema dtypes.

    Returns the number of rows. Raises :class:`SchemaError` naming ``stage`` and the column.
    """
    n = None
    for name in required:
        if name not in batch:
            raise SchemaError(f"{stage}: batch lacks column {name!r} (has {sorted(batch)})")
        arr = np.asarray(batch[name]) if not isinstance(batch[name], np.ndarray) else batch[name]
        if n is None:
            n = len(arr)
        elif len(arr) != n:
            raise SchemaError(f"{stage}: column {name!r} has {len(arr)} rows, expected {n}")
        if name in spec:
            kind, shape = spec[name]
            if not _kind_ok(arr, kind):
                raise SchemaError(f"{stage}: column {name!r} has dtype {arr.dtype}")
            if shape is not None and arr.dtype.kind != "O" and tuple(arr.shape[1:]) != shape:
                raise SchemaError(
                    f"{stage}: column {name!r} has row shape {tuple(arr.shape[1:])}, "
                    f"expected {shape}"
                )
    return 0 if n is None else n
