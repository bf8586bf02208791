"""The archive driver: find inputs, skip finished ones, run one video worker task per input.

The driver runs on the Ray cluster this process is connected to. It starts the shared actors
(coalescing ReID embedders, optional detector actors, a progress board), keeps at most
`workers` video tasks running (longest inputs first, so the tail of the run is short), and for
every finished video publishes its files and records it in the manifest. A video whose worker
dies is retried by Ray from its first frame (`max_retries`); one that cannot be read fails
alone and is reported. Re-running the same command skips every input whose manifest entry
says done with the same content fingerprint and the same tracking configuration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ray_deepsort.archive.inputs import (
    ArchiveInput,
    DetectionSource,
    InputError,
    assign_keys,
    discover_inputs,
    fingerprint,
    resolve_detections,
)
from ray_deepsort.archive.output import (
    ARCHIVE_DIR,
    ArchiveStore,
    Manifest,
    ManifestEntry,
    publish,
    staging_dir,
)
from ray_deepsort.archive.progress import ProgressBoard, ProgressDisplay
from ray_deepsort.archive.worker import STAGES, VideoOutcome, VideoTask, WorkerSettings
from ray_deepsort.pipeline.embedder import (
    AppearanceGate,
    ModelChoice,
    forward_batch_size,
    known_model_name,
    tracker_params_with_gate,
)

logger = logging.getLogger("ray_deepsort.archive")


class ArchiveConfigError(ValueError):
    """An archive option that is not valid; the message names it."""


def default_tracker_params() -> dict[str, Any]:
    from ray_deepsort.core.parameters import TrackerConfig

    return TrackerConfig().params()


@dataclass
class ArchiveConfig:
    """Options of one archive run (see docs/archive.md for each)."""

    inputs: list[str]
    output: str
    # detections: a file per input ("auto" or a pattern), or a detector plugin
    detections: str = "auto"
    detections_frame_base: int | None = None
    min_confidence: float | None = None
    detector: str = ""
    detector_kwargs: dict[str, Any] = field(default_factory=dict)
    detector_batch_frames: int = 16
    detectors: int = 0  # 0: one per GPU, or one CPU actor
    detector_num_cpus: float = 1.0
    # ReID model (`ModelChoice`'s vocabulary; "none": motion only)
    model: str = "mobilenetv2-imagenet"
    model_path: str = ""
    model_backend: str = "auto"
    model_threads: int = 0  # OpenVINO / ONNX Runtime threads; 0 = embedder_num_cpus
    model_precision: str = "auto"
    pretrained: bool = True
    device: str = "auto"
    input_size: tuple[int, int] | None = None  # None: the model's own
    # tracker
    tracker: dict[str, Any] = field(default_factory=default_tracker_params)
    frame_rate_from_video: bool = True
    # actors and workers
    embedders: int = 0
    embedder_num_cpus: float = 1.0
    use_gpu: str | bool = "auto"
    max_embed_crops: int = 256  # crops merged into one embedder batch
    forward_batch: int = 0  # crops per forward pass; 0: DEFAULT_CPU_FORWARD_BATCH on CPU, else all
    coalesce_wait_ms: float = 2.0
    workers: int = 0  # concurrent video tasks; 0 = what the cluster's CPUs allow
    worker_num_cpus: float = 1.0
    worker_resources: dict[str, float] = field(default_factory=dict)
    frames_per_request: int = 8
    max_inflight_requests: int = 4
    max_retries: int = 3
    start_timeout_s: float = 300.0
    # output
    chunk_frames: int = 3000
    mot_results: bool = False
    include_unconfirmed: bool = False
    compression: str = "zstd"
    fsync: bool = True
    fingerprint: str = "stat"
    force: bool = False
    progress: str = "auto"
    rehearse_worker_crash: str = ""  # "KEY@FRAME": that worker dies once there (drills)

    @property
    def reid_enabled(self) -> bool:
        weight = float(self.tracker.get("appearance_weight", 0.5))
        return self.model.lower() != "none" and weight > 0

    def validate(self) -> ArchiveConfig:
        if not self.inputs:
            raise ArchiveConfigError("give at least one input (file, folder, glob or @list)")
        if not self.output:
            raise ArchiveConfigError("output must be set")
        positive = {
            "chunk_frames": self.chunk_frames,
            "frames_per_request": self.frames_per_request,
            "max_inflight_requests": self.max_inflight_requests,
            "max_embed_crops": self.max_embed_crops,
            "detector_batch_frames": self.detector_batch_frames,
            "worker_num_cpus": self.worker_num_cpus,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ArchiveConfigError(f"{name} must be > 0, got {value}")
        for name in (
            "workers",
            "embedders",
            "detectors",
            "max_retries",
            "coalesce_wait_ms",
            "forward_batch",
        ):
            if getattr(self, name) < 0:
                raise ArchiveConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.fingerprint not in ("stat", "sha256"):
            raise ArchiveConfigError("fingerprint must be 'stat' or 'sha256'")
        if self.progress not in ("auto", "bar", "log", "none"):
            raise ArchiveConfigError("progress must be auto, bar, log or none")
        if str(self.use_gpu).lower() not in ("auto", "true", "false"):
            raise ArchiveConfigError("use_gpu must be auto, true or false")
        if self.detector and ":" not in self.detector:
            raise ArchiveConfigError(f"detector must be module:callable, got {self.detector!r}")
        if self.rehearse_worker_crash and "@" not in self.rehearse_worker_crash:
            raise ArchiveConfigError("rehearse_worker_crash must be KEY@FRAME")
        try:
            known_model_name(self.model_choice())
        except ValueError as error:
            raise ArchiveConfigError(str(error)) from None
        from ray_deepsort.core import DeepSORTTracker
        from ray_deepsort.core.parameters import tracker_kwargs

        try:
            DeepSORTTracker(**tracker_kwargs(self.tracker))
        except (TypeError, ValueError) as error:
            raise ArchiveConfigError(f"tracker: {error}") from None
        return self

    def use_gpu_setting(self) -> str | bool:
        value = str(self.use_gpu).lower()
        return "auto" if value == "auto" else value == "true"

    def model_choice(self, on_gpu: bool = False) -> ModelChoice:
        """The embedders' model, run in forward passes of `forward_batch_size` crops."""
        forward = forward_batch_size(self.forward_batch, on_gpu, self.max_embed_crops)
        return ModelChoice(
            name=self.model,
            path=self.model_path,
            backend=self.model_backend,
            device=self.device,
            threads=self.model_threads,
            precision=self.model_precision,
            pretrained=self.pretrained,
            max_batch_size=forward,
            input_size=None if self.input_size is None else tuple(self.input_size),
        )

    def tracker_params(self) -> tuple[dict[str, Any], AppearanceGate]:
        """The trackers' parameters with the appearance gate resolved for the model (the
        workers' trackers get embeddings, not the model), and that gate."""
        return tracker_params_with_gate(
            self.tracker, self.model_choice() if self.reid_enabled else None
        )

    def config_hash(self) -> str:
        """Hash of everything that changes the output rows or files (not how fast we get them).

        A manifest entry made under another hash is not "done": a new model, new tracker
        parameters or new detections redo the video.
        """
        tracker, _ = self.tracker_params()
        relevant = {
            "tracker": tracker,
            "frame_rate_from_video": self.frame_rate_from_video,
            "reid": (
                {
                    "model": self.model,
                    "path": self.model_path,
                    "known": known_model_name(self.model_choice()),
                    "backend": self.model_backend,
                    "precision": self.model_precision,
                    "pretrained": self.pretrained,
                    "input_size": None if self.input_size is None else list(self.input_size),
                }
                if self.reid_enabled
                else None
            ),
            "detections": (
                {"detector": self.detector, "kwargs": self.detector_kwargs}
                if self.detector
                else {
                    "pattern": self.detections,
                    "frame_base": self.detections_frame_base,
                }
            ),
            "min_confidence": self.min_confidence,
            "chunk_frames": self.chunk_frames,
            "mot_results": self.mot_results,
            "include_unconfirmed": self.include_unconfirmed,
        }
        text = json.dumps(relevant, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def worker_settings(self) -> WorkerSettings:
        tracker, _ = self.tracker_params()
        return WorkerSettings(
            tracker_params=tracker,
            frame_rate_from_video=self.frame_rate_from_video,
            reid=self.reid_enabled,
            frames_per_request=self.frames_per_request,
            max_embed_crops=self.max_embed_crops,
            max_inflight_requests=self.max_inflight_requests,
            chunk_frames=self.chunk_frames,
            mot_results=self.mot_results,
            include_unconfirmed=self.include_unconfirmed,
            compression=self.compression,
            fsync=self.fsync,
            detections_frame_base=self.detections_frame_base,
            min_confidence=self.min_confidence,
        )


@dataclass
class Failure:
    path: str
    key: str
    reason: str


@dataclass
class ArchiveSummary:
    """What a run did; printed at the end (and as JSON with --summary-json)."""

    inputs: int = 0
    skipped: int = 0
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    frames: int = 0
    rows: int = 0
    tracks: int = 0
    elapsed_s: float = 0.0
    frames_per_second: float = 0.0
    startup_s: float = 0.0  # until the actors were ready (model loading)
    worker_seconds: float = 0.0  # sum over videos of their workers' wall time
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    workers: int = 0
    actors: str = ""
    embed_batches: dict[str, float] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    output: str = ""

    @property
    def stage_share(self) -> dict[str, float]:
        total = sum(self.stage_seconds.values())
        return {k: (v / total if total else 0.0) for k, v in self.stage_seconds.items()}

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["stage_share"] = self.stage_share
        return data

    def render(self) -> str:
        lines = [
            f"archive: {self.output}",
            f"  inputs {self.inputs}: {self.succeeded} done, {self.skipped} skipped "
            f"(already done), {self.failed} failed",
            f"  frames {self.frames}, track rows {self.rows}, tracks {self.tracks}; "
            f"video workers ran {self.worker_seconds:.1f}s in all",
            f"  {self.elapsed_s:.1f}s ({self.startup_s:.1f}s starting actors), "
            f"{self.frames_per_second:.1f} frames/s with {self.workers} video worker(s); "
            f"{self.actors}",
        ]
        if any(self.stage_seconds.values()):
            share = self.stage_share
            lines.append(
                "  time: "
                + ", ".join(
                    f"{stage} {self.stage_seconds[stage]:.1f}s ({100 * share[stage]:.0f}%)"
                    for stage in STAGES
                )
            )
        if self.embed_batches.get("batches"):
            lines.append(
                f"  ReID: {int(self.embed_batches['crops'])} crops in "
                f"{int(self.embed_batches['batches'])} batches, "
                f"{self.embed_batches['requests_per_batch']:.1f} requests (videos' groups) "
                "per batch"
            )
        for failure in self.failures:
            lines.append(f"  FAILED {failure.path}: {failure.reason}")
        for warning in self.warnings[:50]:
            lines.append(f"  warning: {warning}")
        return "\n".join(lines)


@dataclass
class _Planned:
    item: ArchiveInput
    key: str
    detections: DetectionSource
    fingerprint: dict[str, Any]
    previous: ManifestEntry | None


class ArchiveJob:
    """One run over the archive; `run()` needs a connected Ray (`ray.init` first)."""

    def __init__(self, config: ArchiveConfig, connect: Callable[[], None] | None = None) -> None:
        """`connect` is called before the first Ray call (not at all when nothing is to do)."""
        self.config = config.validate()
        self._connect = connect
        self.store = ArchiveStore(config.output)
        self.manifest = Manifest(self.store)
        self.summary = ArchiveSummary(output=self.store.uri)
        self._actors: list[Any] = []

    # ------------------------------------------------------------------ planning
    def plan(self, record: bool = True) -> list[_Planned]:
        """Inputs still to do; skipped and unusable ones are counted in the summary.

        `record=False` (dry runs) writes nothing, not even failed inputs to the manifest.
        """
        cfg, summary = self.config, self.summary
        items, problems = discover_inputs(cfg.inputs)
        for argument, problem in problems:
            summary.failures.append(Failure(argument, "", problem))
        entries, manifest_problems = self.manifest.load()
        summary.warnings.extend(f"manifest entry ignored: {p}" for p in manifest_problems)
        keys = assign_keys(items, {path: entry.key for path, entry in entries.items()})
        summary.inputs = len(items)
        config_hash = cfg.config_hash()
        todo: list[_Planned] = []
        for item in items:
            key = keys[item.path]
            previous = entries.get(item.path)
            try:
                detections = (
                    DetectionSource("detector")
                    if cfg.detector
                    else resolve_detections(item, cfg.detections)
                )
                content = fingerprint(item, detections, cfg.fingerprint).to_dict()
            except (InputError, OSError) as error:
                self._fail(item, key, str(error), previous, record=record)
                continue
            if not cfg.force and self.manifest.is_done(previous, content, config_hash):
                summary.skipped += 1
                continue
            todo.append(_Planned(item, key, detections, content, previous))
        todo.sort(key=lambda p: (-p.item.size, p.item.path))  # longest first
        return todo

    # ------------------------------------------------------------------ run
    def run(self) -> ArchiveSummary:
        started = time.monotonic()
        cfg = self.config
        self.store.delete_dir(f"{ARCHIVE_DIR}/staging")  # attempts of an earlier, killed run
        todo = self.plan()
        try:
            if todo:
                if self._connect is not None:
                    self._connect()
                self._run_tasks(todo)
        finally:
            for actor in self._actors:
                _kill(actor)
            elapsed = time.monotonic() - started
            self.summary.elapsed_s = round(elapsed, 3)
            self.summary.frames_per_second = round(self.summary.frames / max(elapsed, 1e-9), 2)
        logger.debug("archive config hash %s", cfg.config_hash())
        return self.summary

    def _run_tasks(self, todo: list[_Planned]) -> None:
        import ray

        from ray_deepsort.archive.worker import process_video

        cfg = self.config
        started = time.monotonic()
        embedders, detectors = self._start_actors()
        board = ray.remote(ProgressBoard).options(num_cpus=0).remote()
        self._actors.append(board)
        ray.get(board.snapshot.remote())
        self.summary.startup_s = round(time.monotonic() - started, 3)
        workers = self._worker_count()
        self.summary.workers = min(workers, len(todo))
        settings = cfg.worker_settings()
        logger.info("%s", cfg.tracker_params()[1].describe())
        task_fn = ray.remote(process_video).options(
            num_cpus=cfg.worker_num_cpus,
            max_retries=cfg.max_retries,
            resources=dict(cfg.worker_resources) or None,
        )
        crash_key, _, crash_frame = cfg.rehearse_worker_crash.partition("@")
        display = ProgressDisplay(len(todo), "none" if cfg.progress == "none" else cfg.progress)
        pending = list(reversed(todo))
        running: dict[Any, _Planned] = {}
        try:
            while pending or running:
                while pending and len(running) < workers:
                    planned = pending.pop()
                    task = VideoTask(
                        item=planned.item,
                        key=planned.key,
                        detections=planned.detections,
                        output_root=self.store.uri,
                        fail_once_at_frame=int(crash_frame) if planned.key == crash_key else None,
                    )
                    ref = task_fn.remote(task, settings, embedders, detectors, board)
                    running[ref] = planned
                    display.started_video(planned.key)
                ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
                for ref in ready:
                    planned = running.pop(ref)
                    frames = self._finish(planned, ref)
                    display.finished_video(planned.key, frames)
                if display.mode != "none":
                    display.refresh(ray.get(board.snapshot.remote()))
        finally:
            display.close()
            for ref in running:
                ray.cancel(ref, force=True)
        if embedders:
            stats = ray.get([e.coalescer_stats.remote() for e in embedders])
            totals = {k: float(sum(s[k] for s in stats)) for k in ("requests", "batches", "crops")}
            totals["requests_per_batch"] = totals["requests"] / max(totals["batches"], 1.0)
            self.summary.embed_batches = totals

    def _finish(self, planned: _Planned, ref: Any) -> int:
        """Publish a finished video (or record its failure); returns its frame count."""
        import ray

        try:
            outcome: VideoOutcome = ray.get(ref)
        except ray.exceptions.RayError as error:
            self._fail(planned.item, planned.key, _reason(error), planned.previous)
            self.store.delete_dir(staging_dir(planned.key))
            return 0
        self.summary.processed += 1
        for warning in outcome.warnings:
            self.summary.warnings.append(f"{planned.key}: {warning}")
        if not outcome.ok:
            self._fail(planned.item, planned.key, outcome.reason, planned.previous)
            self.store.delete_dir(staging_dir(planned.key))
            return 0
        previous_files = planned.previous.files if planned.previous else []
        files = publish(self.store, planned.key, outcome.attempt_dir, outcome.files, previous_files)
        self.manifest.record(
            ManifestEntry(
                key=planned.key,
                path=planned.item.path,
                kind=planned.item.kind,
                status="done",
                fingerprint=planned.fingerprint,
                config_hash=self.config.config_hash(),
                frames=outcome.frames,
                rows=outcome.rows,
                tracks=outcome.tracks,
                streams=outcome.streams,
                files=files,
                warnings=outcome.warnings,
                elapsed_s=round(outcome.elapsed_s, 3),
                finished_at=_now(),
            )
        )
        self.store.delete_dir(staging_dir(planned.key))
        summary = self.summary
        summary.succeeded += 1
        summary.worker_seconds += outcome.elapsed_s
        summary.frames += outcome.frames
        summary.rows += outcome.rows
        summary.tracks += outcome.tracks
        for stage, seconds in outcome.stage_seconds.items():
            summary.stage_seconds[stage] = summary.stage_seconds.get(stage, 0.0) + seconds
        logger.info(
            "done %s: %d frames, %d rows, %d tracks in %.1fs",
            planned.key,
            outcome.frames,
            outcome.rows,
            outcome.tracks,
            outcome.elapsed_s,
        )
        return outcome.frames

    def _fail(
        self,
        item: ArchiveInput,
        key: str,
        reason: str,
        previous: ManifestEntry | None,
        record: bool = True,
    ) -> None:
        self.summary.failed += 1
        self.summary.failures.append(Failure(item.path, key, reason))
        if record:
            logger.warning("failed %s: %s", item.path, reason)
        if not record or (previous is not None and previous.status == "done"):
            return  # keep the record (and files) of the last good run
        self.manifest.record(
            ManifestEntry(
                key=key,
                path=item.path,
                kind=item.kind,
                status="failed",
                reason=reason,
                config_hash=self.config.config_hash(),
                finished_at=_now(),
            )
        )

    # ------------------------------------------------------------------ actors
    def _start_actors(self) -> tuple[list[Any], list[Any]]:
        import ray

        from ray_deepsort.pipeline.actors import plan_actors, start_actors
        from ray_deepsort.pipeline.coalesce import CoalescingEmbedderActor
        from ray_deepsort.pipeline.detector import DetectorSpec, start_detectors

        cfg = self.config
        resources = ray.cluster_resources()
        plan = plan_actors(
            resources,
            reid_enabled=cfg.reid_enabled,
            num_shards=0,  # trackers live in the video workers: no shard actors
            num_embedders=cfg.embedders,
            embedder_num_cpus=cfg.embedder_num_cpus,
            use_gpu=cfg.use_gpu_setting(),
        )
        embedders: list[Any] = []
        described = []
        if cfg.reid_enabled:
            embedders = start_actors(
                plan,
                cfg.model_choice(on_gpu=plan.use_gpu),
                start_timeout_s=cfg.start_timeout_s,
                embedder_class=CoalescingEmbedderActor,
                embedder_kwargs={
                    "max_batch_crops": cfg.max_embed_crops,
                    "max_wait_ms": cfg.coalesce_wait_ms,
                },
                # Embedding is idempotent: a restarted actor can safely redo the calls it lost.
                embedder_options={"max_restarts": 3, "max_task_retries": 3},
            ).embedders
            self._actors.extend(embedders)
            where = "GPU" if plan.use_gpu else "CPU"
            described.append(f"{len(embedders)} {where} ReID embedder(s)")
        else:
            described.append("motion only (no ReID)")
        detectors: list[Any] = []
        if cfg.detector:
            gpus = float(resources.get("GPU", 0.0))
            gpu_setting = cfg.use_gpu_setting()
            on_gpu = gpus >= 1 if gpu_setting == "auto" else bool(gpu_setting)
            count = cfg.detectors or (max(1, int(gpus)) if on_gpu else 1)
            spec = DetectorSpec(cfg.detector, dict(cfg.detector_kwargs), cfg.detector_batch_frames)
            detectors = start_detectors(
                spec,
                count,
                num_cpus=cfg.detector_num_cpus,
                num_gpus=1.0 if on_gpu else 0.0,
                start_timeout_s=cfg.start_timeout_s,
            )
            self._actors.extend(detectors)
            described.append(f"{count} {'GPU' if on_gpu else 'CPU'} detector(s) {cfg.detector}")
        self.summary.actors = ", ".join(described)
        self._actor_cpus = (
            len(embedders) * cfg.embedder_num_cpus + len(detectors) * cfg.detector_num_cpus
        )
        return embedders, detectors

    def _worker_count(self) -> int:
        import ray

        cfg = self.config
        if cfg.workers:
            return cfg.workers
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        free = cpus - self._actor_cpus
        return max(1, math.floor(free / cfg.worker_num_cpus + 1e-9))


def _kill(actor: Any) -> None:
    import ray

    try:
        ray.kill(actor)
    except Exception as error:  # already gone
        logger.debug("kill actor: %s", error)


def _reason(error: BaseException) -> str:
    """A one-line reason for a task error (the worker's own exception when there is one)."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}".splitlines()[0][:500]
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:500]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_archive(
    config: ArchiveConfig, *, ray_address: str | None = None, num_cpus: int | None = None
) -> ArchiveSummary:
    """Connect to Ray (unless connected) and run the archive job."""

    def connect() -> None:
        from ray_deepsort.pipeline.cluster import connect_ray

        options: dict[str, Any] = {"log_to_driver": True, "include_dashboard": False}
        if num_cpus:
            options["num_cpus"] = num_cpus
        connect_ray(ray_address or "", **options)

    return ArchiveJob(config, connect=connect).run()
