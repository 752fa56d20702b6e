"""Shared bits of the benchmarks: the machine and versions, and a timer."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import torch


def describe_machine(device: torch.device) -> str:
    cpu = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
    return f"device={device} ({gpu}); cpu={cpu}; torch {torch.__version__}; python {platform.python_version()}"


def timed(fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> float:
    """Seconds per call, after ``warmup`` calls, synchronising the GPU around the timing."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / iters
