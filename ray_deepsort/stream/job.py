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

Before partitions are revoked in a rebalance the batches in flight are finished and committed
(`_PartitionHandoff`), so the next owner starts exactly there. Broker outages are waited out:
produce and commit are retried with backoff (`ray_deepsort.stream.retry`), idling does not count
while the broker does not answer, and a broker that lost its committed offsets (restarted
without storage) is noticed and this job's own offsets win (docs/streaming.md, "Rebalances and
broker outages").

Tracker-state checkpoints (when to snapshot, write, restore and evict) are decided by the
`CheckpointCoordinator` in `ray_deepsort.stream.snapshots`; this driver calls it at each step.
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
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener

from ray_deepsort.pipeline.embedder import forward_batch_size, tracker_params_with_gate
from ray_deepsort.pipeline.parquet import ParquetResultWriter, batch_file_stem
from ray_deepsort.pipeline.sharding import drop_streams, shard_of
from ray_deepsort.pipeline.tracker_shard import CheckpointRestoreError, checkpoint_restore_error
from ray_deepsort.pipeline.types import (
    EmbedItem,
    FrameResult,
    ShardOutput,
    SourcePosition,
    TrackRequest,
)
from ray_deepsort.stream.config import StreamConfig
from ray_deepsort.stream.metrics import JobMetrics
from ray_deepsort.stream.retry import Backoff
from ray_deepsort.stream.snapshots import CheckpointCoordinator, ShardStates
from ray_deepsort.stream.wire import (
    FrameMessage,
    WireFormatError,
    dead_letter_headers,
    decode_frame,
    encode_result,
)

logger = logging.getLogger("ray_deepsort.stream")

# Recoveries in a row without a new frame written before the job gives up (a frame that kills
# its shard every time would otherwise be replayed forever).
MAX_STALLED_RECOVERIES = 5


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
    actor_recoveries: int = 0  # rebuilds after a tracker shard died (or an embed failed for good)
    streams_evicted: int = 0  # idle streams moved out of memory (checkpoint.evict_idle_s)
    handoffs: int = 0  # rebalances that finished and committed the batches in flight first
    produce_retries: int = 0  # produce attempts repeated after a failure (broker outage)
    commit_failures: int = 0  # offset commits that failed (retried later)
    broker_resets: int = 0  # partitions whose committed offset the broker lost (see docs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class _DeadLetter:
    record: Any
    reason: str


