"""Detection and end-to-end throughput, in one process and one report.

    python -m bench.pipeline_bench [--device auto] [--frames 32] [--video PATH] [--repeat N]
                                   [--variant 'key=value;key=value' ...]
    python -m bench.pipeline_bench --photos 500 [--config configs/dataset_clean.yaml]

1. Reference (facenet-pytorch ``MTCNN.detect``) vs fast detection, frames/s, on frames of
   the shared 1080p video resized to 720p and at 1080p, same batch size.
2. End to end on a 720p clip: ``faceiqa run`` (decode, detect, align, score, threshold,
   write; Ray started before the clock) vs a naive loop (per frame: facenet-pytorch detect,
   crop each box, score the faces).
3. With ``--photos N`` (instead of 1 and 2): a folder of N photos made from the shared
   images (seeded, :mod:`bench.photos`): ``faceiqa run`` against ``faceiqa score`` (one
   process, no Ray) and a naive loop (per photo: facenet-pytorch detect, crop each box,
   score), images/s and ratios. Ray is started before the clock (its start is printed).
Prints the device, the versions and the ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.common import describe_machine, timed

DEFAULT_VIDEO = Path(__file__).resolve().parents[2] / "shared/data/videos/facenet_example.mp4"


def _iter_frames(video: Path, n: int, size: tuple[int, int] | None):
    """``n`` RGB frames of ``video`` (looping a short clip), resized to ``size``."""
    cap = cv2.VideoCapture(str(video))
    k = 0
    while k < n:
        ok, bgr = cap.read()
        if not ok:
            cap.release()
            cap = cv2.VideoCapture(str(video))  # loop a short clip
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if size is not None:
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        yield rgb
        k += 1
    cap.release()


def _frames(video: Path, n: int, size: tuple[int, int] | None) -> np.ndarray:
    return np.stack(list(_iter_frames(video, n, size)))


def _write_clip(frames, path: Path, fps: float = 25.0) -> Path:
    wr = None
    for f in frames:
        if wr is None:
            h, w = f.shape[:2]
            wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        wr.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    wr.release()
    return path


def _parity(ref_out: list, fast_out: list) -> str:
    """Same face count per frame, matched boxes' worst IoU and landmark offset."""
    from torchvision.ops import box_iou

    same, worst_iou, worst_px = 0, 1.0, 0.0
    for (rb, _, rp), det in zip(ref_out, fast_out):
        rb = np.asarray(rb if rb is not None else np.zeros((0, 4)), float).reshape(-1, 4)
        rp = np.asarray(rp if rp is not None else np.zeros((0, 5, 2)), float).reshape(-1, 5, 2)
        same += len(rb) == len(det)
        if len(rb) and len(det):
            m = box_iou(torch.as_tensor(det.boxes, dtype=torch.float64), torch.as_tensor(rb))
            best = m.max(1)
            worst_iou = min(worst_iou, float(best.values.min()))
            d = np.abs(det.landmarks - rp[best.indices.numpy()]).max()
            worst_px = max(worst_px, float(d))
    return (
        f"parity: same face count on {same}/{len(ref_out)} frames, worst matched IoU "
        f"{worst_iou:.3f}, worst landmark offset {worst_px:.2f} px"
    )


def detection(
    device: torch.device,
    frames_720: np.ndarray,
    frames_1080: np.ndarray,
    batch: int,
    iters: int,
    profile: bool = False,
) -> dict[str, float]:
    from facenet_pytorch import MTCNN

    from face_iqa.faces.detect import DetectorConfig, build_detector

    ref = MTCNN(keep_all=True, device=device)
    fast = build_detector(DetectorConfig(device=str(device), backend="fast", batch_size=batch))
    res = {}
    for name, frames in (("720p", frames_720), ("1080p", frames_1080)):
        chunks = [list(frames[i : i + batch]) for i in range(0, len(frames), batch)]

        def run_ref(chunks=chunks) -> list:
            out = []
            for c in chunks:
                b, p, pts = ref.detect(c, landmarks=True)
                out += list(zip(b, p, pts))
            return out

        def run_fast(chunks=chunks) -> list:
            out = []
            for c in chunks:
                out += fast.detect(c)
            return out

        t_ref = timed(run_ref, device, 1, iters)
        t_fast = timed(run_fast, device, 1, iters)
        n = len(frames)
        res[f"ref_{name}"], res[f"fast_{name}"] = n / t_ref, n / t_fast
        print(
            f"detection {name:>5}: reference {n / t_ref:8.2f} frames/s   fast "
            f"{n / t_fast:8.2f} frames/s   ratio {t_ref / t_fast:5.2f}x",
            flush=True,
        )
        print(f"  {name} {_parity(run_ref(), run_fast())}", flush=True)
        if profile and name == "720p":
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as prof

            acts = [ProfilerActivity.CPU] + (
                [ProfilerActivity.CUDA] if device.type == "cuda" else []
            )
            with prof(activities=acts) as p:
                fast.detect(chunks[0])
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
            key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
            print(p.key_averages().table(sort_by=key, row_limit=18), flush=True)
    return res


