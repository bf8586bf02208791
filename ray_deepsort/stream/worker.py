"""An ingest worker: the partitions one consumer of the group owns, from poll to commit.

One kafka-python consumer (consumer group, manual commits) polls micro-batches. At most
`batch.max_inflight_batches` batches are in flight: when the window is full the worker waits
instead of polling (back-pressure). Batches finish in order: Parquet files are written
atomically, results and dead letters are produced and flushed, and only then are the batch's
offsets committed. A replay after a crash therefore starts at the first uncommitted frame and
rewrites the same Parquet files (deterministic names; uncommitted leftovers are deleted when a
partition is assigned), so the output holds every frame exactly once.

`PartitionWorker` is a plain class (the `IngestWorkerActor` in `ingest.py` is its Ray shell;
unit tests drive it with fake clients and actors). It sends frames to the job's shared
embedders and tracker shards and only orchestrates; each concern is a piece with a small
interface:

- `batches.BatchWindow`: decodes and validates records (bad ones become dead letters), groups
  embed requests, sends each tracker shard its frames, and hands batches back in order.
- `sink.ResultSink`: Parquet files, results topic, dead letters, produce retries.
- `ledger.PartitionLedger`: each partition's position (owned, next offset, pending and committed
  offsets); `partitions.PartitionAssignments` applies assignment changes to it.
- `kafka_clients`: the clients, `OffsetCommitter` (commits with backoff) and `PartitionHandoff`
  (the rebalance listener: before partitions are revoked the batches in flight are finished and
  committed, so the next owner starts exactly there).
- `snapshots.CheckpointCoordinator` (tracker-state checkpoints) and `progress` (progress lines,
  metrics, and idling).

Broker outages are waited out: produce and commit are retried with backoff (`stream.retry`),
idling does not count while the broker does not answer, and when a broker lost its committed
offsets (restarted without storage) this job's own offsets win (docs/streaming.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ray_deepsort.pipeline.inflight import InflightWindow
from ray_deepsort.pipeline.tracker_shard import CheckpointRestoreError, checkpoint_restore_error
from ray_deepsort.pipeline.types import ShardOutput
from ray_deepsort.stream.batches import Batch, BatchWindow, RayCalls, first_offsets
from ray_deepsort.stream.config import StreamConfig
from ray_deepsort.stream.kafka_clients import (
    ClientFactories,
    OffsetCommitter,
    PartitionHandoff,
    broker_answers,
    make_consumer,
    make_producer,
)
from ray_deepsort.stream.ledger import PartitionLedger
from ray_deepsort.stream.metrics import JobMetrics
from ray_deepsort.stream.partitions import PartitionAssignments
from ray_deepsort.stream.progress import IdleWatch, JobProgress, consumer_lag
from ray_deepsort.stream.sink import ResultSink
from ray_deepsort.stream.snapshots import CheckpointCoordinator
from ray_deepsort.stream.summary import JobSummary

if TYPE_CHECKING:
    from ray_deepsort.pipeline.actors import JobActors

logger = logging.getLogger("ray_deepsort.stream")

# Recoveries in a row without a new frame written before the job gives up (a frame that kills
# its shard every time would otherwise be replayed forever).
MAX_STALLED_RECOVERIES = 5


class SimulatedCrash(RuntimeError):
    """Raised by `job.fail_after_batches` (rehearsing a crash between sink writes and commit)."""


class PartitionWorker:
    """One consumer of the job's group and the partitions it is assigned (`open` it on the
    job's actors, then `run_until_stopped`; `close` undoes `open`).

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
        self._factories = ClientFactories(
            consumer_factory or make_consumer, producer_factory or make_producer
        )
        self._stop = threading.Event()
        self.summary = JobSummary(output_path=config.output.path)

    def request_stop(self) -> None:
        """Finish the batches in flight, commit, and return from `run` (thread- and signal-safe)."""
        self._stop.set()

    @property
    def owned(self) -> set[Any]:
        """The partitions this job processes now."""
        return self.ledger.owned

    @property
    def inflight(self) -> InflightWindow[Batch]:
        """The batches submitted and not finished yet, oldest first."""
        return self.batches.inflight

    def status(self, job_committed: dict[str, int] | None = None) -> tuple[JobSummary, bool]:
        """A copy of the summary so far and whether this worker is idle (safe to call from
        another thread while `run_until_stopped` runs). `job_committed`: the offsets every
        worker of the job committed (`PartitionLedger.job_committed`)."""
        if job_committed is not None and hasattr(self, "ledger"):
            self.ledger.job_committed = dict(job_committed)  # replaced whole: no torn reads
        for _ in range(10):
            try:  # the run thread may resize a dict meanwhile
                summary = JobSummary.from_dict(self.summary.to_dict())
                break
            except RuntimeError:
                continue
        else:
            summary = JobSummary(output_path=self.summary.output_path)
        # `open` may be building the pieces meanwhile: each is read only once it exists.
        if (batches := getattr(self, "batches", None)) is not None:
            summary.inflight = len(batches.inflight)
        if (progress := getattr(self, "progress", None)) is not None:
            progress.measure_process(summary)
        idle = getattr(self, "idle", None)
        return summary, idle is not None and idle.idle

    def run(self, pool: JobActors) -> JobSummary:
        """Open on the job's actors, process until stopped (or failed), close; the summary."""
        started = time.monotonic()
        crashed = False
        try:
            self.open(pool)
            self.run_until_stopped()
            logger.info("stopped (%s): %s", self.summary.stop_reason, self._progress_line())
        except SimulatedCrash:
            crashed = True
            self.summary.stop_reason = "simulated crash"
            raise
        finally:
            self.close(crashed)
            if hasattr(self, "progress"):  # else `open` failed at once
                self.progress.summarize(time.monotonic() - started)
            self.summary.owned = []  # closed: the group has taken them back
        return self.summary

    def open(self, pool: JobActors, ray_calls: RayCalls | None = None) -> None:
        """Build the run's pieces around the job's started actors and subscribe (unit tests
        pass fake actors and `ray_calls`). `close` undoes it."""
        cfg, summary = self.config, self.summary
        ray_calls = ray_calls or RayCalls()
        self.pool = pool
        self.progress = JobProgress(
            cfg, summary, JobMetrics(cfg.job.metrics, {"group": cfg.kafka.group_id})
        )
        self.checkpoint = CheckpointCoordinator(cfg, pool, summary, get=ray_calls.get)
        self.sink = ResultSink(cfg, self._factories.producer, summary, self.progress.metrics)
        self.consumer = self._factories.consumer(cfg)
        self.ledger = PartitionLedger()
        self.batches = BatchWindow(cfg, pool, self.checkpoint, self.ledger, ray_calls)
        self.idle = IdleWatch(
            cfg.job.max_idle_s,
            lambda: broker_answers(self.consumer, self.ledger.owned, cfg),
            summary,
        )
        self.committer = OffsetCommitter(
            self.consumer, self.ledger, cfg, summary, self.checkpoint.write_snapshot
        )
        self.listener = PartitionHandoff(self.committer, self._hand_off, self.idle.reset)
        self.partitions = PartitionAssignments(
            cfg,
            self.consumer,
            self.listener,
            self.ledger,
            self.batches,
            self.checkpoint,
            self.sink,
            pool,
            summary,
            self.idle,
        )
        self.consumer.subscribe(cfg.kafka.frames_topics, listener=self.listener)

    def close(self, crashed: bool) -> None:
        """Close the clients (the actors are the job's); after a crash the producer does not
        wait."""
        closers: list[Callable[[], Any]] = []
        if hasattr(self, "consumer"):
            if hasattr(self, "listener"):
                # Closing calls on_partitions_revoked: everything that may be committed is.
                self.listener.enabled = False
            closers.append(lambda: self.consumer.close(autocommit=False))
        if hasattr(self, "sink"):
            closers.append(lambda: self.sink.close(crashed))
        for closer in closers:
            try:
                closer()
            except Exception as error:  # keep closing the rest
                logger.warning("while closing: %s", error)

    # ------------------------------------------------------------------ main loop
    def run_until_stopped(self) -> None:
        """Loop, drain, final checkpoint; after a dead actor (even one that dies while the job
        recovers from another) the job is recovered and the loop resumed."""
        failure: BaseException | None = None
        try:
            while True:
                try:
                    if failure is not None:
                        self.recover_actors(failure)
                        failure = None
                    self.summary.stop_reason = self._loop()
                    self._drain()
                    self.checkpoint.snapshot_now(self.ledger.owned)
                    self.committer.commit(force=True)
                    if not self.ledger.pending:
                        self.checkpoint.write_snapshot()  # all committed: the final state is safe
                    return
                except _actor_errors() as error:
                    failure = error
                except Exception as error:
                    restore_error = checkpoint_restore_error(error)
                    if restore_error is None:
                        raise
                    self._stop_on_unrestorable_checkpoint(restore_error)
        finally:
            self.progress.stall.stop()

    def _stop_on_unrestorable_checkpoint(self, error: CheckpointRestoreError) -> None:
        """A shard cannot restore a stream's checkpoint and `checkpoint.on_invalid` is "fail".

        Fatal, not an actor failure: the shard is alive and the file would fail again, so
        nothing is retried. Batches finish in order, so the batch that needed the checkpoint
        and all after it have written nothing: they are dropped uncommitted (a rerun polls them
        again). What finished before is committed (best effort), then the job stops with the
        shard's message (file, stream, topic and partition, problem, how to recover).
        """
        dropped = len(self.batches.inflight)
        self.batches.inflight.clear()
        self.summary.stop_reason = "checkpoint cannot be restored"
        try:
            self.committer.commit(force=True)
        except Exception as commit_error:  # the next run replays from the last commit
            logger.warning("commit before stopping failed: %s", commit_error)
        logger.error("stopping: %s (%d batch(es) in flight dropped, not committed)", error, dropped)
        raise CheckpointRestoreError(str(error)) from None

    def _loop(self) -> str:
        """Poll, submit, finish and commit until a stop condition; returns the reason."""
        cfg = self.config
        inflight = self.batches.inflight
        while True:
            self.progress.stall.tick()
            if self._stop.is_set():
                return "stop requested"
            if cfg.job.stop_after_batches and self.batches.submitted >= cfg.job.stop_after_batches:
                return f"stop_after_batches={cfg.job.stop_after_batches}"
            self.idle.too_long(busy=bool(inflight))  # the driver stops idle workers
            self._finish_ready(block=inflight.full)
            if inflight.full:
                continue
            records = self.partitions.accept(self._poll_batch())
            if records:
                self.progress.submitting()
                polled_at = time.monotonic()
                self.idle.records_at(polled_at)
                self.batches.submit(records, polled_at)
                self.progress.inflight(len(inflight))
            elif inflight:
                self._finish_ready(block=False, timeout=cfg.batch.max_wait_ms / 1000)
            self.committer.commit()
            self.progress.maybe_log(self._progress_line)
            self.checkpoint.evict_idle(
                self.ledger.owned, all_committed=not inflight and not self.ledger.pending
            )

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
            self.listener.raise_error()  # raised in a rebalance callback
            for records in polled.values():
                collected.extend(records)
            if collected and deadline is None:
                deadline = time.monotonic() + cfg.max_wait_ms / 1000
            if deadline is None or time.monotonic() >= deadline:
                break
        return collected

    # ------------------------------------------------------------------ finish
    def _finish_ready(self, block: bool, timeout: float | None = None) -> None:
        """Finish batches at the head of the window whose shard results are ready (in order)."""
        while (ready := self.batches.pop_ready(block, timeout)) is not None:
            self._finish(*ready)
            block, timeout = False, 0

    def _drain(self) -> None:
        """Finish every batch in flight (a stop)."""
        while self.batches.inflight:
            self._finish_ready(block=True)

    def _void(self, dropped: list[Batch]) -> None:
        """The dropped batches' partitions (replaying ones too) hold shard state past their
        output: rebuilt."""
        self.summary.batches_dropped += len(dropped)
        self.listener.void(set(first_offsets(dropped)))

    def _finish(self, batch: Batch, outputs: list[ShardOutput]) -> None:
        """Write the batch's output (both sinks), and only then queue its offsets for commit."""
        cfg = self.config
        owned = self.ledger.owned - batch.revoked
        results, dead = batch.output(outputs, owned)
        written = self.sink.write(results, dead, batch.first_offsets)
        self.summary.batches += 1
        self.summary.frames += len(results)
        self.summary.dead_letters += len(dead)
        if cfg.job.fail_after_batches and self.summary.batches >= cfg.job.fail_after_batches:
            raise SimulatedCrash(f"simulated crash after batch {batch.batch_id} (sinks written)")
        self.ledger.batch_done(batch.last_offsets, owned)
        self.checkpoint.batch_finished(
            batch.seen_last, owned, None if batch.revoked else batch.states
        )
        self.committer.commit()
        self.progress.batch_finished(batch, outputs, written, results, len(self.batches.inflight))

    def _hand_off(self) -> dict[Any, int]:
        """Partitions are being revoked: drop the batches in flight (see `PartitionHandoff`) and
        return the offsets of the finished ones to commit, so that the next owner starts right
        after this job's last output.

        Runs in the rebalance callback on kafka-python's IO thread while the main thread waits
        in `poll`: no blocking consumer call here (the listener commits with `commit_async`).
        """
        self.summary.handoffs += 1
        dropped = self.batches.drop_all()
        self.progress.inflight(0)
        if dropped:
            self._void(dropped)
        elif self.ledger.pending:  # the shards hold exactly the written state: keep it
            self.checkpoint.snapshot_now(self.ledger.owned)
        logger.info(
            "rebalance: %d batch(es) in flight dropped; committing %s",
            len(dropped),
            {str(tp): o for tp, o in self.ledger.pending.items()},
        )
        return dict(self.ledger.pending)

    # ------------------------------------------------------------------ actor failures
    def recover_actors(self, error: BaseException) -> None:
        """A tracker shard died (or an embed failed for good): rebuild every owned partition.

        Batches finish in order, so the failed batch and all after it have written nothing:
        they are dropped and what is finished is committed. Once every shard answers again,
        each owned partition is revoked and re-assigned in place, as in a rebalance: its streams
        are dropped on all shards, restored from the checkpoint and replayed without output up
        to the committed offset. Without checkpoints they restart with fresh trackers there.
        """
        stalled = self.progress.recovery()
        if stalled > MAX_STALLED_RECOVERIES:
            raise RuntimeError(
                f"actors failed {stalled} times in a row without a new frame written; giving up"
            ) from error
        dropped = self.batches.drop_all()
        self.progress.inflight(0)
        logger.warning(
            "actor failure (%s: %s): dropping %d batch(es) in flight, rebuilding tracker state",
            type(error).__name__,
            str(error).strip().splitlines()[0] if str(error).strip() else "",
            len(dropped),
        )
        rewind = first_offsets(dropped)  # partition -> first dropped offset
        partitions = set(self.consumer.assignment())
        self.ledger.keep_pending(partitions)  # given away meanwhile: the next owner replays them
        self.committer.commit(force=True)
        # Back to the first unfinished record (a checkpoint restore may go further back).
        for tp in partitions:
            if tp in self.ledger.committed:
                self.consumer.seek(tp, self.ledger.committed[tp])
            elif self.config.kafka.auto_offset_reset == "earliest":
                self.consumer.seek_to_beginning(tp)
            elif tp in rewind:
                self.consumer.seek(tp, rewind[tp])
        self.pool.await_shards(self.config.actors.start_timeout_s)
        self.partitions.revoke(self.ledger.owned | partitions)
        self.partitions.assign(partitions)
        self.ledger.owned = partitions
        if not self.checkpoint.enabled and partitions:
            logger.warning(
                "checkpoints are off: the streams of %s restart with fresh trackers (new track "
                "ids) at the committed offsets",
                sorted(map(str, partitions)),
            )
        self.summary.actor_recoveries += 1
        self.idle.reset()  # recovering is not idling

    def _progress_line(self) -> str:
        """Counts, window, lag and latencies: the progress log's and the stop message's."""
        lag = consumer_lag(self.consumer, self.ledger, self.progress.metrics)
        self.summary.lag = lag or 0
        return self.progress.line(len(self.batches.inflight), lag, self.batches.crops_per_request())


def _actor_errors() -> tuple[type[BaseException], ...]:
    """What a dead actor looks like: Ray's actor errors (`ActorDiedError`,
    `ActorUnavailableError`; also the cause of a dependent task's failure) and a restarted
    shard refusing a call meant for its previous incarnation."""
    from ray.exceptions import RayActorError

    from ray_deepsort.pipeline.actors import ShardRestartedError

    return (RayActorError, ShardRestartedError)
