"""Keep large CPU tensors off ``mmap``: a process-wide glibc malloc setting.

glibc serves every allocation above ``M_MMAP_THRESHOLD`` (128 KiB to 32 MiB, adapting) with
a fresh ``mmap`` and returns it with ``munmap`` when freed. CPU inference allocates and frees
activations of tens of megabytes on every call (MTCNN's P-Net on a 720p pyramid level: about
13 MB a frame), so each call pays the page faults of touching new memory again: on the
2-core test machine P-Net's PReLU took twice as long, and the whole P-Net ~1.8x, as with the
memory reused. PyTorch's CPU tuning guides answer this with jemalloc or tcmalloc through
``LD_PRELOAD``; this module does the same with glibc itself: a higher mmap threshold, so freed
blocks stay in the heap and are reused without faults, and a trim threshold of 128 MiB: the
heap keeps up to that much free memory at its top (more than one detector call's
activations) and returns the rest. Keeping all of it (an unlimited trim threshold, as this
module did before) held a 2-core machine's pipeline workers at 1.3-1.5 GiB each after the
peaks of a few large images, for no speed gained.

It also caps oneDNN's primitive cache (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, unless set):
oneDNN keeps a compiled convolution for every input shape it has seen, up to 1,024 of
them, and photos of many sizes make a new pyramid of shapes each; on 1,000 photos of
assorted sizes one thread's resident memory grew from 0.98 to 1.38 GiB with the default
and stayed at 1.16-1.21 GiB with 16 entries, at the same speed. 256 is a compromise
(R-Net and O-Net see a new batch shape with every candidate count); pipeline workers on
5,000 photos still reached 1.50-1.54 GiB with it.

It is called when a detector or scorer is built for the CPU; ``FACEIQA_MALLOC_TUNING=0``
turns it off. The malloc part is a no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["tune_cpu_malloc"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_MMAP_THRESHOLD = 1 << 30  # allocations up to 1 GiB come from the heap
_TRIM_THRESHOLD = 128 << 20  # free memory kept at the top of the heap

ONEDNN_CACHE = "256"  # compiled convolutions kept (oneDNN's default: 1024)

_done: bool | None = None


def tune_cpu_malloc() -> bool:
    """Apply the setting once per process; returns whether it is in effect."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("FACEIQA_MALLOC_TUNING", "1") == "0":
        return False
    # read by oneDNN when it first builds a primitive, i.e. after this call
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE)
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # One arena: threads other than the main one get arenas of their own otherwise, made of
    # 64 MiB heaps that are trimmed on free, where these thresholds do not help (a thread
    # that already has an arena keeps it: Ray workers get MALLOC_ARENA_MAX=1 at start).
    _done = (
        bool(mallopt(_M_ARENA_MAX, 1))
        and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
        and bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD))
    )
    return _done
