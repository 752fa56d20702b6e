"""Detection and end-to-end throughput, in one process and one report.

    python -m bench.pipeline_bench [--device auto] [--frames 32] [--video PATH]

1. Reference (facenet-pytorch ``MTCNN.detect``) vs fast detection, frames/s, on frames of
   the shared 1080p video resized to 720p and at 1080p, same batch size.
2. End to end on a 720p clip: ``faceiqa run`` (decode, detect, align, score, threshold,
   write; Ray started before the clock) vs a naive loop (per frame: facenet-pytorch detect,
   crop each box, score the faces).
Prints the device, the versions and the ratios.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.common import describe_machine, timed

DEFAULT_VIDEO = Path(__file__).resolve().parents[2] / "shared/data/videos/facenet_example.mp4"


def _frames(video: Path, n: int, size: tuple[int, int] | None) -> np.ndarray:
    cap = cv2.VideoCapture(str(video))
    out = []
    while len(out) < n:
        ok, bgr = cap.read()
        if not ok:
            cap.release()
            cap = cv2.VideoCapture(str(video))  # loop a short clip
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if size is not None:
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        out.append(rgb)
    cap.release()
    return np.stack(out)


def _write_clip(frames: np.ndarray, path: Path, fps: float = 25.0) -> Path:
    h, w = frames.shape[1:3]
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        wr.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    wr.release()
    return path


def detection(
    device: torch.device, frames_720: np.ndarray, frames_1080: np.ndarray, batch: int, iters: int
) -> dict[str, float]:
    from facenet_pytorch import MTCNN

    from face_iqa.detect import DetectorConfig, build_detector

    ref = MTCNN(keep_all=True, device=device)
    fast = build_detector(DetectorConfig(device=str(device), backend="fast", batch_size=batch))
    res = {}
    for name, frames in (("720p", frames_720), ("1080p", frames_1080)):
        chunks = [list(frames[i : i + batch]) for i in range(0, len(frames), batch)]

        def run_ref(chunks=chunks) -> None:
            for c in chunks:
                ref.detect(c)

        def run_fast(chunks=chunks) -> None:
            for c in chunks:
                fast.detect(c)

        t_ref = timed(run_ref, device, 1, iters)
        t_fast = timed(run_fast, device, 1, iters)
        n = len(frames)
        res[f"ref_{name}"], res[f"fast_{name}"] = n / t_ref, n / t_fast
        print(
            f"detection {name:>5}: reference {n / t_ref:8.2f} frames/s   fast "
            f"{n / t_fast:8.2f} frames/s   ratio {t_ref / t_fast:5.2f}x"
        )
    return res


def end_to_end(device: torch.device, clip: Path, n_frames: int) -> dict[str, float]:
    from facenet_pytorch import MTCNN

    from face_iqa.align import crop_box
    from face_iqa.scorer import ScorerConfig, build_scorer
    from pipeline.config import load_config
    from pipeline.graph import init_ray
    from pipeline.run_job import run

    dev = str(device)
    cfg = load_config(None, [f"detect.detector.device={dev}", f"score.scorer.device={dev}"])
    init_ray(cfg.ray)  # start Ray before the clock
    with tempfile.TemporaryDirectory() as tmp:
        run([str(clip)], Path(tmp) / "warm", cfg, progress=False, log=lambda m: None)
        t0 = time.perf_counter()
        frames = run([str(clip)], Path(tmp) / "out", cfg, progress=False, log=lambda m: None)
        t_run = time.perf_counter() - t0
    assert len(frames) == n_frames

    ref = MTCNN(keep_all=True, device=device)
    scorer = build_scorer(ScorerConfig(device=dev))
    cap = cv2.VideoCapture(str(clip))
    t0 = time.perf_counter()
    n = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        boxes, _ = ref.detect(rgb)
        if boxes is not None:
            crops = np.stack([crop_box(rgb, np.asarray(b, float), 224)[0] for b in boxes])
            scorer(crops)
        n += 1
    t_naive = time.perf_counter() - t0
    print(
        f"end to end 720p: faceiqa run {n_frames / t_run:8.2f} frames/s   naive loop "
        f"{n / t_naive:8.2f} frames/s   ratio {t_naive / t_run:5.2f}x"
    )
    return {"run_fps": n_frames / t_run, "naive_fps": n / t_naive}


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--frames", type=int, default=None, help="default: 64 on GPU, 16 on CPU")
    ap.add_argument("--e2e-frames", type=int, default=None, help="default: 512 GPU, 48 CPU")
    ap.add_argument("--batch", type=int, default=None, help="default: 32 on GPU, 8 on CPU")
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    ap.add_argument("--skip-e2e", action="store_true")
    args = ap.parse_args(argv)
    from face_iqa.detect import resolve_device

    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    n = args.frames or (64 if gpu else 16)
    batch = args.batch or (32 if gpu else 8)
    iters = args.iters or (3 if gpu else 1)
    print(describe_machine(device))
    import importlib.metadata as md

    import facenet_pytorch  # noqa: F401

    print(
        f"facenet-pytorch {md.version('facenet-pytorch')}, opencv {cv2.__version__}, "
        f"frames={n} batch={batch} iters={iters}",
        file=sys.stdout,
    )
    f1080 = _frames(args.video, n, None)
    f720 = np.stack([cv2.resize(f, (1280, 720), interpolation=cv2.INTER_AREA) for f in f1080])
    res = detection(device, f720, f1080, batch, iters)
    if not args.skip_e2e:
        e2e_n = args.e2e_frames or (512 if gpu else 48)
        with tempfile.TemporaryDirectory() as tmp:
            clip = _write_clip(_frames(args.video, e2e_n, (1280, 720)), Path(tmp) / "720p.mp4")
            res.update(end_to_end(device, clip, e2e_n))
    return res


if __name__ == "__main__":
    main()
