"""The video worker: one Ray task per input, near the data.

It decodes frames (in a prefetch thread; OpenCV releases the GIL), gets detections from the
input's file or from the shared detector actors, sends each group of frames with boxes to a
shared ReID embedder actor (whose queue mixes the crops of many videos into one forward pass),
and tracks the frames in order with the pipeline's `TrackerShard` (one `DeepSORTTracker` per
stream, same code as the stream job). Results go through the stream job's Parquet tables into
the worker's own attempt folder; the driver publishes them when the video is complete.

A group of frames is in one of three states: detecting, embedding, or ready to track. Up to
`max_inflight_requests` groups are in flight, so decoding, detection, ReID and association of
different groups overlap, while tracking stays in frame order.
"""

from __future__ import annotations

import contextlib
import os
import queue
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ray_deepsort.archive.inputs import (
    ArchiveInput,
    DetectionSource,
    InputError,
    open_source,
    safe_name,
)
from ray_deepsort.archive.output import (
    ARCHIVE_DIR,
    ArchiveStore,
    SourcePartitionedWriter,
    new_attempt_dir,
    staging_dir,
)
from ray_deepsort.io.detections import DetectionTable, FrameDetections, read_detection_table
from ray_deepsort.io.video import FrameSource
from ray_deepsort.pipeline.detector import DetectBatchResult
from ray_deepsort.pipeline.inflight import InflightWindow
from ray_deepsort.pipeline.parquet import batch_file_stem
from ray_deepsort.pipeline.requests import FrameRecord, plan_requests
from ray_deepsort.pipeline.types import SourcePosition, TrackRequest

