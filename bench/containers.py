"""What the decoder makes of each container and codec a user may bring: frames the container
lists against frames decoded, error rows, whether ``timestamp_s`` matches the presentation
times ffprobe reads, and whether a rotation tag comes out upright.

    python -m bench.containers SOURCE_VIDEO [--frames 30]

Needs Debian's ``ffmpeg``/``ffprobe`` to write the variants; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from face_iqa.images import IMAGE_EXTENSIONS
from workers.decode import DecodeConfig, DecodeStage, is_video, make_tasks, probe_video

# (file name, ffmpeg output options)
VARIANTS = [
    ("h264.mp4", ["-c:v", "libx264", "-pix_fmt", "yuv420p"]),
    ("h264.mkv", ["-c:v", "libx264", "-pix_fmt", "yuv420p"]),
    ("vp8.webm", ["-c:v", "libvpx", "-b:v", "1M"]),
    ("vp9.webm", ["-c:v", "libvpx-vp9", "-b:v", "1M"]),
    ("h264.mov", ["-c:v", "libx264", "-pix_fmt", "yuv420p"]),
    ("mjpeg.avi", ["-c:v", "mjpeg", "-q:v", "3"]),
    ("vfr.mkv", ["-vf", "setpts='if(lt(N,15),N/30,0.5+(N-15)/10)/TB'", "-fps_mode", "vfr"]),
    ("anim.gif", []),
]
ROTATED = ["h264.mp4", "h264.mov"]


def _ff(*args: object) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *map(str, args)], check=True)


def presentation_times(path: Path) -> np.ndarray:
    """Each frame's presentation time (seconds) as ffprobe reads it."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=best_effort_timestamp_time",
            "-of",
            "csv=p=0",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return np.array([float(x.strip(",")) for x in out.split() if x.strip(",")])


def _decode(path: Path) -> dict:
    tasks = make_tasks([path], DecodeConfig(chunk_frames=8))
    cols = {k: np.array([t[k] for t in tasks], dtype=object) for k in tasks[0]}
    return DecodeStage()(cols)


def row(name: str, path: Path, upright: np.ndarray | None) -> str:
    listed = probe_video(path)[0] if is_video(path) else 1
    out = _decode(path)
    ok = out["status"] == "ok"
    kind = (
        "video"
        if is_video(path)
        else ("image (first frame)" if path.suffix in IMAGE_EXTENSIONS else "?")
    )
    times = "n/a"
    if is_video(path) and ok.any():
        pts = presentation_times(path)
        if len(pts) == ok.sum():
            tol = np.diff(pts).min() if len(pts) > 1 else 0.0
            times = "yes" if np.allclose(out["timestamp_s"][ok], pts, atol=tol) else "no"
    turn = ""
    if upright is not None and ok.any():
        f = out["frame"][np.flatnonzero(ok)[0]]
        same = f.shape == upright.shape and np.abs(f.astype(int) - upright).mean() < 6
        turn = "upright" if same else "sideways"
    return (
        f"| {name} | {kind} | {listed} | {int(ok.sum())} | {int((~ok).sum())} | {times} | {turn} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("--frames", type=int, default=30)
    args = ap.parse_args()
    if shutil.which("ffmpeg") is None:
        raise SystemExit("needs ffmpeg (apt-get install ffmpeg)")
    print(
        "| file | read as | frames listed | frames decoded | error rows | times = ffprobe's | rotation tag |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for name, opts in VARIANTS:
            dst = d / name
            _ff("-i", args.source, "-frames:v", args.frames, *opts, dst)
            upright = None
            print(row(name, dst, None))
            if name in ROTATED:
                side = d / f"side_{name}"
                _ff("-i", args.source, "-frames:v", args.frames, "-vf", "transpose=1", *opts, side)
                rot = d / f"rotated_{name}"
                _ff("-i", side, "-c", "copy", "-metadata:s:v:0", "rotate=90", rot)
                upright = _decode(dst)["frame"][0].astype(int)
                print(row(f"{name}, stored sideways + rotate=90", rot, upright))


if __name__ == "__main__":
    main()