def _run_rate(clip: Path, cfg, tmp: Path, tag: str) -> tuple[int, float]:
    from pipeline.run_job import run

    t0 = time.perf_counter()
    frames = run([str(clip)], tmp / tag, cfg, progress=False, log=lambda m: None)
    return len(frames), time.perf_counter() - t0


def _naive_one(rgb: np.ndarray, ref, scorer) -> None:
    """The naive loop's work on one frame: facenet-pytorch detect, crop each box, score."""
    from face_iqa.faces.align import crop_box

    boxes, _ = ref.detect(rgb)
    if boxes is not None:
        scorer(np.stack([crop_box(rgb, np.asarray(b, float), 224)[0] for b in boxes]))


def _naive_rate(
    device: torch.device, clip: Path, naive_frames: int, ref, scorer
) -> tuple[int, float]:
    """The naive loop: per frame, facenet-pytorch detect, crop each box, score the faces."""

    cap = cv2.VideoCapture(str(clip))
    t0 = time.perf_counter()
    k = 0
    while k < naive_frames:
        ok, bgr = cap.read()
        if not ok:
            break
        _naive_one(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), ref, scorer)
        k += 1
    t_naive = time.perf_counter() - t0
    cap.release()
    return k, t_naive


def end_to_end(
    device: torch.device,
    clip: Path,
    n_frames: int,
    naive_frames: int,
    sets: list[str],
    repeat: int = 1,
    variants: list[str] = (),
    short_frames: int = 32,
) -> dict[str, float]:
    """``repeat`` > 1 alternates the two loops that many times and compares the best
    (shortest) time of each, which is steadier on a shared machine. Each of ``variants``
    (``key=value`` overrides joined by ``;``) is then run once more on the short and the
    long clip, in the same Ray instance, and compared with the first run of the defaults."""
    from facenet_pytorch import MTCNN

    from face_iqa.model.scorer import build_scorer
    from pipeline.config import load_config
    from pipeline.graph import init_ray

    dev = str(device)
    cfg_sets = [f"detect.detector.device={dev}", f"score.scorer.device={dev}", *sets]
    cfg = load_config(None, cfg_sets)
    init_ray(cfg.ray)  # start Ray before the clock
    ref = MTCNN(keep_all=True, device=device)
    scorer = build_scorer(cfg.score.scorer)  # the naive loop scores as the run does
    runs, naives = [], []
    with tempfile.TemporaryDirectory() as tmp:
        short = _write_clip(_read_clip(clip, short_frames), Path(tmp) / "short.mp4")
        _run_rate(short, cfg, Path(tmp), "warm")  # first-use costs (imports, page cache)
        n_short, t_short = _run_rate(short, cfg, Path(tmp), "short")
        for r in range(repeat):
            n, t_run = _run_rate(clip, cfg, Path(tmp), f"long{r}")
            runs.append(t_run)
            if r == 0:
                summary = json.loads((Path(tmp) / "long0" / "summary.json").read_text())
            k, t_naive = _naive_rate(device, clip, naive_frames, ref, scorer)
            naives.append(t_naive)
            if repeat > 1:
                print(
                    f"  repeat {r + 1}/{repeat}: faceiqa run {n / t_run:8.2f} frames/s   "
                    f"naive loop {k / t_naive:8.2f} frames/s",
                    flush=True,
                )
    assert n == n_frames and n_short == short_frames, (n, n_short)
    t_run, t_naive = min(runs), min(naives)
    # a run pays a fixed start (actors start, models load); the marginal rate is the
    # throughput of a long video once the pipeline is full (rough: a short clip is cut in
    # smaller chunks than a long one, so that every worker gets a share of it)
    marginal = (n - n_short) / max(t_run - t_short, 1e-9)
    best = " (best of each)" if repeat > 1 else ""
    print(
        f"end to end 720p ({n} frames){best}: faceiqa run {n / t_run:8.2f} frames/s "
        f"(fixed start {t_short:.1f} s for {n_short} frames; marginal {marginal:8.2f} frames/s)   "
        f"naive loop ({k} frames) {k / t_naive:8.2f} frames/s   ratio {t_naive / k * n / t_run:5.2f}x",
        flush=True,
    )
    # stage seconds summed over rows (a stage's actors work in parallel with each other and
    # with the other stages): where the time of the long run went
    print(f"  faceiqa run stage seconds: {summary['timing_s']}", flush=True)
    # the rate at which results reached the driver after the first one: the throughput once
    # running, from the long run alone
    print(f"  faceiqa run stream: {summary['stream']}", flush=True)
    res = {"run_fps": n / t_run, "marginal_fps": marginal, "naive_fps": k / t_naive}
    res["fps_after_first"] = summary["stream"]["fps_after_first"]
    with tempfile.TemporaryDirectory() as tmp:
        short = _write_clip(_read_clip(clip, short_frames), Path(tmp) / "short.mp4")
        for v, variant in enumerate(variants):
            extra = [x.strip() for x in variant.split(";") if x.strip()]
            vcfg = load_config(None, [*cfg_sets, *extra])
            _, t_vs = _run_rate(short, vcfg, Path(tmp), f"variant{v}_short")
            n_v, t_v = _run_rate(clip, vcfg, Path(tmp), f"variant{v}")
            timing = json.loads((Path(tmp) / f"variant{v}" / "summary.json").read_text())
            v_marginal = (n_v - short_frames) / max(t_v - t_vs, 1e-9)
            print(
                f"variant {'; '.join(extra)}: faceiqa run {n_v / t_v:8.2f} frames/s "
                f"({runs[0] / t_v:5.2f}x the defaults' first run; fixed start {t_vs:.1f} s, "
                f"marginal {v_marginal:8.2f} frames/s)",
                flush=True,
            )
            print(f"  stage seconds: {timing['timing_s']}", flush=True)
            print(f"  stream: {timing['stream']}", flush=True)
            res[f"variant{v}_fps"] = n_v / t_v
            res[f"variant{v}_marginal_fps"] = v_marginal
    return res


