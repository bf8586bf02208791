"""`PartitionLedger`: where the stream job stands in each partition, in one place.

The driver's main loop, the rebalance hand-off, actor recovery and the committer all move these
positions, so they live together instead of in separate dicts:

- `owned`: the partitions this job processes (the consumer's assignment as the main thread last
  saw it).
- `next_offset`: the next record to process. A record below it was fetched again (after a
  rebalance or a seek) and is already in flight or done: `accept` drops it.
- `streams`: the streams seen per partition; they are dropped from the shards with it.
- `pending`: the next offset of each partition's finished batches (sinks written, not committed
  yet), what the `OffsetCommitter` commits.
- `committed`: what this job committed, or found committed when it took the partition over.
  A broker whose committed offset falls behind it lost its state (`reclaim`).
- `job_committed`: what the job's other ingest workers committed ("topic:partition" -> offset;
  the driver passes it on), so a broker that lost its state is noticed in a partition this
  worker takes over from another one too.
- `started`: where this run first took each partition over (its committed offset then, or
  where the consumer was reset to): records from there up to `committed` are done.

What the tracker-state checkpoints cover (and the replay up to the commit) is the
`CheckpointCoordinator`'s (`ray_deepsort.stream.snapshots`). Plain Python without Kafka:
partitions are anything hashable with `.topic` and `.partition`.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

logger = logging.getLogger("ray_deepsort.stream")


def partition_label(tp: Any) -> str:
    """How summaries name a partition: "topic:partition"."""
    return f"{tp.topic}:{tp.partition}"


class PartitionLedger:
    """Positions of the partitions one `StreamJob` run owns (see the module docstring)."""

    def __init__(self) -> None:
        self.owned: set[Any] = set()
        self.next_offset: dict[Any, int] = {}
        self.streams: dict[Any, set[str]] = collections.defaultdict(set)
        self.pending: dict[Any, int] = {}
        self.committed: dict[Any, int] = {}
        self.started: dict[Any, int] = {}
        self.job_committed: dict[str, int] = {}

    # ------------------------------------------------------------------ records
    def accept(self, tp: Any, offset: int) -> bool:
        """Whether the fetched record at `offset` is new (it then becomes the newest)."""
        expected = self.next_offset.get(tp)
        if expected is not None and offset < expected:
            return False  # re-fetched after a rebalance: already in flight or done
        self.next_offset[tp] = offset + 1
        return True

    def seek(self, tp: Any, offset: int) -> None:
        """The consumer was sent back to `offset`: records from there on are processed."""
        self.next_offset[tp] = offset

    def position(self, tp: Any) -> int | None:
        """The next offset to process (for the lag), or None when unknown."""
        return self.next_offset.get(tp, self.committed.get(tp))

    def stream_seen(self, tp: Any, stream_id: str) -> None:
        self.streams[tp].add(stream_id)

    def forget(self, partitions: set[Any]) -> set[str]:
        """`partitions` are revoked: drop their positions; returns their streams."""
        dropped: set[str] = set()
        for tp in partitions:
            self.next_offset.pop(tp, None)
            self.pending.pop(tp, None)
            dropped |= self.streams.pop(tp, set())
        return dropped

    # ------------------------------------------------------------------ commits
    def batch_done(self, last_offsets: dict[Any, int], owned: set[Any]) -> None:
        """A batch's sinks are written: its partitions (still owned) may be committed past it."""
        for tp, last in last_offsets.items():
            if tp in owned:
                self.pending[tp] = last + 1

    def committed_now(self, offsets: dict[Any, int]) -> None:
        """`offsets` are committed; what finished since stays pending."""
        self.committed.update(offsets)
        for tp, offset in offsets.items():
            if self.pending.get(tp) == offset:
                del self.pending[tp]

    def keep_pending(self, partitions: set[Any]) -> None:
        """Drop pending offsets of partitions not in `partitions` (given away meanwhile: never
        commit for their new owner, who replays them)."""
        for tp in set(self.pending) - partitions:
            del self.pending[tp]

    def taken_over(self, tp: Any, start: int) -> None:
        """`tp` was assigned and is processed from `start` on (the first time counts)."""
        self.started.setdefault(tp, start)

    def committed_labels(self) -> dict[str, int]:
        """Committed offsets keyed "topic:partition" (the summary's `committed`)."""
        return {partition_label(tp): o for tp, o in self.committed.items()}

    def started_labels(self) -> dict[str, int]:
        """Start offsets keyed "topic:partition" (the summary's `started`)."""
        return {partition_label(tp): o for tp, o in self.started.items()}

    def reclaim(self, tp: Any, broker_offset: int | None) -> int | None:
        """This job's own committed offset of `tp` (this worker's, or another worker's of the
        job) if the broker's went back behind it (the offset is then queued to be committed
        again), else None.

        While the job runs, no one else can move a committed offset backwards (resetting a
        group's offsets needs an empty group), so the broker lost its state: restarted without
        persistent storage (like the bundled test broker) or restored from an older copy.
        """
        known = [self.committed.get(tp), self.job_committed.get(partition_label(tp))]
        ours = max((offset for offset in known if offset is not None), default=None)
        if ours is None or (broker_offset is not None and broker_offset >= ours):
            return None
        self.pending.setdefault(tp, ours)  # the broker gets the offset back
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
