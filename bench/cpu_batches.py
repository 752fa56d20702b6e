"""Batch sizes on the CPU: detector frames per call and scorer faces per pass.

    python -m bench.cpu_batches [--threads 1]

Each setting runs in a fresh process (so that one setting's memory does not colour the
next one's): 16 frames of the shared 1080p video at 1080p, 720p and 640x360, detected 1 and
8 frames a call; 128 faces scored (mirror average) 8, 16 and 64 a pass. Prints the time,
the resident memory and the ratio against the largest batch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

VIDEO = Path(__file__).resolve().parents[2] / "shared/data/videos/facenet_example.mp4"


def _rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def _one(kind: str, batch: int, side: int, threads: int, video: Path) -> dict:
    import cv2
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    if kind == "detect":
        from face_iqa.faces.detect import DetectorConfig, build_detector

        cap = cv2.VideoCapture(str(video))
        frames = [cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2RGB) for _ in range(16)]
        if side:
            size = (side, side * 9 // 16)
            frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
        det = build_detector(DetectorConfig(device="cpu", cpu_batch_size=batch))
        det.detect(frames[:1])
        t0 = time.perf_counter()
        for i in range(0, 16, 8):
            det.detect(frames[i : i + 8])
        return {"seconds": time.perf_counter() - t0, "rss_gib": _rss_gib()}
    from face_iqa.model.scorer import ScorerConfig, build_scorer

    scorer = build_scorer(ScorerConfig(device="cpu", cpu_batch_size=batch))
    crops = np.random.default_rng(0).integers(0, 255, (128, 224, 224, 3), dtype=np.uint8)
    scorer(crops[:8])
    t0 = time.perf_counter()
    scorer(crops)
    return {"seconds": time.perf_counter() - t0, "rss_gib": _rss_gib()}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--video", type=Path, default=VIDEO)
    ap.add_argument("--one", nargs=3, metavar=("KIND", "BATCH", "SIDE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        kind, batch, side = args.one[0], int(args.one[1]), int(args.one[2])
        print(json.dumps(_one(kind, batch, side, args.threads, args.video)))
        return []
    plan = [("detect", side, [8, 1]) for side in (0, 1280, 640)] + [("score", 0, [64, 16, 8])]
    rows = []
    for kind, side, batches in plan:
        base = None
        for b in batches:
            cmd = [sys.executable, "-m", "bench.cpu_batches", "--threads", str(args.threads)]
            cmd += ["--video", str(args.video), "--one", kind, str(b), str(side)]
            res = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            base = base or res["seconds"]
            what = f"detect {side or 1920}px" if kind == "detect" else "score 128 faces"
            print(
                f"{what:<16} batch {b:>2}: {res['seconds']:6.2f} s  {res['rss_gib']:.2f} GiB  "
                f"{base / res['seconds']:5.2f}x the first batch size",
                flush=True,
            )
            rows.append({"kind": kind, "side": side, "batch": b, **res})
    return rows


if __name__ == "__main__":
    main()
