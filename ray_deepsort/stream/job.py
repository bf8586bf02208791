"""The stream job driver: Kafka frames -> Ray embedders, tracker shards -> Parquet, results topic.

One kafka-python consumer (consumer group, manual commits) polls micro-batches. Each batch is
decoded and validated here (bad messages go to the dead-letter topic), frames that need ReID are
grouped across streams into embed requests spread over the embedder actors, and every tracker
shard gets its frames in order together with the embedder results' ObjectRefs, so Ray runs
embedding and tracking as a pipeline without the driver waiting in between. At most
`batch.max_inflight_batches` batches are in flight: when the window is full the driver waits
instead of polling (back-pressure). Batches finish in order: Parquet files are written
atomically, results and dead letters are produced and flushed, and only then are the batch's
offsets committed. A replay after a crash therefore starts at the first uncommitted frame and
rewrites the same Parquet files (deterministic names; uncommitted leftovers are deleted when a
partition is assigned), so the output holds every frame exactly once.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ray_deepsort.pipeline.checkpoint import CheckpointStore, PartitionManifest, StreamCheckpoint
from ray_deepsort.pipeline.embedder import ModelSpec, forward_batch_size
from ray_deepsort.pipeline.parquet import ParquetResultWriter, batch_file_stem
from ray_deepsort.pipeline.sharding import shard_of
from ray_deepsort.pipeline.types import (
    EmbedItem,
    FrameResult,
    ShardOutput,
    SourcePosition,
    TrackRequest,
)
from ray_deepsort.stream.config import StreamConfig
from ray_deepsort.stream.metrics import JobMetrics
from ray_deepsort.stream.wire import (
    FrameMessage,
    WireFormatError,
    dead_letter_headers,
    decode_frame,
    encode_result,
)

logger = logging.getLogger("ray_deepsort.stream")


class SimulatedCrash(RuntimeError):
    """Raised by `job.fail_after_batches` (rehearsing a crash between sink writes and commit)."""


def job_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ray-deepsort")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass
class JobSummary:
    """What one run did; returned by `StreamJob.run` and printed by the CLI as JSON."""

    frames: int = 0
    dead_letters: int = 0
    dead_letter_codes: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    files_written: int = 0
    leftovers_removed: int = 0
    elapsed_s: float = 0.0
    frames_per_second: float = 0.0
    processing_s: float = 0.0  # first batch submitted -> last batch committed
    processing_frames_per_second: float = 0.0
    stop_reason: str = ""
    output_path: str = ""
    actors: str = ""
    committed: dict[str, int] = field(default_factory=dict)
    checkpoints: int = 0  # partition checkpoints (manifests) written

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class _DeadLetter:
    record: Any
    reason: str


@dataclass
class _Batch:
    """A micro-batch between submission and commit."""

    batch_id: int
    polled_at: float
    records: dict[tuple[str, int, int], Any]
    dead: list[_DeadLetter]
    shard_refs: list[Any]
    first_offsets: dict[Any, int]
    last_offsets: dict[Any, int]
    decode_s: float
    revoked: set[Any] = field(default_factory=set)  # partitions lost while in flight
    seen_last: dict[Any, int] = field(default_factory=dict)  # incl. replayed records
    replay_below: dict[Any, int] = field(default_factory=dict)  # output only from here on
    state_refs: list[Any] = field(default_factory=list)  # shard state_dicts after this batch
    stream_positions: dict[str, tuple[Any, int]] = field(default_factory=dict)


@dataclass
class _Snapshot:
    """Shard states after a finished batch, waiting for the commit that covers them."""

    state_refs: list[Any]
    stream_positions: dict[str, tuple[Any, int]]  # stream -> (partition, last offset)
    covered: dict[Any, int]  # partition -> next offset the states cover


class StreamJob:
    """Runs the stream job on the Ray cluster this process is connected to (`ray.init` first).

    `consumer_factory` / `producer_factory` exist for tests that need to wrap the clients.
    """

    def __init__(
        self,
        config: StreamConfig,
        *,
        consumer_factory: Callable[[StreamConfig], Any] | None = None,
        producer_factory: Callable[[StreamConfig], Any] | None = None,
    ) -> None:
        self.config = config.validate()
        self._consumer_factory = consumer_factory or make_consumer
        self._producer_factory = producer_factory or make_producer
        self._stop = threading.Event()
        self.summary = JobSummary(output_path=config.output.path)
        self._version = job_version()

    def request_stop(self) -> None:
        """Finish the batches in flight, commit, and return from `run` (thread- and signal-safe)."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop gracefully (what `ray job stop` and Ctrl-C send)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.request_stop())

    # ------------------------------------------------------------------ run
    def run(self) -> JobSummary:
        import ray

        from ray_deepsort.pipeline.actors import plan_actors, start_actors

        cfg = self.config
        started = time.monotonic()
        if cfg.kafka.create_topics:
            self._create_topics()
        plan = plan_actors(
            ray.cluster_resources(),
            reid_enabled=cfg.reid_enabled,
            num_shards=cfg.actors.num_shards,
            num_embedders=cfg.actors.num_embedders,
            embedder_num_cpus=cfg.actors.embedder_num_cpus,
            shard_num_cpus=cfg.actors.shard_num_cpus,
            use_gpu=cfg.use_gpu_setting(),
        )
        logger.info("starting actors: %s", plan.describe())
        model = ModelSpec(
            name=cfg.model.name,
            checkpoint=cfg.model.checkpoint,
            pretrained=cfg.model.pretrained,
            device=cfg.model.device,
            max_batch_size=forward_batch_size(
                cfg.model.forward_batch_size, plan.use_gpu, cfg.batch.max_embed_crops
            ),
            input_size=(cfg.model.input_height, cfg.model.input_width),
        )
        self._init_state()
        self.pool = start_actors(plan, model, cfg.tracker.params(), cfg.actors.start_timeout_s)
        self.summary.actors = plan.describe()
        crashed = False
        try:
            self.writer = ParquetResultWriter(
                cfg.output.path,
                compression=cfg.output.compression,
                include_unconfirmed=cfg.output.include_unconfirmed,
                fsync=cfg.output.fsync,
            )
            self.metrics = JobMetrics(cfg.job.metrics, {"group": cfg.kafka.group_id})
            self.producer = self._producer_factory(cfg)
            self.consumer = self._consumer_factory(cfg)
            self.consumer.subscribe(cfg.kafka.frames_topics)
            self.summary.stop_reason = self._loop()
            self._drain()
            self._snapshot_now()
            self._commit(force=True)
            if not self.pending_commit:
                self._write_checkpoint()  # everything is committed: the final state is safe
            logger.info("stopped (%s): %s", self.summary.stop_reason, self._progress_line())
        except SimulatedCrash:
            crashed = True
            self.summary.stop_reason = "simulated crash"
            raise
        finally:
            self._close(crashed)
            elapsed = time.monotonic() - started
            self.summary.elapsed_s = round(elapsed, 3)
            self.summary.frames_per_second = round(self.summary.frames / max(elapsed, 1e-9), 2)
            if self.first_submit_at is not None and self.last_finish_at is not None:
                busy = max(self.last_finish_at - self.first_submit_at, 1e-9)
                self.summary.processing_s = round(busy, 3)
                self.summary.processing_frames_per_second = round(self.summary.frames / busy, 2)
        return self.summary

    def _init_state(self) -> None:
        self.inflight: collections.deque[_Batch] = collections.deque()
        self.owned: set[Any] = set()
        self.next_offset: dict[Any, int] = {}
        self.partition_streams: dict[Any, set[str]] = collections.defaultdict(set)
        self.pending_commit: dict[Any, int] = {}
        self.committed: dict[Any, int] = {}
        self.last_commit = time.monotonic()
        self.batch_counter = 0
        self.records_seen = 0
        self.first_assignment_at: float | None = None
        self.last_record_at: float | None = None
        self.stage_sums: collections.Counter[str] = collections.Counter()
        self.embed_requests = 0
        self.embed_crops = 0
        self.progress_at = time.monotonic()
        self.progress_frames = 0
        self.first_submit_at: float | None = None
        self.last_finish_at: float | None = None
        # checkpoints (see ray_deepsort.pipeline.checkpoint)
        self.checkpoints: CheckpointStore | None = None
        if self.config.checkpoint.enabled:
            self.checkpoints = CheckpointStore(self.config.output.path, self.config.output.fsync)
        self.manifests: dict[Any, PartitionManifest] = {}
        self.covered: dict[Any, int] = {}  # partition -> next offset tracked (replay included)
        self.stream_position: dict[str, tuple[Any, int]] = {}  # last offset sent to a shard
        self.persisted: dict[str, tuple[Any, int]] = {}  # what the stream's file holds
        self.skip_through: dict[str, tuple[Any, int]] = {}  # restored state includes these
        self.replay_below: dict[Any, int] = {}  # partition -> committed offset during replay
        self.initial_manifest_due: set[Any] = set()
        self.snapshot_due: _Snapshot | None = None
        self.checkpoints_written = 0

    def _close(self, crashed: bool) -> None:
        closers: list[Callable[[], Any]] = []
        if hasattr(self, "consumer"):
            closers.append(lambda: self.consumer.close(autocommit=False))
        if hasattr(self, "producer"):
            closers.append(lambda: self.producer.close(timeout=0 if crashed else 5))
        closers.append(self.pool.kill)
        for closer in closers:
            try:
                closer()
            except Exception as error:  # keep closing the rest
                logger.warning("while closing: %s", error)

    # ------------------------------------------------------------------ main loop
    def _loop(self) -> str:
        cfg = self.config
        while True:
            if self._stop.is_set():
                return "stop requested"
            if cfg.job.stop_after_batches and self.batch_counter >= cfg.job.stop_after_batches:
                return f"stop_after_batches={cfg.job.stop_after_batches}"
            if cfg.job.expected_frames and self.records_seen >= cfg.job.expected_frames:
                return f"expected_frames={cfg.job.expected_frames}"
            if self._idle_too_long():
                return f"idle for {cfg.job.max_idle_s:g}s"
            full = len(self.inflight) >= cfg.batch.max_inflight_batches
            self._finish_ready(block=full)
            if len(self.inflight) >= cfg.batch.max_inflight_batches:
                continue
            records = self._poll_batch()
            records = self._handle_assignment(records)
            if records:
                self._submit(records)
            elif self.inflight:
                self._finish_ready(block=False, timeout=cfg.batch.max_wait_ms / 1000)
            self._commit()
            self._maybe_progress()

    def _idle_too_long(self) -> bool:
        limit = self.config.job.max_idle_s
        if not limit or self.first_assignment_at is None or self.inflight:
            return False
        since = max(self.first_assignment_at, self.last_record_at or 0.0)
        return time.monotonic() - since >= limit

    def _poll_batch(self) -> list[Any]:
        """Up to `batch.max_frames` records, waiting at most `batch.max_wait_ms` after the first."""
        cfg = self.config.batch
        collected: list[Any] = []
        deadline: float | None = None
        while len(collected) < cfg.max_frames:
            now = time.monotonic()
            wait_s = cfg.max_wait_ms / 1000 if deadline is None else max(0.0, deadline - now)
            polled = self.consumer.poll(
                timeout_ms=int(wait_s * 1000), max_records=cfg.max_frames - len(collected)
            )
            for records in polled.values():
                collected.extend(records)
            if collected and deadline is None:
                deadline = time.monotonic() + cfg.max_wait_ms / 1000
            if deadline is None or time.monotonic() >= deadline:
                break
        return collected

    # ------------------------------------------------------------------ partitions
    def _handle_assignment(self, records: list[Any]) -> list[Any]:
        """React to assignment changes; drop records of partitions we no longer own or saw."""
        current = set(self.consumer.assignment())
        gained, lost = current - self.owned, self.owned - current
        if lost:
            logger.warning("partitions revoked: %s", sorted(map(str, lost)))
            for batch in self.inflight:
                # Their results must not be written even if the partition comes back: it is
                # then replayed from the committed offset.
                batch.revoked |= lost
            self.snapshot_due = None  # may hold states of lost partitions' streams
            for tp in lost:
                self.next_offset.pop(tp, None)
                self.pending_commit.pop(tp, None)
                self.manifests.pop(tp, None)
                self.covered.pop(tp, None)
                self.replay_below.pop(tp, None)
                self.initial_manifest_due.discard(tp)
                streams = self.partition_streams.pop(tp, set())
                if streams:
                    for actor in self.pool.shards:
                        actor.drop_streams.remote(sorted(streams))
                    for stream_id in streams:
                        self.stream_position.pop(stream_id, None)
                        self.persisted.pop(stream_id, None)
                        self.skip_through.pop(stream_id, None)
        reseeked: set[Any] = set()
        if gained:
            if self.first_assignment_at is None:
                self.first_assignment_at = time.monotonic()
            for tp in sorted(gained, key=lambda t: (t.topic, t.partition)):
                committed = self.consumer.committed(tp)
                start = 0 if committed is None else int(committed)
                removed = self.writer.remove_uncommitted(tp.topic, tp.partition, start)
                if removed:
                    logger.info(
                        "%s: removed %d uncommitted file(s) at offsets >= %d",
                        tp,
                        len(removed),
                        start,
                    )
                self.summary.leftovers_removed += len(removed)
                if committed is not None:
                    self.committed[tp] = int(committed)
                if self.checkpoints is not None and self._restore_partition(tp, committed):
                    reseeked.add(tp)
            logger.info("partitions assigned: %s", sorted(map(str, gained)))
        self.owned = current
        kept = []
        for record in records:
            tp = _topic_partition(record.topic, record.partition)
            if tp not in current or tp in reseeked:
                continue  # not ours, or fetched before seeking back to the checkpoint
            if tp in self.initial_manifest_due:
                self.initial_manifest_due.discard(tp)
                self._write_initial_manifest(tp, record.offset)
            expected = self.next_offset.get(tp)
            if expected is not None and record.offset < expected:
                continue  # re-fetched after a rebalance: already in flight or done
            self.next_offset[tp] = record.offset + 1
            kept.append(record)
        return kept

    # ------------------------------------------------------------------ submit
    def _submit(self, records: list[Any]) -> None:
        cfg = self.config
        started = time.perf_counter()
        if self.first_submit_at is None:
            self.first_submit_at = time.monotonic()
        self.batch_counter += 1
        self.last_record_at = time.monotonic()
        dead: list[_DeadLetter] = []
        frames: list[tuple[Any, FrameMessage]] = []
        first_offsets: dict[Any, int] = {}
        last_offsets: dict[Any, int] = {}
        by_position: dict[tuple[str, int, int], Any] = {}
        seen_last: dict[Any, int] = {}
        replay_below: dict[Any, int] = {}
        for record in records:
            tp = _topic_partition(record.topic, record.partition)
            seen_last[tp] = record.offset
            replaying = record.offset < self.replay_below.get(tp, -1)
            if replaying:
                # Already in the output: tracked again only to rebuild tracker state.
                replay_below[tp] = self.replay_below[tp]
            else:
                self.replay_below.pop(tp, None)
                self.records_seen += 1
                first_offsets.setdefault(tp, record.offset)
                last_offsets[tp] = record.offset
            by_position[(record.topic, record.partition, record.offset)] = record
            try:
                frame = decode_frame(
                    record.value, record.key, max_message_bytes=cfg.kafka.max_message_bytes
                )
            except WireFormatError as error:
                if not replaying:
                    dead.append(_DeadLetter(record, error.reason))
                continue
            restored = self.skip_through.get(frame.stream_id)
            if restored is not None and restored[0] == tp and record.offset <= restored[1]:
                continue  # the restored tracker state already includes this frame
            frames.append((record, frame))
            self.partition_streams[tp].add(frame.stream_id)
            self.stream_position[frame.stream_id] = (tp, record.offset)
        decode_s = time.perf_counter() - started

        embed_refs, slots = self._submit_embeddings(frames)
        per_shard: dict[int, list[TrackRequest]] = collections.defaultdict(list)
        shard_embed_refs: dict[int, list[int]] = collections.defaultdict(list)
        num_shards = len(self.pool.shards)
        for i, (record, frame) in enumerate(frames):
            shard = shard_of(frame.stream_id, num_shards)
            embed_slot = None
            if i in slots:
                request_id, position = slots[i]
                used = shard_embed_refs[shard]
                if request_id not in used:
                    used.append(request_id)
                embed_slot = (used.index(request_id), position)
            per_shard[shard].append(
                TrackRequest(
                    stream_id=frame.stream_id,
                    frame_index=frame.frame_index,
                    timestamp=frame.timestamp,
                    xyxy=frame.xyxy,
                    confidence=frame.confidence,
                    class_id=frame.class_id,
                    position=SourcePosition(record.topic, record.partition, record.offset),
                    frame_shape=None if frame.width is None else (frame.height, frame.width),
                    embeddings=frame.embeddings,
                    embed_slot=embed_slot,
                )
            )
        shard_refs = [
            self.pool.shards[shard].process.remote(
                requests, *[embed_refs[r] for r in shard_embed_refs[shard]]
            )
            for shard, requests in sorted(per_shard.items())
        ]
        snapshot = (
            self.checkpoints is not None and self.batch_counter % cfg.checkpoint.every_batches == 0
        )
        # Actor calls run in submission order, so these are the states right after this batch.
        state_refs = [shard.state_dict.remote() for shard in self.pool.shards] if snapshot else []
        self.inflight.append(
            _Batch(
                batch_id=self.batch_counter,
                polled_at=started,
                records=by_position,
                dead=dead,
                shard_refs=shard_refs,
                first_offsets=first_offsets,
                last_offsets=last_offsets,
                decode_s=decode_s,
                seen_last=seen_last,
                replay_below=replay_below,
                state_refs=state_refs,
                stream_positions=dict(self.stream_position) if snapshot else {},
            )
        )
        self.metrics.gauge("inflight", len(self.inflight))

    def _submit_embeddings(
        self, frames: list[tuple[Any, FrameMessage]]
    ) -> tuple[list[Any], dict[int, tuple[int, int]]]:
        """Group frames that need ReID into requests of <= max_embed_crops crops, least-loaded
        embedder first; returns the request refs and frame -> (request, position)."""
        if not self.config.reid_enabled or not self.pool.embedders:
            return [], {}
        limit = self.config.batch.max_embed_crops
        requests: list[list[int]] = []
        crops: list[int] = []
        for i, (_, frame) in enumerate(frames):
            if frame.embeddings is not None or frame.image is None or frame.num_detections == 0:
                continue
            if not requests or (crops[-1] + frame.num_detections > limit and requests[-1]):
                requests.append([])
                crops.append(0)
            requests[-1].append(i)
            crops[-1] += frame.num_detections
        load = [(0, k) for k in range(len(self.pool.embedders))]
        heapq.heapify(load)
        refs = []
        slots: dict[int, tuple[int, int]] = {}
        for request_id, members in enumerate(requests):
            busy, embedder = heapq.heappop(load)
            items = []
            for position, i in enumerate(members):
                frame = frames[i][1]
                items.append(
                    EmbedItem(
                        image=frame.image or b"",
                        image_format=frame.image_format,
                        xyxy=frame.xyxy,
                        width=frame.width,
                        height=frame.height,
                    )
                )
                slots[i] = (request_id, position)
            refs.append(self.pool.embedders[embedder].embed.remote(items))
            heapq.heappush(load, (busy + crops[request_id], embedder))
            self.embed_requests += 1
            self.embed_crops += crops[request_id]
        return refs, slots

    # ------------------------------------------------------------------ finish
    def _finish_ready(self, block: bool, timeout: float | None = None) -> None:
        """Finish batches at the head of the window whose shard results are ready (in order)."""
        import ray

        while self.inflight:
            head = self.inflight[0]
            if head.shard_refs:
                wait_timeout = None if block else (timeout or 0)
                ready, _ = ray.wait(
                    head.shard_refs, num_returns=len(head.shard_refs), timeout=wait_timeout
                )
                if len(ready) < len(head.shard_refs):
                    return
            self._finish(self.inflight.popleft())
            block, timeout = False, 0

    def _drain(self) -> None:
        while self.inflight:
            self._finish_ready(block=True)

    def _finish(self, batch: _Batch) -> None:
        import ray

        cfg = self.config
        sink_started = time.perf_counter()
        outputs: list[ShardOutput] = ray.get(batch.shard_refs)
        owned = self.owned - batch.revoked
        dead = list(batch.dead)
        results: list[FrameResult] = []
        for output in outputs:
            results.extend(output.results)
            for failure in output.failures:
                position = failure.position
                record = batch.records[(position.source, position.partition, position.offset)]
                dead.append(_DeadLetter(record, failure.reason))
        results = [
            r
            for r in results
            if _tp_of(r.position) in owned
            and r.position.offset >= batch.replay_below.get(_tp_of(r.position), -1)
        ]
        dead = [
            d
            for d in dead
            if (tp := _topic_partition(d.record.topic, d.record.partition)) in owned
            and d.record.offset >= batch.replay_below.get(tp, -1)
        ]
        results.sort(key=lambda r: (r.position.source, r.position.partition, r.position.offset))

        groups: dict[Any, list[FrameResult]] = collections.defaultdict(list)
        for result in results:
            groups[_tp_of(result.position)].append(result)
        for tp, group in groups.items():
            stem = batch_file_stem(tp.topic, tp.partition, batch.first_offsets[tp])
            self.summary.files_written += len(self.writer.write(stem, group))
        parquet_s = time.perf_counter() - sink_started

        futures = []
        if cfg.kafka.results_topic:
            for result in results:
                futures.append(
                    self.producer.send(
                        cfg.kafka.results_topic,
                        key=result.stream_id.encode("utf-8"),
                        value=self._result_message(result),
                    )
                )
        for letter in dead:
            record = letter.record
            code = letter.reason.split(":", 1)[0]
            self.summary.dead_letter_codes[code] = self.summary.dead_letter_codes.get(code, 0) + 1
            self.metrics.dead_letter(code)
            logger.warning(
                "dead letter %s[%d]@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                letter.reason,
            )
            if cfg.kafka.dead_letter_topic:
                value = record.value
                headers = dead_letter_headers(
                    letter.reason, record.topic, record.partition, record.offset
                )
                if value is not None and len(value) > cfg.kafka.max_message_bytes:
                    # Too big to re-send whole (and a send failure would stop the job on this
                    # record at every restart): keep its head; the source offset finds the rest.
                    headers.append(("value_truncated", str(len(value)).encode("ascii")))
                    value = value[: cfg.kafka.max_message_bytes]
                futures.append(
                    self.producer.send(
                        cfg.kafka.dead_letter_topic, key=record.key, value=value, headers=headers
                    )
                )
        if futures:
            self.producer.flush()
            for future in futures:
                if future.failed():
                    raise RuntimeError(f"producing to Kafka failed: {future.exception}")
        sink_s = time.perf_counter() - sink_started

        self.summary.batches += 1
        self.summary.frames += len(results)
        self.summary.dead_letters += len(dead)
        if cfg.job.fail_after_batches and self.summary.batches >= cfg.job.fail_after_batches:
            raise SimulatedCrash(f"simulated crash after batch {batch.batch_id} (sinks written)")
        for tp, last in batch.last_offsets.items():
            if tp in owned:
                self.pending_commit[tp] = last + 1
        for tp, last in batch.seen_last.items():
            if tp in owned and tp in self.covered:
                self.covered[tp] = max(self.covered[tp], last + 1)
        if batch.state_refs and not batch.revoked:
            self.snapshot_due = _Snapshot(
                state_refs=batch.state_refs,
                stream_positions=batch.stream_positions,
                covered={tp: o for tp, o in self.covered.items() if tp in owned},
            )
        self._commit()
        self.last_finish_at = time.monotonic()

        stages = {
            "decode": batch.decode_s,
            "embed": max((o.embed_seconds for o in outputs), default=0.0),
            "track": max((o.track_seconds for o in outputs), default=0.0),
            "parquet": parquet_s,
            "sink": sink_s,
            "batch": time.perf_counter() - batch.polled_at,
        }
        self.stage_sums.update(stages)
        self.metrics.batch_done(len(results), stages)
        if results:
            newest = max(r.timestamp for r in results)
            self.metrics.gauge("capture_age", max(0.0, time.time() - newest))
        self.metrics.gauge("inflight", len(self.inflight))

    def _result_message(self, result: FrameResult) -> bytes:
        keep = (
            np.ones(result.num_detections, bool)
            if self.config.output.include_unconfirmed
            else result.tracker_id >= 0
        )
        return encode_result(
            result.stream_id,
            result.frame_index,
            result.timestamp,
            {
                "tracker_id": result.tracker_id[keep],
                "detection_index": np.flatnonzero(keep),
                "xyxy": result.xyxy[keep],
                "confidence": result.confidence[keep],
                "class_id": result.class_id[keep],
            },
            job_version=self._version,
            source={
                "topic": result.position.source,
                "partition": result.position.partition,
                "offset": result.position.offset,
            },
        )

    # ------------------------------------------------------------------ commits, progress
    def _commit(self, force: bool = False) -> None:
        if not self.pending_commit:
            return
        due = time.monotonic() - self.last_commit >= self.config.job.commit_interval_s
        if not (force or due):
            return
        from kafka.errors import CommitFailedError, KafkaError
        from kafka.structs import OffsetAndMetadata

        offsets = {
            tp: OffsetAndMetadata(offset, "", -1) for tp, offset in self.pending_commit.items()
        }
        try:
            self.consumer.commit(offsets=offsets)
        except (CommitFailedError, KafkaError) as error:
            logger.warning("commit failed (will retry after the next batch): %s", error)
            return
        self.committed.update(self.pending_commit)
        self.summary.committed = {
            f"{tp.topic}:{tp.partition}": o for tp, o in self.committed.items()
        }
        self.pending_commit = {}
        self.last_commit = time.monotonic()
        self._write_checkpoint()

    # ------------------------------------------------------------------ checkpoints
    def _write_checkpoint(self) -> None:
        """Persist the latest snapshot: every batch it covers is committed now.

        Stream files first (only streams that changed since their last file), then each
        partition's manifest, so a manifest never names state it does not have.
        """
        import ray

        snapshot, self.snapshot_due = self.snapshot_due, None
        if snapshot is None or self.checkpoints is None:
            return
        states: dict[str, dict[str, np.ndarray]] = {}
        for shard_states in ray.get(snapshot.state_refs):
            states.update(shard_states)
        written: dict[Any, dict[str, str]] = collections.defaultdict(dict)
        for stream_id, state in states.items():
            position = snapshot.stream_positions.get(stream_id)
            if position is None or self.persisted.get(stream_id) == position:
                continue
            tp, offset = position
            if tp not in snapshot.covered or tp not in self.manifests:
                continue
            name = self.checkpoints.write_stream(
                StreamCheckpoint(stream_id, tp.topic, tp.partition, offset, state)
            )
            written[tp][stream_id] = name
            self.persisted[stream_id] = position
        for tp, covered in snapshot.covered.items():
            manifest = self.manifests.get(tp)
            if manifest is None or (covered == manifest.offset and not written[tp]):
                continue
            manifest.streams.update(written[tp])
            manifest.offset = covered
            self.checkpoints.write_manifest(manifest)
            self.checkpoints_written += 1
        self.summary.checkpoints = self.checkpoints_written

    def _snapshot_now(self) -> None:
        """Snapshot every shard with nothing in flight (a graceful stop keeps the last state)."""
        if self.checkpoints is None or self.inflight:
            return
        self.snapshot_due = _Snapshot(
            state_refs=[shard.state_dict.remote() for shard in self.pool.shards],
            stream_positions=dict(self.stream_position),
            covered={tp: o for tp, o in self.covered.items() if tp in self.owned},
        )

    def _restore_partition(self, tp: Any, committed: int | None) -> bool:
        """Restore the trackers of a newly assigned partition from its checkpoint.

        Returns True when the consumer was sent back to the checkpoint's offset to rebuild
        state from frames that are already committed (their output is not written again).
        """
        import ray

        assert self.checkpoints is not None
        manifest = self.checkpoints.read_manifest(tp.topic, tp.partition)
        if manifest is None or committed is None or manifest.offset > committed:
            if manifest is not None and manifest.streams:
                logger.warning(
                    "%s: checkpoint at offset %d does not match committed offset %s; "
                    "starting its streams with fresh trackers",
                    tp,
                    manifest.offset,
                    committed,
                )
            if committed is None:
                self.initial_manifest_due.add(tp)  # written at the first record
            else:
                self._write_initial_manifest(tp, int(committed))
            return False
        per_shard: dict[int, dict[str, dict[str, np.ndarray]]] = collections.defaultdict(dict)
        for stream_id in manifest.streams:
            checkpoint = self.checkpoints.read_stream(tp.topic, tp.partition, stream_id)
            per_shard[shard_of(stream_id, len(self.pool.shards))][stream_id] = checkpoint.state
            position = (tp, checkpoint.offset)
            self.skip_through[stream_id] = position
            self.persisted[stream_id] = position
            self.stream_position[stream_id] = position
            self.partition_streams[tp].add(stream_id)
        if per_shard:
            loads = [self.pool.shards[k].load_state_dict.remote(s) for k, s in per_shard.items()]
            ray.get(loads)
        self.manifests[tp] = manifest
        self.covered[tp] = manifest.offset
        logger.info(
            "%s: restored %d stream(s) from the checkpoint at offset %d (committed %d)",
            tp,
            len(manifest.streams),
            manifest.offset,
            committed,
        )
        if manifest.offset < committed:
            self.consumer.seek(tp, manifest.offset)
            self.next_offset[tp] = manifest.offset
            self.replay_below[tp] = int(committed)
            return True
        return False

    def _write_initial_manifest(self, tp: Any, offset: int) -> None:
        """Empty state at `offset`: what this run starts the partition from."""
        assert self.checkpoints is not None
        manifest = PartitionManifest(tp.topic, tp.partition, offset)
        self.checkpoints.write_manifest(manifest)
        self.manifests[tp] = manifest
        self.covered[tp] = offset

    def _lag(self) -> int | None:
        """Sum over owned partitions of high watermark - next offset (None if unknown)."""
        total, known = 0, False
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            position = self.next_offset.get(tp, self.committed.get(tp))
            if highwater is None or position is None:
                continue
            lag = max(0, int(highwater) - int(position))
            self.metrics.gauge("lag", lag, {"topic": tp.topic, "partition": tp.partition})
            total += lag
            known = True
        return total if known else None

    def _progress_line(self) -> str:
        batches = max(self.summary.batches, 1)
        latency = " ".join(
            f"{stage}={1000 * self.stage_sums[stage] / batches:.1f}"
            for stage in ("decode", "embed", "track", "sink", "batch")
        )
        crops = self.embed_crops / self.embed_requests if self.embed_requests else 0.0
        return (
            f"frames={self.summary.frames} dead_letters={self.summary.dead_letters} "
            f"batches={self.summary.batches} inflight={len(self.inflight)}/"
            f"{self.config.batch.max_inflight_batches} lag={self._lag()} "
            f"crops/embed_request={crops:.1f} mean_ms[{latency}]"
        )

    def _maybe_progress(self) -> None:
        interval = self.config.job.progress_interval_s
        now = time.monotonic()
        if not interval or now - self.progress_at < interval:
            return
        fps = (self.summary.frames - self.progress_frames) / (now - self.progress_at)
        self.metrics.gauge("fps", fps)
        logger.info("progress: %.1f fps %s", fps, self._progress_line())
        self.progress_at, self.progress_frames = now, self.summary.frames

    # ------------------------------------------------------------------ topics
    def _create_topics(self) -> None:
        from ray_deepsort.stream.broker import create_topics

        kafka = self.config.kafka
        topics = {name: kafka.topic_partitions for name in kafka.frames_topics}
        for name in (kafka.results_topic, kafka.dead_letter_topic):
            if name:
                topics[name] = kafka.topic_partitions
        create_topics(kafka.bootstrap_servers, topics, client_options=dict(kafka.security))


