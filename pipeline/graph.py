"""The Ray Data graph: decode -> detect+align -> score -> face rules.

The one place that says ``num_gpus``, ``batch_size`` and pool sizes. ``ray`` is imported
here and in :mod:`pipeline.run_job` only.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FrameWorker",
    "RayConfig",
    "build_dataset",
    "init_ray",
    "plan_resources",
    "task_split",
]


@dataclass(frozen=True)
class RayConfig:
    """Attributes:
    address: a Ray cluster to join (``auto``, ``ray://host:port``, ``host:port``); ``null``
        uses ``RAY_ADDRESS`` when set, else starts an embedded local instance.
    num_cpus: CPUs of the embedded local instance (``null``: all).
    detect_batch: frames per detector call (``null``: 32 with GPUs, else 8).
    score_batch: faces per scorer call.
    detect_actors: detector pool size (``null``: 2 per GPU, so that one actor's host work
        (decoding results, aligning crops) overlaps the other's GPU work; 1 without GPUs).
    score_actors: scorer pool size (``null``: 1 per GPU, else 1).
    detect_gpus / score_gpus: GPU fraction per actor when GPUs are present (the default
        two detectors and one scorer fit on one card).
    cpus_per_actor: CPU reservation per model actor; kept below 1 so that on a small
        machine the decoders still get a CPU (a pool that claims every CPU stalls readers).
    max_retries: restarts of a failed worker / retries of its task.
    fuse: one actor pool runs decode -> detect -> score -> face rules on each decode task,
        so frames and crops never travel between processes (moving them cost more than
        detection itself). ``false``: one pool per stage (scale detector and scorer apart).
    workers: fused pool size (``null``: 3 per GPU, so that one worker's decoding and
        aligning overlap the others' GPU work; without GPUs, one per 4 CPUs and at least
        2, each with an equal share of the CPUs as torch threads, so that one worker's
        serial parts (decoding, aligning, Python) overlap the other's model work: on the
        2-core machine two 1-thread workers ran 1.1x one 2-thread worker). Never more
        workers than the run has tasks.
    worker_gpus: GPU fraction of a fused worker (``null``: the workers share each card
        evenly, 0.33 for three; Ray starts no more workers on a card than their fractions
        fit, so a fixed value caps ``workers``).
    worker_calls: calls a fused worker runs at once, on threads that share its models
        (Ray Data's ``max_concurrent_calls_per_actor`` with true multi-threading): one
        call decodes and aligns on the CPU while another's networks run on the GPU.
    """

    address: str | None = None
    num_cpus: int | None = None
    detect_batch: int | None = None
    score_batch: int = 64
    detect_actors: int | None = None
    score_actors: int | None = None
    detect_gpus: float = 0.3
    score_gpus: float = 0.3
    cpus_per_actor: float = 0.5
    max_retries: int = 3
    fuse: bool = True
    workers: int | None = None
    worker_gpus: float | None = None
    worker_calls: int = 1

    def __post_init__(self) -> None:
        if self.worker_calls < 1:
            raise ValueError(f"ray.worker_calls must be >= 1, got {self.worker_calls}")


def init_ray(cfg: RayConfig) -> Any:
    """Join the configured cluster, or start (or reuse) the embedded local instance."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return ray
    address = cfg.address or os.environ.get("RAY_ADDRESS") or None
    import logging

    kwargs: dict[str, Any] = {
        "ignore_reinit_error": True,
        "log_to_driver": False,
        "include_dashboard": False,
        "logging_level": logging.WARNING,
    }
    if os.environ.get("FACEIQA_MALLOC_TUNING", "1") != "0":
        # Ray Data calls a worker on a pool thread; glibc gives such threads their own
        # arenas, where the CPU allocator setting (face_iqa/cpu_alloc.py) cannot reach and
        # every call faults its activations in again (detection 1.65x slower there on the
        # 2-core machine). One arena from the start of each worker process avoids that.
        from face_iqa.cpu_alloc import ONEDNN_CACHE

        arenas = os.environ.get("MALLOC_ARENA_MAX", "1")
        cache = os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE)
        kwargs["runtime_env"] = {
            "env_vars": {"MALLOC_ARENA_MAX": arenas, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": cache}
        }
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=cfg.num_cpus, **kwargs)
    from ray.data import DataContext

    # Ray Data reports every finished dataset at INFO in the driver: keep the CLI quiet
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    return ray


def plan_resources(
    cfg: RayConfig, cluster_gpus: float, cluster_cpus: float = 2.0
) -> dict[str, dict[str, Any]]:
    """Per-stage Ray arguments: GPUs (fractional, so detector and scorer share a card)
    when the cluster has them, else CPU actors with a fractional CPU reservation."""
    gpu = cluster_gpus > 0
    cpus = max(1, int(cluster_cpus))
    n_gpu = max(1, int(cluster_gpus)) if gpu else 1
    # Plain keyword arguments: Ray 2.60 warns that this style is deprecated, but its
    # `ray_remote_args=` parameter ends up as an (invalid) option key in this release.
    retries = {"max_restarts": cfg.max_retries, "max_task_retries": cfg.max_retries}
    detect = {
        "batch_size": cfg.detect_batch or (32 if gpu else 8),
        "actors": cfg.detect_actors or (2 * n_gpu if gpu else 1),
        "num_cpus": cfg.cpus_per_actor,
        **retries,
    }
    score = {
        "batch_size": cfg.score_batch,
        "actors": cfg.score_actors or n_gpu,
        "num_cpus": cfg.cpus_per_actor,
        **retries,
    }
    if gpu:
        detect["num_gpus"] = cfg.detect_gpus
        score["num_gpus"] = cfg.score_gpus
    worker = {
        "batch_size": 1,  # one decode task (a video chunk or a group of images) per call
        "actors": cfg.workers or (3 * n_gpu if gpu else min(cpus, max(2, cpus // 4))),
        # below 1 CPU each, so that three GPU workers also fit on a small GPU machine
        "num_cpus": cfg.cpus_per_actor,
        **retries,
    }
    if gpu:
        per_card = math.ceil(worker["actors"] / n_gpu)
        worker["num_gpus"] = cfg.worker_gpus or math.floor(100 / per_card) / 100
    return {
        "worker": worker,
        "decode": {
            "batch_size": 1,
            "num_cpus": 0.5,
            "max_retries": cfg.max_retries,
        },
        "detect": detect,
        "score": score,
        "threshold": {
            "batch_size": cfg.score_batch,
            "num_cpus": 0.25,
            "max_retries": cfg.max_retries,
        },
    }


def _cluster_plan(cfg: RayConfig) -> tuple[dict[str, dict[str, Any]], float, float]:
    """:func:`plan_resources` for the running cluster: ``(plan, GPUs, CPUs)``."""
    import ray

    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0.0))
    cpus = float(resources.get("CPU", 1.0))
    return plan_resources(cfg, gpus, cpus), gpus, cpus


def task_split(cfg: Any) -> tuple[int, int]:
    """``(min_tasks, min_chunk)`` for :func:`workers.decode.make_tasks`: with the fused
    pool, two tasks per worker, so that a short clip is shared by every worker and none
    waits on a longer last chunk; chunks no shorter than a detector batch. ``cfg`` is the
    resolved :class:`pipeline.config.Config`; Ray must be initialised."""
    if not cfg.ray.fuse:
        return 1, 1
    res = _cluster_plan(cfg.ray)[0]
    return 2 * res["worker"]["actors"], res["detect"]["batch_size"]


def build_dataset(
    tasks: list[dict[str, Any]],
    job: Any,
    staging: str | None = None,
    reid: bool = False,
    stage_classes: dict[str, type] | None = None,
) -> Any:
    """The streaming dataset of face rows (with ``face_pass``) for ``tasks``: one execution
    for every task of every source of a run.

    ``job`` is the resolved :class:`pipeline.config.Config`. No pixels leave the workers:
    with ``staging`` (a folder the workers can reach) each worker writes the crops of the
    faces that pass the face rules there, named by :func:`pipeline.writers.crop_file`;
    with ``reid`` it adds each face's 128-d dlib ``descriptor``. With the fused pool each row
    carries its task's ``task_id`` (the task dict's, else its position) and ``task_rows``
    (how many rows that task gives in all), so the driver knows when a task, and so a
    source, is complete; the per-stage graph's rows carry neither. ``stage_classes`` may replace the ``detect`` or ``score``
    stage class (same contract).
    """
    import ray

    from workers.detect import DetectStage
    from workers.score import ScoreStage

    res, gpus, cpus = _cluster_plan(job.ray)
    cfg = job
    detect_cfg = cfg.detect
    score_cfg = cfg.score
    if gpus > 0:  # the stage actors land on GPU nodes: let them use the card
        from dataclasses import replace

        det = detect_cfg.detector
        # one detector call per Ray batch: the whole batch goes through the pyramid at once
        det = replace(
            det, device="cuda", batch_size=max(det.batch_size, res["detect"]["batch_size"])
        )
        detect_cfg = replace(detect_cfg, detector=det)
        score_cfg = replace(score_cfg, scorer=replace(score_cfg.scorer, device="cuda"))

    # Tasks carry a list of sources; Ray wants rectangular columns, so one row per task with
    # the source list joined (no path contains a NUL byte).
    rows = [
        {**t, "task_id": int(t.get("task_id", i)), "source": "\x00".join(t["source"])}
        for i, t in enumerate(tasks)
    ]
    # One task per block streams best (a map task's small outputs are merged into one block
    # until it ends), but a million one-row blocks cost the driver: at most _MAX_BLOCKS.
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), _MAX_BLOCKS)))
    classes = {"detect": DetectStage, "score": ScoreStage, **(stage_classes or {})}
    # with identities alone, only faces that pass the face rules need a descriptor (dlib's
    # costs about 60 ms a face on a CPU core): a face too poor to keep is not judged by who
    # it is; re-linking tracks needs every face's
    passing_only = bool(getattr(getattr(cfg, "identity", None), "enabled", False))
    passing_only = passing_only and not cfg.track.reid
    emit = {"cfg": cfg.threshold, "staging": staging, "reid": reid, "passing_only": passing_only}
    if cfg.ray.fuse:
        args = dict(res["worker"])
        actors = max(1, min(args.pop("actors"), len(rows)))  # no idle workers to start
        threads = 0
        if gpus == 0:  # CPU workers share the node's cores (Ray would give each one thread)
            threads = max(1, int(cpus) // actors)
        calls = job.ray.worker_calls
        pool = ray.data.ActorPoolStrategy(
            size=actors,
            max_concurrent_calls_per_actor=calls,
            enable_true_multi_threading=calls > 1,
        )
        return ds.map_batches(
            FrameWorker,
            fn_constructor_kwargs={
                "detect": (classes["detect"], detect_cfg),
                "score": (classes["score"], score_cfg),
                "emit": emit,
                "threads": threads,
                "frames_per_call": res["detect"]["batch_size"],
            },
            compute=pool,
            **args,
        )
    ds = ds.map_batches(_decode_rows, **res["decode"])
    for stage, stage_cfg, name in (
        (classes["detect"], detect_cfg, "detect"),
        (classes["score"], score_cfg, "score"),
    ):
        args = dict(res[name])
        pool = ray.data.ActorPoolStrategy(size=args.pop("actors"))
        ds = ds.map_batches(stage, fn_constructor_kwargs={"cfg": stage_cfg}, compute=pool, **args)
    ds = ds.map_batches(_emit, fn_kwargs=emit, **res["threshold"])
    return ds


_MAX_BLOCKS = 4096


class FrameWorker:
    """The fused worker: decode a task, detect and align, score, apply the face rules and
    write the passing faces' crops, in one process; only rows leave it. Each stage is still
    its own class (``workers/``); this only chains them, ``frames_per_call`` frames at a
    time. ``emit``: the keyword arguments of :func:`_emit`. ``threads``: torch CPU threads
    for this worker (0: leave as is)."""

    def __init__(
        self,
        detect: tuple[type, Any],
        score: tuple[type, Any],
        emit: dict[str, Any],
        threads: int = 0,
        frames_per_call: int = 8,
    ) -> None:
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.detect = detect[0](detect[1])
        self.score = score[0](score[1])
        self.emit = emit
        self.frames_per_call = frames_per_call
        self.recognizer = None
        if emit.get("reid"):
            from face_iqa.faces.recognizer import DlibRecognizer

            self.recognizer = DlibRecognizer()

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        from workers.decode import iter_frame_batches, task_of

        if len(batch["kind"]) != 1:  # batch_size is 1: one task a call
            raise ValueError(f"FrameWorker takes one task a call, got {len(batch['kind'])}")
        batch = dict(batch)
        batch["source"] = np.array([str(batch["source"][0]).split("\x00")], dtype=object)
        tid = int(np.asarray(batch.pop("task_id"))[0])
        # a few frames at a time: a chunk of 1080p frames held whole costs hundreds of MB
        parts = [
            _emit(self.score(self.detect(frames)), recognizer=self.recognizer, **self.emit)
            for frames in iter_frame_batches(task_of(batch, 0), self.frames_per_call)
        ]
        out = parts[0] if len(parts) == 1 else _concat(parts)
        n = len(out["source"])
        out["task_id"] = np.full(n, tid, np.int64)
        out["task_rows"] = np.full(n, n, np.int64)
        return out


def _concat(parts: list[dict]) -> dict:
    """Concatenate batches with the same columns (rows of one task, in order)."""
    import numpy as np

    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def _decode_rows(batch: dict) -> dict:
    """Ray adapter of the per-stage graph: split the joined source lists, then decode."""
    import numpy as np

    from workers.decode import DecodeStage

    batch = dict(batch)
    srcs = np.empty(len(batch["source"]), dtype=object)
    for i, s in enumerate(batch["source"]):
        srcs[i] = str(s).split("\x00")
    batch["source"] = srcs
    return DecodeStage()(batch)


_recognizers: dict[str, Any] = {}


def _emit(
    batch: dict,
    cfg: Any,
    staging: str | None,
    reid: bool,
    recognizer: Any = None,
    passing_only: bool = False,
) -> dict:
    """The face rules, then what the driver needs of the pixels, computed here: the crops of
    passing faces written to ``staging``; with ``reid`` each face's dlib ``descriptor``. The
    ``crop`` column never leaves the worker."""
    import numpy as np

    from face_iqa.schema import STATUS_OK
    from pipeline.writers import crop_file, write_png
    from workers.threshold import ThresholdStage

    out = ThresholdStage(cfg)(batch)
    crops = out.pop("crop", None)
    n = len(out["source"])
    ok = (np.asarray(out["face_index"]) >= 0) & (np.asarray(out["status"]).astype(str) == STATUS_OK)
    if staging is not None and crops is not None:
        from pathlib import Path

        for k in np.flatnonzero(np.asarray(out["face_pass"], bool) & ok):
            name = crop_file(
                str(out["source"][k]), int(out["frame_index"][k]), int(out["face_index"][k])
            )
            write_png(crops[k], Path(staging) / name)
    if reid:
        if recognizer is None:  # the per-stage path: one recognizer per process
            if "dlib" not in _recognizers:
                from face_iqa.faces.recognizer import DlibRecognizer

                _recognizers["dlib"] = DlibRecognizer()
            recognizer = _recognizers["dlib"]
        desc = np.full((n, 128), np.nan)
        wanted = ok & np.asarray(out["face_pass"], bool) if passing_only else ok
        for k in np.flatnonzero(wanted) if crops is not None else []:
            try:
                desc[k] = recognizer.image_descriptor(crops[k])
            except RuntimeError:  # dlib could not place its shape: leave unknown
                pass
        out["descriptor"] = desc
    return out
