"""`PartitionAssignments`: the driver's reaction to partitions coming and going.

After every poll, `accept` compares the consumer's assignment with the ledger's `owned`
partitions (and what the rebalance listener saw meanwhile):

- Lost partitions (revoked, or membership lost) are forgotten: their results in flight are not
  written, their streams leave the shards, their checkpoint bookkeeping goes.
- Gained partitions are taken over at their committed offset: output files of uncommitted input
  are removed, a broker that lost its committed offsets is noticed (this job's own offsets
  win), and checkpointed streams are restored, possibly replaying up to the commit.
- Partitions kept through a rebalance continue where this job is, not where kafka-python's
  reset put the consumer.

Then it keeps only the records to process: of owned partitions, not fenced by a rebalance,
not fetched before a seek back, and not fetched again. Actor recovery rebuilds every partition
in place with `revoke` and `assign`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ray_deepsort.pipeline.sharding import drop_partitions, drop_streams
from ray_deepsort.stream.batches import BatchWindow
from ray_deepsort.stream.config import StreamConfig
from ray_deepsort.stream.kafka_clients import (
    PartitionHandoff,
    by_partition,
    lowest_offsets,
    topic_partition,
)
from ray_deepsort.stream.ledger import PartitionLedger, partition_label
from ray_deepsort.stream.progress import IdleWatch
from ray_deepsort.stream.sink import ResultSink
from ray_deepsort.stream.snapshots import CheckpointCoordinator
from ray_deepsort.stream.summary import JobSummary

if TYPE_CHECKING:
    from ray_deepsort.pipeline.actors import JobActors

logger = logging.getLogger("ray_deepsort.stream")


class PartitionAssignments:
    """Applies assignment changes to the ledger, the shards, the checkpoints and the output.

    Counts into `summary`: `leftovers_removed`, `broker_resets`; sets `started` and `owned`.
    """

    def __init__(
        self,
        config: StreamConfig,
        consumer: Any,
        listener: PartitionHandoff,
        ledger: PartitionLedger,
        batches: BatchWindow,
        checkpoint: CheckpointCoordinator,
        sink: ResultSink,
        pool: JobActors,
        summary: JobSummary,
        idle: IdleWatch,
    ) -> None:
        self.timeout_ms = int(config.job.request_timeout_s * 1000)
        self.consumer = consumer
        self.listener = listener
        self.ledger = ledger
        self.batches = batches
        self.checkpoint = checkpoint
        self.sink = sink
        self.pool = pool
        self.summary = summary
        self.idle = idle

    def accept(self, records: list[Any]) -> list[Any]:
        """React to assignment changes; drop records of partitions we no longer own or saw."""
        current = set(self.consumer.assignment())
        owned = self.ledger.owned
        # Revoked or lost in a rebalance callback since the last poll (see `take_fences`).
        fences = self.listener.take_fences()
        # Lost partitions count as lost and, if assigned again, as gained, even when the main
        # thread never saw them go.
        gained = (current - owned) | (fences.void & current)
        lost = (owned - current) | (fences.void & owned)
        if lost:
            logger.warning("partitions revoked: %s", sorted(map(str, lost)))
            self.revoke(lost)
        reseeked: set[Any] = set()
        if gained:  # only then: this runs after every poll
            fetched = lowest_offsets((r.topic, r.partition, r.offset) for r in records)
            reseeked = self.assign(gained, fetched)
        kept_through = (fences.rebalanced & owned & current) - lost
        if kept_through:
            self._resume_kept(kept_through)
        self.ledger.owned = current
        if gained or lost:
            self.summary.owned = sorted(map(partition_label, current))
        kept = []
        for record in records:
            tp = topic_partition(record.topic, record.partition)
            if tp not in current or tp in reseeked or tp in fences.fenced:
                continue  # not ours, fetched before seeking back, or before a rebalance
            self.checkpoint.record_fetched(tp, record.offset)
            if self.ledger.accept(tp, record.offset):
                kept.append(record)
        return kept

    def revoke(self, lost: set[Any]) -> None:
        """Forget `lost` partitions: in-flight results, offsets, checkpoint state, their streams."""
        self.batches.revoke(lost)
        dropped = self.ledger.forget(lost)
        drop_streams(self.pool.shards, dropped, self.batches.owner)
        self.checkpoint.forget(lost, dropped)

    def assign(self, gained: set[Any], fetched: dict[Any, int] | None = None) -> set[Any]:
        """Take over `gained` partitions at their committed offsets: remove uncommitted files,
        restore checkpointed streams. Returns the partitions sent back to replay a checkpoint.

        `fetched`: the first offset of each partition among records the poll that brought the
        assignment returned already (the consumer's position is past them, but they are this
        run's first records of the partition)."""
        reseeked: set[Any] = set()
        self.idle.assigned()
        # Streams a previous owner left on the shards (it died before it could drop them).
        drop_partitions(self.pool.shards, [(tp.topic, tp.partition) for tp in gained])
        for tp in by_partition(gained):
            committed = self.consumer.committed(tp)
            ours = self._reclaim(tp, committed)
            if ours is not None:
                committed = ours  # keep this job's output and state at and above it
                self.consumer.seek(tp, ours)
                self.ledger.seek(tp, ours)  # re-published records below it are skipped
            if committed is not None:
                start = int(committed)
            elif fetched and tp in fetched:
                start = fetched[tp]
            else:
                start = self._reset_position(tp)
            self.ledger.taken_over(tp, start)
            self.summary.started = self.ledger.started_labels()
            removed = self.sink.remove_uncommitted(tp, start)
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
                self.ledger.committed[tp] = int(committed)
            restored = self.checkpoint.restore_partition(tp, committed)
            if restored is not None:
                for stream_id in restored.streams:
                    self.ledger.stream_seen(tp, stream_id)
                if restored.replay_from is not None:
                    self.consumer.seek(tp, restored.replay_from)
                    self.ledger.seek(tp, restored.replay_from)
                    reseeked.add(tp)
        logger.info("partitions assigned: %s", sorted(map(str, gained)))
        return reseeked

    def _reset_position(self, tp: Any) -> int:
        """Where a partition without a committed offset is read from (`auto_offset_reset`).

        Output files below it belong to records this run will not read again (expired by
        retention, or skipped by "latest"), so only files from here on count as leftovers.
        """
        position = self.consumer.position(tp, timeout_ms=self.timeout_ms)
        if position is None:  # unknown: every file may be rewritten, so none may stay
            logger.warning("%s: no start position within %d ms; assuming 0", tp, self.timeout_ms)
            return 0
        return int(position)

    def _resume_kept(self, partitions: set[Any]) -> None:
        """Partitions kept through a rebalance: continue where this job is, the next record it
        has not accepted (`PartitionLedger.position`: its committed offset when it accepted
        none since taking the partition over).

        kafka-python's fetch position is no guide: records fetched while the rebalance ran
        were fenced (not processed) but moved it on; and after a reset it is the broker's
        committed offset, which is behind when the handoff commit failed, and far behind when
        the broker lost its offsets.
        """
        for tp in by_partition(partitions):
            if tp in self.ledger.committed:  # else there is nothing of ours to compare with
                self._reclaim(tp, self.consumer.committed(tp))
            position = self.ledger.position(tp)
            if position is not None:
                self.consumer.seek(tp, position)

    def _reclaim(self, tp: Any, broker_offset: int | None) -> int | None:
        """`PartitionLedger.reclaim`, counted in the summary."""
        ours = self.ledger.reclaim(tp, broker_offset)
        if ours is not None:
            self.summary.broker_resets += 1
        return ours