def _topic_partition(topic: str, partition: int) -> Any:
    from kafka.structs import TopicPartition

    return TopicPartition(topic, partition)


def _tp_of(position: SourcePosition) -> Any:
    return _topic_partition(position.source, position.partition)


# ---------------------------------------------------------------------- Kafka clients
def make_consumer(config: StreamConfig) -> Any:
    """The job's KafkaConsumer: consumer group, manual commits, poll size = batch size."""
    from kafka import KafkaConsumer

    kafka = config.kafka
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "group_id": kafka.group_id,
        "client_id": kafka.client_id,
        "enable_auto_commit": False,
        "auto_offset_reset": kafka.auto_offset_reset,
        "session_timeout_ms": kafka.session_timeout_ms,
        "heartbeat_interval_ms": kafka.heartbeat_interval_ms,
        "max_poll_interval_ms": kafka.max_poll_interval_ms,
        "max_poll_records": config.batch.max_frames,
        "max_partition_fetch_bytes": max(kafka.max_partition_fetch_bytes, 1024 * 1024),
        "fetch_max_bytes": max(52_428_800, kafka.max_partition_fetch_bytes),
        **kafka.security,
        **kafka.consumer,
    }
    return KafkaConsumer(**options)


def make_producer(config: StreamConfig) -> Any:
    """Producer for the results and dead-letter topics (acks=all; dead letters can be large)."""
    from kafka import KafkaProducer

    kafka = config.kafka
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "client_id": f"{kafka.client_id}-sink",
        "acks": "all",
        "linger_ms": 5,
        "max_request_size": kafka.max_message_bytes + 64 * 1024,
        **kafka.security,
        **kafka.producer,
    }
    return KafkaProducer(**options)


def run_stream_job(config: StreamConfig, *, install_signal_handlers: bool = False) -> JobSummary:
    """Connect to Ray (per `ray.address`) unless already connected, and run the job."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address=config.ray.address or None,
            namespace=config.ray.namespace,
            log_to_driver=True,
        )
    job = StreamJob(config)
    if install_signal_handlers:
        job.install_signal_handlers()
    return job.run()
