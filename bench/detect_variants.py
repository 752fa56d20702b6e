"""Fast-detection variants against the reference, in one process.

    python -m bench.detect_variants [--device auto] [--frames 64] [--batch 32] [--size 720]

Times facenet-pytorch's ``MTCNN.detect`` and the fast path with GPU-side choices switched
one by one: NMS (torchvision's one call over group-shifted boxes, or the padded all-groups
NMS), P-Net's precision (float32 with TF32, float16, bfloat16) and memory layout
(channels-last). Each line gives frames/s, the ratio to the reference and the parity with
it (same face count per frame, worst matched IoU, worst landmark offset). ``--profile``
prints the CUDA kernels of one batch of the last variant.
"""

from __future__ import annotations

import argparse
import copy

import cv2
import numpy as np
import torch

from bench.common import describe_machine, timed
from bench.pipeline_bench import DEFAULT_VIDEO, _frames, _parity

VARIANTS = {
    "shift-nms fp32": dict(padded=False, dtype=torch.float32, cl=False),
    "padded-nms fp32": dict(padded=True, dtype=torch.float32, cl=False),
    "padded-nms fp16": dict(padded=True, dtype=torch.float16, cl=False),
    "padded-nms bf16": dict(padded=True, dtype=torch.bfloat16, cl=False),
    "padded-nms fp32 channels-last": dict(padded=True, dtype=torch.float32, cl=True),
    "padded-nms fp16 channels-last": dict(padded=True, dtype=torch.float16, cl=True),
}


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=720, help="frame height (16:9)")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--only", action="append", default=[], help="variant names to run")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)

    from facenet_pytorch import MTCNN

    import face_iqa.faces.fast_mtcnn as fm
    from face_iqa.faces.detect import DetectorConfig, build_detector, resolve_device

    device = resolve_device(args.device)
    print(describe_machine(device), flush=True)
    frames = _frames(DEFAULT_VIDEO, args.frames, None)
    if args.size != frames.shape[1]:
        size = (round(args.size * 16 / 9), args.size)
        frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
    chunks = [list(frames[i : i + args.batch]) for i in range(0, len(frames), args.batch)]
    n = len(frames)

    ref = MTCNN(keep_all=True, device=device)

    def run_ref() -> list:
        out = []
        for c in chunks:
            b, p, pts = ref.detect(c, landmarks=True)
            out += list(zip(b, p, pts))
        return out

    t_ref = timed(run_ref, device, 1, args.iters)
    ref_out = run_ref()
    print(f"{args.size}p reference: {n / t_ref:8.2f} frames/s", flush=True)

    base = build_detector(DetectorConfig(device=str(device), backend="fast", batch_size=args.batch))
    group_nms = fm._group_nms
    res = {"ref": n / t_ref}
    names = args.only or list(VARIANTS)
    for name in names:
        v = VARIANTS[name]
        det = copy.copy(base)
        pnet = copy.deepcopy(base.pnet).to(v["dtype"])
        if v["cl"]:
            pnet = pnet.to(memory_format=torch.channels_last)
        det.pnet = pnet
        fm._group_nms = lambda *a, _p=v["padded"], **k: group_nms(*a, **{**k, "padded": _p})
        try:

            def run_fast(det=det) -> list:
                out = []
                for c in chunks:
                    out += det.detect(c)
                return out

            t = timed(run_fast, device, 1, args.iters)
            par = _parity(ref_out, run_fast())
            if args.profile and name == names[-1]:
                from torch.profiler import ProfilerActivity, profile

                acts = [ProfilerActivity.CPU]
                if device.type == "cuda":
                    acts.append(ProfilerActivity.CUDA)
                with profile(activities=acts) as p:
                    det.detect(chunks[0])
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
        finally:
            fm._group_nms = group_nms
        res[name] = n / t
        print(
            f"{args.size}p {name:32s} {n / t:8.2f} frames/s  {t_ref / t:5.2f}x the reference  "
            f"{par}",
            flush=True,
        )
    if args.profile:
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(p.key_averages().table(sort_by=key, row_limit=20), flush=True)
    return res


if __name__ == "__main__":
    main()