@dataclass
class _Outgoing:
    """One record for the results or dead-letter topic (kept until the broker acknowledged it)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None


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
    states: ShardStates | None = None  # shard states after this batch (checkpoint snapshot)
    consumed: int = 0  # records counted in `records_seen` (replayed ones are not)


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
        model = cfg.model_choice(
            forward_batch_size(
                cfg.model.forward_batch_size, plan.use_gpu, cfg.batch.max_embed_crops
            )
        )
        # Shards get precomputed embeddings, never the model: the gate is resolved here, once.
        tracker_params, gate = tracker_params_with_gate(
            cfg.tracker.params(), model if cfg.reid_enabled else None
        )
        logger.info("%s", gate.describe())
        self._init_state()
        self.pool = start_actors(
            plan,
            model,
            tracker_params,
            cfg.actors.start_timeout_s,
            checkpoint_root=cfg.output.path if cfg.checkpoint.enabled else None,
            fsync=cfg.output.fsync,
            on_invalid=cfg.checkpoint.on_invalid,
        )
        self.checkpoint = CheckpointCoordinator(cfg, self.pool, self.summary)
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
            self.handoff = _PartitionHandoff(self)
            self.consumer.subscribe(cfg.kafka.frames_topics, listener=self.handoff)
            self._run_until_stopped()
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
        # actor failures (see _recover_actors)
        self.progress_at_recovery = -1
        self.stalled_recoveries = 0
        # rebalances and broker outages (see _PartitionHandoff, _produce, _commit)
        self.in_handoff = False  # finishing batches inside a rebalance callback
        self.listener_error: BaseException | None = None  # raised again on the main thread
        self.lost_in_rebalance: set[Any] = set()  # membership lost: their state is void
        self.revoked_in_rebalance: set[Any] = set()  # given up (maybe reassigned at once)
        self.rebalance_done = True  # no revoke callback waiting for its assignment
        self.idle_reset_at = 0.0  # rebalances and unreachable brokers are not idling
        self.broker_was_away = False  # the last idle check found the broker unreachable
        job = self.config.job
        self.commit_backoff = Backoff(
            job.retry_backoff_s, job.retry_backoff_max_s, job.broker_timeout_s
        )
        self.commit_retry_at = 0.0

    def _close(self, crashed: bool) -> None:
        closers: list[Callable[[], Any]] = []
        if hasattr(self, "consumer"):
            if hasattr(self, "handoff"):
                # Closing calls on_partitions_revoked: everything that may be committed is.
                self.handoff.enabled = False
            closers.append(lambda: self.consumer.close(autocommit=False))
        if getattr(self, "producer", None) is not None:
            closers.append(lambda: self.producer.close(timeout=0 if crashed else 5))
        closers.append(self.pool.kill)
        for closer in closers:
            try:
                closer()
            except Exception as error:  # keep closing the rest
                logger.warning("while closing: %s", error)

    # ------------------------------------------------------------------ main loop
    def _run_until_stopped(self) -> None:
        """Loop, drain, final checkpoint; after a dead actor (even one that dies while the job
        recovers from another) the job is recovered and the loop resumed."""
        failure: BaseException | None = None
        while True:
            try:
                if failure is not None:
                    self._recover_actors(failure)
                    failure = None
                self.summary.stop_reason = self._loop()
                self._drain()
                self.checkpoint.snapshot_now(self.owned)
                self._commit(force=True)
                if not self.pending_commit:
                    self.checkpoint.write_snapshot()  # all committed: the final state is safe
                return
            except _actor_errors() as error:
                failure = error
            except Exception as error:
                restore_error = checkpoint_restore_error(error)
                if restore_error is None:
                    raise
                self._stop_on_unrestorable_checkpoint(restore_error)

    def _stop_on_unrestorable_checkpoint(self, error: CheckpointRestoreError) -> None:
        """A shard cannot restore a stream's checkpoint and `checkpoint.on_invalid` is "fail".

        Fatal, not an actor failure: the shard is alive and the file would fail again, so
        nothing is retried. Batches finish in order, so the batch that needed the checkpoint
        and all after it have written nothing: they are dropped uncommitted (a rerun polls them
        again). What finished before is committed (best effort), then the job stops with the
        shard's message (file, stream, topic and partition, problem, how to recover).
        """
        dropped = len(self.inflight)
        self.inflight.clear()
        self.summary.stop_reason = "checkpoint cannot be restored"
        try:
            self._commit(force=True)
        except Exception as commit_error:  # the next run replays from the last commit
            logger.warning("commit before stopping failed: %s", commit_error)
        logger.error("stopping: %s (%d batch(es) in flight dropped, not committed)", error, dropped)
        raise CheckpointRestoreError(str(error)) from None

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
            self.checkpoint.evict_idle(
                self.owned, all_committed=not self.inflight and not self.pending_commit
            )

    def _idle_too_long(self) -> bool:
        limit = self.config.job.max_idle_s
        if not limit or self.first_assignment_at is None or self.inflight:
            return False
        since = max(self.first_assignment_at, self.last_record_at or 0.0, self.idle_reset_at)
        if time.monotonic() - since < limit:
            return False
        answers = self._broker_answers()
        if answers and not self.broker_was_away:
            return True
        # No input because the broker is down (or the group rebalances) is not idling: wait.
        # Once it answers again, idling starts over: after a restart the consumer may not know
        # yet that it has to rejoin the group.
        if not answers:
            logger.warning(
                "no input for %.0fs, but the broker does not answer (or the group is "
                "rebalancing): waiting for it",
                time.monotonic() - since,
            )
        self.broker_was_away = not answers
        self.idle_reset_at = time.monotonic()
        return False

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
            if self.listener_error is not None:  # raised in a rebalance callback
                error, self.listener_error = self.listener_error, None
                raise error
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
        # Records of partitions revoked or lost in a rebalance callback are not processed (they
        # may have been polled before it): they are fetched again once the partition is
        # assigned again. Until the rebalance completes, `assignment()` still lists them.
        fenced = self.revoked_in_rebalance | self.lost_in_rebalance
        # Lost partitions count as lost and, if assigned again, as gained, even when the main
        # thread never saw them go.
        void, self.lost_in_rebalance = self.lost_in_rebalance, set()
        rebalanced: set[Any] = set()
        if self.rebalance_done:
            rebalanced, self.revoked_in_rebalance = self.revoked_in_rebalance, set()
        gained = (current - self.owned) | (void & current)
        lost = (self.owned - current) | (void & self.owned)
        if lost:
            logger.warning("partitions revoked: %s", sorted(map(str, lost)))
            self._revoke_partitions(lost)
        reseeked = self._assign_partitions(gained) if gained else set()
        kept_through = (rebalanced & self.owned & current) - lost
        if kept_through:
            self._resume_kept(kept_through)
        self.owned = current
        kept = []
        for record in records:
            tp = _topic_partition(record.topic, record.partition)
            if tp not in current or tp in reseeked or tp in fenced:
                continue  # not ours, fetched before seeking back, or before a rebalance
            self.checkpoint.record_fetched(tp, record.offset)
            expected = self.next_offset.get(tp)
            if expected is not None and record.offset < expected:
                continue  # re-fetched after a rebalance: already in flight or done
            self.next_offset[tp] = record.offset + 1
            kept.append(record)
        return kept

    def _revoke_partitions(self, lost: set[Any]) -> None:
        """Forget `lost` partitions: in-flight results, offsets, checkpoint state, their streams."""
        for batch in self.inflight:
            # Their results must not be written even if the partition comes back: it is
            # then replayed from the committed offset.
            batch.revoked |= lost
        dropped: set[str] = set()
        for tp in lost:
            self.next_offset.pop(tp, None)
            self.pending_commit.pop(tp, None)
            dropped |= self.partition_streams.pop(tp, set())
        drop_streams(self.pool.shards, dropped)
        self.checkpoint.forget(lost, dropped)

    def _assign_partitions(self, gained: set[Any]) -> set[Any]:
        """Take over `gained` partitions at their committed offsets: remove uncommitted files,
        restore checkpointed streams. Returns the partitions sent back to replay a checkpoint."""
        reseeked: set[Any] = set()
        if self.first_assignment_at is None:
            self.first_assignment_at = time.monotonic()
        for tp in sorted(gained, key=lambda t: (t.topic, t.partition)):
            committed = self.consumer.committed(tp)
            ours = self._broker_lost_offsets(tp, committed)
            if ours is not None:
                committed = ours  # keep this job's output and state at and above it
                self.consumer.seek(tp, ours)
                self.next_offset[tp] = ours  # re-published records below it are skipped
            start = self._reset_position(tp) if committed is None else int(committed)
            removed = self.writer.remove_uncommitted(tp.topic, tp.partition, start)
            if removed:
                (logger.info if committed is not None else logger.warning)(
                    "%s: removed %d uncommitted file(s) at offsets >= %d%s",
                    tp,
                    len(removed),
                    start,
                    ""
                    if committed is not None
                    else " (the group has no committed offset: an earlier run stopped before "
                    "its first commit, or the broker lost the group's offsets; the files are "
                    "written again from the same records, files below are kept)",
                )
            self.summary.leftovers_removed += len(removed)
            if committed is not None:
                self.committed[tp] = int(committed)
            restored = self.checkpoint.restore_partition(tp, committed)
            if restored is not None:
                for stream_id in restored.streams:
                    self.partition_streams[tp].add(stream_id)
                if restored.replay_from is not None:
                    self.consumer.seek(tp, restored.replay_from)
                    self.next_offset[tp] = restored.replay_from
                    reseeked.add(tp)
        logger.info("partitions assigned: %s", sorted(map(str, gained)))
        return reseeked

    def _reset_position(self, tp: Any) -> int:
        """Where a partition without a committed offset is read from (`auto_offset_reset`).

        Output files below it belong to records this run will not read again (expired by
        retention, or skipped by "latest"), so only files from here on count as leftovers.
        """
        timeout_ms = int(self.config.job.request_timeout_s * 1000)
        position = self.consumer.position(tp, timeout_ms=timeout_ms)
        if position is None:  # unknown: every file may be rewritten, so none may stay
            logger.warning("%s: no start position within %d ms; assuming 0", tp, timeout_ms)
            return 0
        return int(position)

    # ------------------------------------------------------------------ actor failures
    def _recover_actors(self, error: BaseException) -> None:
        """A tracker shard died (or an embed failed for good): rebuild every owned partition.

        Batches finish in order, so the failed batch and all after it have written nothing:
        they are dropped and what is finished is committed. Once every shard answers again,
        each owned partition is revoked and re-assigned in place, as in a rebalance: its streams
        are dropped on all shards, restored from the checkpoint and replayed without output up
        to the committed offset. Without checkpoints they restart with fresh trackers there.
        """
        progress = self.summary.frames + self.summary.dead_letters
        self.stalled_recoveries = (
            self.stalled_recoveries + 1 if progress == self.progress_at_recovery else 1
        )
        self.progress_at_recovery = progress
        if self.stalled_recoveries > MAX_STALLED_RECOVERIES:
            raise RuntimeError(
                f"actors failed {self.stalled_recoveries} times in a row without a new frame "
                "written; giving up"
            ) from error
        dropped = list(self.inflight)
        self.inflight.clear()
        self.metrics.gauge("inflight", 0)
        logger.warning(
            "actor failure (%s: %s): dropping %d batch(es) in flight, rebuilding tracker state",
            type(error).__name__,
            str(error).strip().splitlines()[0] if str(error).strip() else "",
            len(dropped),
        )
        self.batch_counter -= len(dropped)  # they are polled again
        self.records_seen -= sum(batch.consumed for batch in dropped)
        rewind: dict[Any, int] = {}  # partition -> first dropped offset
        for batch in dropped:
            for topic, partition, offset in batch.records:
                tp = _topic_partition(topic, partition)
                rewind[tp] = min(offset, rewind.get(tp, offset))
        partitions = set(self.consumer.assignment())
        for tp in set(self.pending_commit) - partitions:
            del self.pending_commit[tp]  # given away meanwhile: the next owner replays them
        self._commit(force=True)
        # Back to the first unfinished record (a checkpoint restore may go further back).
        for tp in partitions:
            if tp in self.committed:
                self.consumer.seek(tp, self.committed[tp])
            elif self.config.kafka.auto_offset_reset == "earliest":
                self.consumer.seek_to_beginning(tp)
            elif tp in rewind:
                self.consumer.seek(tp, rewind[tp])
        self.pool.await_shards(self.config.actors.start_timeout_s)
        self._revoke_partitions(self.owned | partitions)
        self._assign_partitions(partitions)
        self.owned = partitions
        if not self.checkpoint.enabled and partitions:
            logger.warning(
                "checkpoints are off: the streams of %s restart with fresh trackers (new track "
                "ids) at the committed offsets",
                sorted(map(str, partitions)),
            )
        self.summary.actor_recoveries += 1
        self.idle_reset_at = time.monotonic()  # recovering is not idling

    # ------------------------------------------------------------------ submit
    def _submit(self, records: list[Any]) -> None:
        cfg = self.config
        started = time.perf_counter()
        if self.first_submit_at is None:
            self.first_submit_at = time.monotonic()
        self.batch_counter += 1
        polled_at = self.last_record_at = time.monotonic()
        records_before = self.records_seen
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
            committed_below = self.checkpoint.replay_limit(tp, record.offset)
            replaying = committed_below is not None
            if replaying:
                # Already in the output: tracked again only to rebuild tracker state.
                replay_below[tp] = committed_below
            else:
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
            frames.append((record, frame))
            self.partition_streams[tp].add(frame.stream_id)
            self.checkpoint.frame_submitted(tp, frame.stream_id, record.offset, polled_at)
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
                    restore=self.checkpoint.take_restore(frame.stream_id),
                )
            )
        shard_refs = [
            self.pool.shards[shard].process.remote(
                self.pool.shard_incarnations[shard],
                requests,
                *[embed_refs[r] for r in shard_embed_refs[shard]],
            )
            for shard, requests in sorted(per_shard.items())
        ]
        states = self.checkpoint.states_after_batch(self.batch_counter)
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
                states=states,
                consumed=self.records_seen - records_before,
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
            # A dead shard raises here, before anything of the batch is written: it stays in
            # flight for _recover_actors.
            outputs: list[ShardOutput] = ray.get(head.shard_refs)
            self._finish(self.inflight.popleft(), outputs)
            block, timeout = False, 0

    def _drain(self) -> None:
        while self.inflight:
            self._finish_ready(block=True)

    def _finish(self, batch: _Batch, outputs: list[ShardOutput]) -> None:
        cfg = self.config
        sink_started = time.perf_counter()
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

        outgoing: list[_Outgoing] = []
        if cfg.kafka.results_topic:
            for result in results:
                outgoing.append(
                    _Outgoing(
                        cfg.kafka.results_topic,
                        result.stream_id.encode("utf-8"),
                        self._result_message(result),
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
                outgoing.append(_Outgoing(cfg.kafka.dead_letter_topic, record.key, value, headers))
        self._produce(outgoing)
        sink_s = time.perf_counter() - sink_started

        self.summary.batches += 1
        self.summary.frames += len(results)
        self.summary.dead_letters += len(dead)
        if cfg.job.fail_after_batches and self.summary.batches >= cfg.job.fail_after_batches:
            raise SimulatedCrash(f"simulated crash after batch {batch.batch_id} (sinks written)")
        for tp, last in batch.last_offsets.items():
            if tp in owned:
                self.pending_commit[tp] = last + 1
        self.checkpoint.batch_finished(
            batch.seen_last, owned, None if batch.revoked else batch.states
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

    # ------------------------------------------------------------------ sinks, broker outages
    def _produce(self, outgoing: list[_Outgoing]) -> None:
        """Send `outgoing` and wait until the broker acknowledged every record.

        A flush that times out (broker unreachable) is waited for again: the producer keeps
        retrying those records itself. Records that could not be sent, or that the producer gave
        up on, are sent again after a backoff by a new producer (a broker that lost its state
        can leave an idempotent producer unusable). After `job.broker_timeout_s` of failures the
        job fails with `BrokerUnavailableError`. A record may then reach the topic twice (the
        results topic is at least once); nothing is committed before all are acknowledged.
        """
        from kafka.errors import KafkaError

        job = self.config.job
        backoff = Backoff(job.retry_backoff_s, job.retry_backoff_max_s, job.broker_timeout_s)
        unsent = collections.deque(outgoing)
        waiting: list[tuple[_Outgoing, Any]] = []  # sent, not acknowledged yet
        while unsent or waiting:
            error: BaseException | None = None
            try:
                if unsent and not waiting:
                    if self.producer is None:
                        self.producer = self._producer_factory(self.config)
                    while unsent:
                        message = unsent[0]
                        future = self.producer.send(
                            message.topic,
                            key=message.key,
                            value=message.value,
                            headers=message.headers,
                        )
                        waiting.append((message, future))
                        unsent.popleft()
                if waiting:
                    self.producer.flush(timeout=job.request_timeout_s)
            except KafkaError as exc:  # no broker for the metadata, or the flush timed out
                if not exc.retriable:
                    raise
                error = exc
            failed: list[_Outgoing] = []
            pending: list[tuple[_Outgoing, Any]] = []
            for message, future in waiting:
                if not future.is_done:
                    pending.append((message, future))
                elif future.failed():
                    failed.append(message)
                    error = error or future.exception
            waiting = pending
            unsent.extendleft(reversed(failed))
            if not unsent and not waiting:
                return
            delay = backoff.failed("producing results/dead letters", error or "not acknowledged")
            self.summary.produce_retries += 1
            if waiting:
                logger.warning(
                    "%d record(s) not acknowledged after %gs (%s): waiting for the broker",
                    len(waiting),
                    job.request_timeout_s,
                    error,
                )
                continue
            logger.warning(
                "producing %d record(s) failed (%s): retrying with a new producer in %.1fs",
                len(unsent),
                error,
                delay,
            )
            self._discard_producer()
            time.sleep(delay)

    def _discard_producer(self) -> None:
        """Close the producer (none of its records is pending); the next send makes a new one."""
        producer, self.producer = self.producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)
            except Exception as error:  # a broken producer may not close cleanly
                logger.warning("closing the failed producer: %s", error)

    def _broker_answers(self) -> bool:
        """Whether the consumer is a stable group member and the broker answers right now."""
        from kafka.errors import KafkaError
        from kafka.structs import MemberState

        if self.consumer.group_metadata().state != MemberState.STABLE:
            return False
        probe = sorted(self.owned, key=lambda t: (t.topic, t.partition)) or [
            _topic_partition(self.config.kafka.frames_topics[0], 0)
        ]
        try:
            self.consumer.end_offsets(
                probe, timeout_ms=int(self.config.job.request_timeout_s * 1000)
            )
        except KafkaError:
            return False
        return True

    def _broker_lost_offsets(self, tp: Any, broker_offset: int | None) -> int | None:
        """This job's own committed offset of `tp` if the broker's went back behind it (the
        offset is then queued to be committed again), else None.

        While the job runs, no one else can move a committed offset backwards (resetting a
        group's offsets needs an empty group), so the broker lost its state: restarted without
        persistent storage (like the bundled test broker) or restored from an older copy.
        """
        ours = self.committed.get(tp)
        if ours is None or (broker_offset is not None and broker_offset >= ours):
            return None
        self.pending_commit.setdefault(tp, ours)  # the broker gets the offset back
        self.summary.broker_resets += 1
        logger.error(
            "%s: the broker's committed offset is %s but this job committed %d: the broker "
            "lost its state (restarted without persistent storage?). Resuming at offset %d "
            "and committing it again: records the broker holds below %d are taken as already "
            "processed (a re-published copy of the same records is skipped; records that are "
            "new but numbered below %d are NOT processed)",
            tp,
            broker_offset,
            ours,
            ours,
            ours,
            ours,
        )
        return ours

    # ------------------------------------------------------------------ rebalances
    def _hand_off(self) -> dict[Any, int]:
        """Partitions are being revoked: finish every batch in flight (sinks written) and take
        a snapshot; returns the offsets to commit so that the next owner starts exactly here.

        Runs in the rebalance callback on kafka-python's IO thread while the main thread waits
        in `poll`: blocking consumer calls are not allowed there, so `_commit` defers.
        """
        if not (self.inflight or self.pending_commit):
            return {}
        started = time.monotonic()
        batches = len(self.inflight)
        self.in_handoff = True
        try:
            self._drain()
            self.checkpoint.snapshot_now(self.owned)
        finally:
            self.in_handoff = False
        self.summary.handoffs += 1
        logger.info(
            "rebalance: finished %d batch(es) in flight in %.2fs; committing %s",
            batches,
            time.monotonic() - started,
            {str(tp): o for tp, o in self.pending_commit.items()},
        )
        return dict(self.pending_commit)

    def _resume_kept(self, partitions: set[Any]) -> None:
        """Partitions kept through a rebalance: continue where this job is.

        kafka-python resets their fetch position to the committed offset, which is behind when
        the handoff commit failed, and far behind when the broker lost its offsets.
        """
        for tp in sorted(partitions, key=lambda t: (t.topic, t.partition)):
            if tp in self.committed:  # else there is nothing of ours to compare with
                self._broker_lost_offsets(tp, self.consumer.committed(tp))
            position = self.next_offset.get(tp)
            if position is not None:
                self.consumer.seek(tp, position)

    # ------------------------------------------------------------------ commits, progress
    def _commit(self, force: bool = False) -> None:
        """Commit the finished batches' offsets (every `commit_interval_s`); a failed commit is
        retried with backoff (`job.retry_backoff_s`...), a forced one at once."""
        if not self.pending_commit or self.in_handoff:
            return  # in a rebalance callback the handoff commits
        now = time.monotonic()
        due = now - self.last_commit >= self.config.job.commit_interval_s
        if not force and (not due or now < self.commit_retry_at):
            return
        from kafka.errors import KafkaError

        pending = dict(self.pending_commit)
        try:
            self.consumer.commit(
                offsets=_commit_offsets(pending),
                timeout_ms=int(self.config.job.request_timeout_s * 1000),
            )
        except KafkaError as error:
            self.summary.commit_failures += 1
            delay = self.commit_backoff.failed("committing offsets", error)
            self.commit_retry_at = time.monotonic() + delay
            logger.warning("commit failed (retrying in %.1fs): %s", delay, error)
            return
        self._committed_now(pending)

    def _committed_now(self, offsets: dict[Any, int]) -> None:
        """`offsets` are committed: record them and write the checkpoint they cover."""
        self.committed.update(offsets)
        self.summary.committed = {
            f"{tp.topic}:{tp.partition}": o for tp, o in self.committed.items()
        }
        for tp, offset in offsets.items():
            if self.pending_commit.get(tp) == offset:
                del self.pending_commit[tp]
        self.last_commit = time.monotonic()
        self.commit_backoff.succeeded()
        self.commit_retry_at = 0.0
        self.checkpoint.write_snapshot()

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


def _actor_errors() -> tuple[type[BaseException], ...]:
    """What a dead actor looks like: Ray's actor errors (`ActorDiedError`,
    `ActorUnavailableError`; also the cause of a dependent task's failure) and a restarted
    shard refusing a call meant for its previous incarnation."""
    from ray.exceptions import RayActorError

    from ray_deepsort.pipeline.actors import ShardRestartedError

    return (RayActorError, ShardRestartedError)


def _topic_partition(topic: str, partition: int) -> Any:
    from kafka.structs import TopicPartition

    return TopicPartition(topic, partition)


def _tp_of(position: SourcePosition) -> Any:
    return _topic_partition(position.source, position.partition)


def _commit_offsets(offsets: dict[Any, int]) -> dict[Any, Any]:
    from kafka.structs import OffsetAndMetadata

    return {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}


class _PartitionHandoff(AsyncConsumerRebalanceListener):
    """Rebalance callbacks: before partitions are given up, the batches in flight are finished
    and committed, so the next owner starts exactly where this job stopped (no lost or repeated
    output). kafka-python calls them on its IO thread while the job's main thread waits in
    `poll` (or `close`), so they may use the job's state but no blocking consumer call: the
    commit is awaited with `commit_async`. An error is kept and raised on the main thread.
    """

    def __init__(self, job: StreamJob) -> None:
        self.job = job
        self.enabled = True  # off while closing: a crashed job must not commit

    async def on_partitions_revoked(self, revoked: Any) -> None:
        job = self.job
        job.idle_reset_at = time.monotonic()
        if not self.enabled or not revoked:
            return
        job.revoked_in_rebalance |= set(revoked)
        job.rebalance_done = False
        try:
            offsets = job._hand_off()
            if not offsets:
                return
            try:
                await job.consumer.commit_async(_commit_offsets(offsets))
            except Exception as error:  # the new owner replays; Parquet stays exact
                job.summary.commit_failures += 1
                logger.warning(
                    "rebalance: commit failed (%s); the next owner of the revoked partitions "
                    "replays from their last committed offsets (results may repeat)",
                    error,
                )
                return
            job._committed_now(offsets)
        except BaseException as error:
            job.listener_error = error

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.job.idle_reset_at = time.monotonic()
        self.job.rebalance_done = True

    async def on_partitions_lost(self, lost: Any) -> None:
        """Membership lost (session expired, broker restarted): nothing can be committed, and
        in-flight results of these partitions are dropped even if they come straight back."""
        job = self.job
        job.idle_reset_at = time.monotonic()
        if self.enabled and lost:
            logger.warning("consumer group membership lost: %s", sorted(map(str, lost)))
            job.lost_in_rebalance |= set(lost)


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
    """Producer for the results and dead-letter topics (acks=all; dead letters can be large).

    Not idempotent: a broker that restarts without its state does not know the producer id
    any more, and an idempotent producer then stalls until its records expire. The results
    topic is at least once anyway; one request in flight keeps a retried record in order.
    """
    from kafka import KafkaProducer

    kafka = config.kafka
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "client_id": f"{kafka.client_id}-sink",
        "acks": "all",
        "linger_ms": 5,
        "enable_idempotence": False,
        "max_in_flight_requests_per_connection": 1,
        "max_request_size": kafka.max_message_bytes + 64 * 1024,
        **kafka.security,
        **kafka.producer,
    }
    return KafkaProducer(**options)


def run_stream_job(config: StreamConfig, *, install_signal_handlers: bool = False) -> JobSummary:
    """Connect to Ray (per `ray.address`) unless already connected, and run the job."""
    from ray_deepsort.pipeline.cluster import connect_ray

    connect_ray(config.ray.address, namespace=config.ray.namespace, log_to_driver=True)
    job = StreamJob(config)
    if install_signal_handlers:
        job.install_signal_handlers()
    return job.run()