# Lossless and nearly free to encode: the embedder decodes exactly the pixels we decoded.
STAGES = ("decode", "detect", "reid", "association", "write")


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a video worker needs besides its input (same for every video of a job)."""

    tracker_params: dict[str, Any]
    frame_rate_from_video: bool = True
    reid: bool = False
    frames_per_request: int = 8
    max_embed_crops: int = 256  # crops per embed request (the embedders' coalesced batch)
    max_inflight_requests: int = 4
    chunk_frames: int = 3000
    mot_results: bool = False
    include_unconfirmed: bool = False
    compression: str = "zstd"
    fsync: bool = True
    detections_frame_base: int | None = None
    min_confidence: float | None = None
    progress_interval_s: float = 0.5


@dataclass(frozen=True)
class VideoTask:
    item: ArchiveInput
    key: str
    detections: DetectionSource
    output_root: str
    fail_once_at_frame: int | None = None  # rehearsal: die abruptly here on the first attempt


@dataclass
class VideoOutcome:
    """What a worker returns: counts, timings and the staged files (or why it failed)."""

    key: str
    path: str
    ok: bool
    reason: str = ""
    frames: int = 0
    rows: int = 0
    tracks: int = 0
    streams: list[str] = field(default_factory=list)
    attempt_dir: str = ""
    files: list[str] = field(default_factory=list)  # relative to attempt_dir (and to the root)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    frame_failures: int = 0
    elapsed_s: float = 0.0
    fps: float = 0.0
    width: int = 0
    height: int = 0


@dataclass
class _Frame:
    index: int
    image: np.ndarray | None  # decoded BGR; sent to the embedders as is ("raw")


@dataclass
class _Group:
    frames: list[_Frame]
    detect_ref: Any = None
    embed_refs: list[Any] = field(default_factory=list)
    requests: list[TrackRequest] = field(default_factory=list)
    prepared: bool = False


_END = object()


class _Prefetcher:
    """Decodes frames in a thread, `capacity` frames ahead."""

    def __init__(self, frames: Iterator[tuple[int, np.ndarray | None]], capacity: int) -> None:
        self._frames = frames
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(capacity, 1))
        self._stop = threading.Event()
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="frame-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    index, image = next(self._frames)
                except StopIteration:
                    break
                self.seconds += time.perf_counter() - started
                self._queue.put(_Frame(index, image))
        except BaseException as error:  # handed to the consumer thread
            self._queue.put(error)
        finally:
            self._queue.put(_END)

    def take(self, count: int) -> list[_Frame]:
        """Up to `count` frames ([] at the end); re-raises a decoding error."""
        frames: list[_Frame] = []
        while len(frames) < count:
            item = self._queue.get()
            if item is _END:
                self._queue.put(_END)  # later calls see the end too
                break
            if isinstance(item, BaseException):
                raise item
            frames.append(item)
        return frames

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()


class VideoWorker:
    """Processes one `VideoTask`; `run()` returns a `VideoOutcome` (never raises `InputError`)."""

    def __init__(
        self,
        task: VideoTask,
        settings: WorkerSettings,
        embedders: list[Any],
        detectors: list[Any],
        progress: Any | None = None,
    ) -> None:
        self.task = task
        self.settings = settings
        self.embedders = embedders
        self.detectors = detectors
        self.progress = progress
        self.store = ArchiveStore(task.output_root)
        self.attempt_dir = new_attempt_dir(task.key)
        self.stage_seconds = dict.fromkeys(STAGES, 0.0)
        self.warnings: list[str] = []
        self._streams: list[str] = []  # stream names in first-seen order ("" = the only one)
        self._request_counter = 0
        self._chunk: list[Any] = []
        self._chunk_number: int | None = None
        self._files: list[str] = []
        self._track_ids: dict[str, set[int]] = {}
        self._mot: dict[str, dict[int, Any]] = {}
        self._rows = 0
        self._frames_done = 0
        self._frame_failures = 0
        self._last_progress = 0.0
        self.source: FrameSource | None = None
        self.shard: Any = None

    # ------------------------------------------------------------------ entry point
    def run(self) -> VideoOutcome:
        started = time.perf_counter()
        task = self.task
        outcome = VideoOutcome(key=task.key, path=task.item.path, ok=False)
        try:
            self._process(outcome)
            outcome.ok = True
        except InputError as error:
            outcome.reason = str(error)
            self.store.delete_dir(self.attempt_dir)
        outcome.elapsed_s = time.perf_counter() - started
        outcome.stage_seconds = {k: round(v, 6) for k, v in self.stage_seconds.items()}
        outcome.warnings = self.warnings[:20]
        return outcome

    def _process(self, outcome: VideoOutcome) -> None:
        settings, task = self.settings, self.task
        from ray_deepsort.pipeline.tracker_shard import TrackerShard

        # The driver empties the staging folder before and after each video, so attempt folders
        # found now were left by attempts of this run whose worker died: we redo from frame 0.
        earlier = self.store.list_dirs(staging_dir(task.key))
        if earlier:
            self.warnings.append(
                f"restarted from the first frame after {len(earlier)} crashed attempt(s)"
            )
        self.store.write_bytes(f"{self.attempt_dir}/.started", b"")

        table: DetectionTable | None = None
        if task.detections.kind == "file":
            table = read_detection_table(
                task.detections.path,
                task.detections.format,
                settings.detections_frame_base,
                settings.min_confidence,
            )
            self._streams = table.streams or [""]
        elif not self.detectors:
            raise InputError("no detections: neither a detections file nor a detector")
        need_pixels = settings.reid or task.detections.kind == "detector"
        source = open_source(task.item, need_pixels)
        self.warnings.extend(source.warnings)
        self.source = source
        outcome.fps, outcome.width, outcome.height = source.fps, source.width, source.height
        params = dict(settings.tracker_params)
        if settings.frame_rate_from_video:
            params["frame_rate"] = source.fps
        self.shard = TrackerShard(params, 0, 1)
        self._report(force=True)
        # Decoding is rarely the bottleneck: two requests' worth of frames ahead is enough, and
        # keeps memory small for high-resolution video (a decoded 1080p frame is 6 MB).
        prefetcher = _Prefetcher(source.frames, 2 * settings.frames_per_request)
        try:
            self._loop(prefetcher, table)
        finally:
            prefetcher.close()
            source.close()
            self.stage_seconds["decode"] += prefetcher.seconds
        self.warnings.extend(w for w in source.warnings if w not in self.warnings)
        if self._frames_done == 0:
            raise InputError(f"no frame could be decoded from {task.item.path}")
        if table is not None and table.last_frame >= self._frames_done:
            self.warnings.append(
                f"detections reach frame {table.last_frame} but the video has "
                f"{self._frames_done} frames; later detections ignored"
            )
        if source.frame_count and abs(source.frame_count - self._frames_done) > 1:
            self.warnings.append(
                f"decoded {self._frames_done} frames, the container declares {source.frame_count}"
            )
        self._flush_chunk()
        self._write_mot()
        self._report(force=True)
        outcome.frames = self._frames_done
        outcome.rows = self._rows
        outcome.tracks = sum(len(ids) for ids in self._track_ids.values())
        outcome.streams = [self._stream_id(s) for s in self._streams]
        outcome.attempt_dir = self.attempt_dir
        outcome.files = sorted(self._files)
        outcome.frame_failures = self._frame_failures

    # ------------------------------------------------------------------ pipeline
    def _loop(self, prefetcher: _Prefetcher, table: DetectionTable | None) -> None:
        import ray

        settings = self.settings
        # Groups finish in order once their embeddings are back (`pipeline.inflight`).
        window: InflightWindow[_Group] = InflightWindow(
            settings.max_inflight_requests, lambda group: group.embed_refs
        )
        finished = False
        while True:
            while not finished and not window.full:
                frames = prefetcher.take(settings.frames_per_request)
                if not frames:
                    finished = True
                    break
                group = _Group(frames)
                if table is not None:
                    self._prepare(group, [table.for_frame(f.index) for f in frames])
                elif any(f.image is not None for f in frames):
                    detector = self.detectors[self._next_request() % len(self.detectors)]
                    group.detect_ref = detector.detect.remote(
                        [f.image for f in frames if f.image is not None]
                    )
                else:  # no decodable image in the group: nothing to detect on
                    self._prepare(group, [_no_detections() for _ in frames])
                window.append(group)
            if not window:
                return
            waiting = [g for g in window if not g.prepared]
            if len(waiting) > 1:  # start ReID for every group whose detections are back
                refs = [g.detect_ref for g in waiting]
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                done = set(ready)
                for group in waiting:
                    if group.detect_ref in done:
                        self._prepare_detected(group)
            head = window.head()
            if head is not None and not head.prepared:
                self._prepare_detected(head)  # its embed requests go out now
            popped = window.pop_ready(block=True)
            assert popped is not None  # the window holds a group
            head, embedded = popped
            self.stage_seconds["reid"] += sum(r.decode_seconds + r.embed_seconds for r in embedded)
            output = self.shard.process(head.requests, embedded)
            self.stage_seconds["association"] += output.track_seconds
            for failure in output.failures:
                self._frame_failures += 1
                if self._frame_failures <= 5:
                    self.warnings.append(f"frame {failure.frame_index}: {failure.reason}")
            for frame_result in output.results:
                self._collect(frame_result)
            self._frames_done += len(head.frames)
            self._maybe_crash(head.frames[-1].index)
            self._report()

    def _next_request(self) -> int:
        self._request_counter += 1
        return self._request_counter + zlib.crc32(self.task.key.encode("utf-8"))

    def _prepare_detected(self, group: _Group) -> None:
        import ray

        result: DetectBatchResult = ray.get(group.detect_ref)
        self.stage_seconds["detect"] += result.seconds
        detections = iter(result.frames)
        per_frame = []
        for frame in group.frames:
            # A frame that failed to decode (MOT image) was not sent: it has no detections.
            per_frame.append(next(detections) if frame.image is not None else _no_detections())
        self._prepare(group, per_frame)

    def _prepare(self, group: _Group, per_frame: list[FrameDetections]) -> None:
        """Every stream's frame record of every frame in the group, planned into embed
        requests (the decoded frames as they are) and track requests (`pipeline.requests`)."""
        source = self.source
        assert source is not None
        records: list[FrameRecord] = []
        for frame, detections in zip(group.frames, per_frame, strict=True):
            labels = detections.stream
            if labels is None:  # boxes without a stream label belong to the unnamed stream ""
                labels = np.full(len(detections.xyxy), "")
                if not self._streams:
                    self._streams.append("")
            for name in dict.fromkeys(labels.tolist()):
                if name not in self._streams:
                    self._streams.append(name)
            for name in self._streams:
                mask = None if len(self._streams) == 1 else labels == name
                request = TrackRequest(
                    stream_id=self._stream_id(name),
                    frame_index=frame.index,
                    timestamp=frame.index / source.fps,
                    xyxy=detections.xyxy if mask is None else detections.xyxy[mask],
                    confidence=(
                        detections.confidence if mask is None else detections.confidence[mask]
                    ),
                    class_id=detections.class_id if mask is None else detections.class_id[mask],
                    position=SourcePosition(self.task.item.path, 0, frame.index),
                    frame_shape=(source.height, source.width),
                )
                records.append(FrameRecord(request, frame.image if self.settings.reid else None))
        plan = plan_requests(
            records,
            num_shards=1,
            num_embedders=len(self.embedders) if self.settings.reid else 0,
            max_embed_crops=self.settings.max_embed_crops,
            first_embedder=self._next_request(),
        )
        group.requests = plan.track_requests.get(0, [])
        group.embed_refs = [
            self.embedders[request.embedder].embed_coalesced.remote(request.items)
            for request in plan.embed_requests
        ]
        group.prepared = True
        for frame in group.frames:  # pixels are no longer needed here (the requests have them)
            frame.image = None

    def _stream_id(self, name: str) -> str:
        return self.task.key if name == "" else f"{self.task.key}/{name}"

    # ------------------------------------------------------------------ output
    def _collect(self, result: Any) -> None:
        chunk = result.frame_index // self.settings.chunk_frames
        if self._chunk_number is not None and chunk != self._chunk_number:
            self._flush_chunk()
        self._chunk_number = chunk
        self._chunk.append(result)
        confirmed = result.tracker_id >= 0
        self._rows += int(len(confirmed) if self.settings.include_unconfirmed else confirmed.sum())
        if confirmed.any():
            self._track_ids.setdefault(result.stream_id, set()).update(
                result.tracker_id[confirmed].tolist()
            )
        if self.settings.mot_results:
            from ray_deepsort.core.detections import Detections

            per_frame = self._mot.setdefault(result.stream_id, {})
            if confirmed.any():
                per_frame[result.frame_index + 1] = Detections(
                    xyxy=result.xyxy[confirmed],
                    confidence=result.confidence[confirmed],
                    tracker_id=result.tracker_id[confirmed],
                )

    def _flush_chunk(self) -> None:
        if not self._chunk:
            return
        started = time.perf_counter()
        settings = self.settings
        writer = SourcePartitionedWriter(
            self.store.uri_of(self.attempt_dir),
            self.task.key,
            compression=settings.compression,
            include_unconfirmed=settings.include_unconfirmed,
            fsync=settings.fsync,
        )
        stem = batch_file_stem(self.task.key, 0, self._chunk_number * settings.chunk_frames)
        prefix = writer.root.rstrip("/") + "/"
        for path in writer.write(stem, self._chunk):
            self._files.append(path[len(prefix) :])
        self._chunk = []
        self.stage_seconds["write"] += time.perf_counter() - started

    def _write_mot(self) -> None:
        if not self.settings.mot_results:
            return
        from ray_deepsort.io.mot import write_results

        started = time.perf_counter()
        for name in self._streams:
            stream_id = self._stream_id(name)
            file_name = self.task.key if name == "" else f"{self.task.key}__{safe_name(name)}"
            relative = f"mot/{file_name}.txt"
            with tempfile.TemporaryDirectory() as folder:
                local = os.path.join(folder, "results.txt")
                write_results(local, self._mot.get(stream_id, {}))
                with open(local, "rb") as handle:
                    self.store.write_bytes(f"{self.attempt_dir}/{relative}", handle.read())
            self._files.append(relative)
        self.stage_seconds["write"] += time.perf_counter() - started

    # ------------------------------------------------------------------ progress, rehearsal
    def _report(self, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last_progress < self.settings.progress_interval_s:
            return
        self._last_progress = now
        total = self.source.frame_count if self.source is not None else 0
        self.progress.update.remote(self.task.key, self._frames_done, total)

    def _maybe_crash(self, frame_index: int) -> None:
        at = self.task.fail_once_at_frame
        if at is None or frame_index < at:
            return
        marker = f"{staging_dir(self.task.key)}/.crashed-once"
        if self.store.exists(marker):
            return
        self.store.write_bytes(marker, b"rehearsed worker crash\n")
        os._exit(17)  # no cleanup, no exception: exactly what a killed worker leaves behind


def _no_detections() -> FrameDetections:
    return FrameDetections(
        xyxy=np.zeros((0, 4), np.float32),
        confidence=np.zeros(0, np.float32),
        class_id=np.zeros(0, np.int64),
    )


def process_video(
    task: VideoTask,
    settings: WorkerSettings,
    embedders: list[Any],
    detectors: list[Any],
    progress: Any | None = None,
) -> VideoOutcome:
    """Ray task body (also callable in-process with actor handles)."""
    return VideoWorker(task, settings, embedders, detectors, progress).run()


__all__ = [
    "ARCHIVE_DIR",
    "STAGES",
    "VideoOutcome",
    "VideoTask",
    "VideoWorker",
    "WorkerSettings",
    "process_video",
]