class _WorkerMemory:
    """Samples the resident memory of this machine's Ray pipeline workers (processes titled
    ``ray::MapWorker...``) every second while it runs: peak and median per worker, GiB."""

    def __init__(self) -> None:
        import threading

        self.samples: dict[int, list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    if not (proc / "cmdline").read_bytes().startswith(b"ray::MapWorker"):
                        continue
                    status = (proc / "status").read_text().splitlines()
                except OSError:  # gone, or not Linux
                    continue
                kib = [int(ln.split()[1]) for ln in status if ln.startswith("VmRSS:")]
                if kib:
                    self.samples.setdefault(int(proc.name), []).append(kib[0] / 2**20)

    def __enter__(self) -> _WorkerMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def describe(self) -> str:
        if not self.samples:
            return "no worker seen"
        return ", ".join(
            f"pid {pid}: median {np.median(v):.2f} GiB, peak {max(v):.2f} GiB"
            for pid, v in self.samples.items()
        )


def photos(
    device: torch.device, n: int, config: str | None, sets: list[str], naive_n: int | None
) -> dict[str, float]:
    """``faceiqa run`` vs ``faceiqa score`` vs a naive loop on ``n`` made photos."""
    from facenet_pytorch import MTCNN

    from bench.photos import make_photos
    from face_iqa.images import load_image
    from face_iqa.model.scorer import build_scorer
    from pipeline.config import load_config
    from pipeline.graph import init_ray
    from pipeline.image_jobs import score_images
    from pipeline.run_job import run

    dev = str(device)
    cfg = load_config(
        config, [f"detect.detector.device={dev}", f"score.scorer.device={dev}", *sets]
    )
    t0 = time.perf_counter()
    init_ray(cfg.ray)
    print(f"Ray started in {time.perf_counter() - t0:.1f} s (before the clocks)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_photos(n, tmp / "photos")
        make_photos(8, tmp / "warm", seed=1)
        score_images([str(tmp / "warm")], tmp / "warm.parquet", cfg, progress=False)
        run([str(tmp / "warm")], tmp / "warm_run", cfg, progress=False, log=lambda m: None)

        t0 = time.perf_counter()
        table = score_images([str(tmp / "photos")], tmp / "score.parquet", cfg, progress=False)
        t_score = time.perf_counter() - t0
        with _WorkerMemory() as mem:
            t0 = time.perf_counter()
            frames = run(
                [str(tmp / "photos")], tmp / "run", cfg, progress=False, log=lambda m: None
            )
            t_run = time.perf_counter() - t0
        summary = json.loads((tmp / "run" / "summary.json").read_text())
        n_parts = len(list((tmp / "run" / ".parts").glob("*.parquet")))
        assert len(frames) == n and table["source"].nunique() == n, (len(frames), n)

        ref = MTCNN(keep_all=True, device=device)
        scorer = build_scorer(cfg.score.scorer)
        todo = paths[: naive_n or n]
        t0 = time.perf_counter()
        for p in todo:
            _naive_one(load_image(p), ref, scorer)
        t_naive = time.perf_counter() - t0
    r_run, r_score, r_naive = n / t_run, n / t_score, len(todo) / t_naive
    print(
        f"{n} photos: faceiqa run {r_run:7.2f} images/s ({t_run:.1f} s)   faceiqa score "
        f"{r_score:7.2f} images/s ({t_score:.1f} s)   naive loop ({len(todo)}) {r_naive:7.2f} "
        f"images/s   run/score {r_run / r_score:5.2f}x   run/naive {r_run / r_naive:5.2f}x",
        flush=True,
    )
    print(f"  faceiqa run stage seconds: {summary['timing_s']}", flush=True)
    print(f"  faceiqa run stream: {summary['stream']}; .parts/ files: {n_parts}", flush=True)
    print(f"  worker resident memory: {mem.describe()}", flush=True)
    return {
        "photos_run_ips": r_run,
        "photos_score_ips": r_score,
        "photos_naive_ips": r_naive,
        "photos_parts": n_parts,
    }


def _read_clip(clip: Path, n: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(clip))
    out = []
    while len(out) < n:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return np.stack(out)


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--frames", type=int, default=None, help="default: 64 on GPU, 16 on CPU")
    ap.add_argument("--e2e-frames", type=int, default=None, help="default: 1536 GPU, 240 CPU")
    ap.add_argument("--naive-frames", type=int, default=None, help="default: 128 GPU, all on CPU")
    ap.add_argument(
        "--short-frames", type=int, default=32, help="the clip that measures the fixed start"
    )
    ap.add_argument("--set", action="append", default=[], help="config overrides for the run")
    ap.add_argument("--profile", action="store_true", help="profile one fast 720p batch")
    ap.add_argument("--batch", type=int, default=None, help="default: 32 on GPU, 8 on CPU")
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=1, help="alternate run/naive N times, best")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        help="after the defaults, one more run with these overrides ('k=v;k=v'), same Ray",
    )
    ap.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--skip-detect", action="store_true")
    ap.add_argument("--photos", type=int, help="the photo-folder benchmark on N made photos")
    ap.add_argument("--config", help="YAML preset for --photos (e.g. configs/dataset_clean.yaml)")
    ap.add_argument("--naive-photos", type=int, help="photos for the naive loop (default: all)")
    args = ap.parse_args(argv)
    from face_iqa.faces.detect import resolve_device

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
    if args.photos:
        return photos(device, args.photos, args.config, args.set, args.naive_photos)
    f1080 = _frames(args.video, n, None)
    f720 = np.stack([cv2.resize(f, (1280, 720), interpolation=cv2.INTER_AREA) for f in f1080])
    res = {} if args.skip_detect else detection(device, f720, f1080, batch, iters, args.profile)
    if not args.skip_e2e:
        e2e_n = args.e2e_frames or (1536 if gpu else 240)
        naive_n = args.naive_frames or (128 if gpu else e2e_n)
        with tempfile.TemporaryDirectory() as tmp:
            clip = _write_clip(_iter_frames(args.video, e2e_n, (1280, 720)), Path(tmp) / "720p.mp4")
            res.update(
                end_to_end(
                    device,
                    clip,
                    e2e_n,
                    naive_n,
                    args.set,
                    args.repeat,
                    args.variant,
                    min(args.short_frames, e2e_n),
                )
            )
    return res


if __name__ == "__main__":
    main()
