"""`CheckpointCoordinator`: when the stream job snapshots, writes, restores and evicts state.

The files are `ray_deepsort.pipeline.state_store`'s and each tracker shard writes its own
streams' files; this module decides what is written when, so that the checkpoints always agree
with the committed offsets:

- Snapshot: after every `checkpoint.every_batches`-th batch each shard is asked for its state
  (an ObjectRef queued behind the batch's calls, so exactly the state after it), limited to the
  streams that moved since their last file. When the batch finishes, the snapshot records the
  partition offsets it covers; it is written once those offsets are committed: stream files
  first, then each partition's manifest, so a manifest never names state it does not have.
- Restore: a partition assigned with a manifest at or below its committed offset continues from
  it. Its streams' states stay in storage until their next frame (the shard loads the file), and
  the consumer goes back to the manifest's offset to track the frames up to the commit again,
  without output. A manifest ahead of the commit (or none) means fresh trackers and a new empty
  manifest at the committed offset (or at the first record when there is no commit).
- Eviction: streams idle for `checkpoint.evict_idle_s` whose latest state is in their file leave
  their shard's memory; their next frame loads it back.

Plain Python without Kafka: the driver passes partition keys (anything hashable with `.topic`
and `.partition`), the actor pool and the job summary, so unit tests use small fakes. Ray is
imported only to resolve the shards' answers (`get`, replaceable in tests).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ray_deepsort.pipeline.inflight import ray_get
from ray_deepsort.pipeline.sharding import drop_streams, shard_of
from ray_deepsort.pipeline.state_store import CheckpointError, CheckpointStore, PartitionManifest
from ray_deepsort.pipeline.tracker_shard import CheckpointRestoreError

if TYPE_CHECKING:
    from ray_deepsort.pipeline.actors import JobActors
    from ray_deepsort.stream.config import StreamConfig
    from ray_deepsort.stream.summary import JobSummary

logger = logging.getLogger("ray_deepsort.stream")


@dataclass
class ShardStates:
    """Every shard's tracker state at one point of the input (not yet written)."""

    state_refs: list[Any]  # one `state_dict` ObjectRef per shard
    # Per shard, the streams that moved since their last file -> (partition, last offset
    # included): the ones its state holds and a write may need.
    moved: list[dict[str, tuple[Any, int]]]


@dataclass
class _Snapshot:
    """Shard states after a finished batch, waiting for the commit that covers them."""

    states: ShardStates
    covered: dict[Any, int]  # partition -> next offset the states cover


@dataclass(frozen=True)
class Restored:
    """A partition that continues from its checkpoint."""

    streams: list[str]  # their states stay in storage until their next frame
    replay_from: int | None  # where the consumer goes back to rebuild state; None: no replay


class CheckpointCoordinator:
    """Checkpoint bookkeeping of one `StreamJob` run; the driver calls it at each step.

    With `checkpoint.enabled` false nothing is read or written, but stream positions are still
    followed (cheap, and the driver needs no branches).
    """

    def __init__(
        self,
        config: StreamConfig,
        pool: JobActors,
        summary: JobSummary,
        get: Callable[[list[Any]], list[Any]] = ray_get,
    ) -> None:
        self.config = config
        self.pool = pool
        self.summary = summary  # checkpoints, restores, replays and evictions are counted here
        self._get = get
        self.store: CheckpointStore | None = None
        if config.checkpoint.enabled:
            self.store = CheckpointStore(config.output.path, config.output.fsync)
        self.manifests: dict[Any, PartitionManifest] = {}
        self.covered: dict[Any, int] = {}  # partition -> next offset tracked (replay included)
        self.stream_position: dict[str, tuple[Any, int]] = {}  # last offset sent to a shard
        self.persisted: dict[str, tuple[Any, int]] = {}  # what the stream's file holds
        # stream -> its partition, for streams whose state is only in checkpoint storage
        # (restored partitions, evicted idle streams): their shard loads it at the next frame.
        self.on_disk: dict[str, Any] = {}
        self.last_seen: dict[str, float] = {}  # stream -> monotonic time of its last frame
        self.evict_check_at = 0.0
        self.replay_below: dict[Any, int] = {}  # partition -> committed offset during replay
        self.initial_manifest_due: set[Any] = set()
        self.snapshot_due: _Snapshot | None = None

    @property
    def enabled(self) -> bool:
        """`checkpoint.enabled`: without it, recovered streams restart with fresh trackers."""
        return self.store is not None

    # ------------------------------------------------------------------ partitions
    def restore_partition(self, tp: Any, committed: int | None) -> Restored | None:
        """Restore the trackers of a newly assigned partition from its checkpoint.

        Its streams' states stay in storage until their next frame, whose shard loads the file
        and skips the replayed frames that state already holds. Returns None when the partition
        starts with fresh trackers (or checkpoints are off); `replay_from` says where the
        consumer must go back to rebuild state from frames that are already committed (their
        output is not written again).
        """
        if self.store is None:
            return None
        manifest = self._read_manifest(tp)
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
            return None
        for stream_id in manifest.streams:
            self.on_disk[stream_id] = tp
        self.manifests[tp] = manifest
        self.covered[tp] = manifest.offset
        logger.info(
            "%s: restored %d stream(s) from the checkpoint at offset %d (committed %d)",
            tp,
            len(manifest.streams),
            manifest.offset,
            committed,
        )
        self.summary.streams_restored += len(manifest.streams)
        replay_from = None
        if manifest.offset < committed:
            replay_from = manifest.offset
            self.replay_below[tp] = int(committed)
            self.summary.records_replayed += int(committed) - manifest.offset
        return Restored(list(manifest.streams), replay_from)

    def _read_manifest(self, tp: Any) -> PartitionManifest | None:
        """The partition's manifest; a malformed one follows `checkpoint.on_invalid` as a
        stream checkpoint does: "fail" stops the job naming the file, "fresh" logs an ERROR
        and the partition's streams start with fresh trackers (new track ids)."""
        assert self.store is not None
        try:
            return self.store.read_manifest(tp.topic, tp.partition)
        except CheckpointError as error:
            path = self.store.manifest_path(tp.topic, tp.partition)
            if self.config.checkpoint.on_invalid == "fresh":
                logger.error(
                    '%s: its streams start with fresh trackers (checkpoint.on_invalid="fresh"): '
                    "manifest %s cannot be read: %s",
                    tp,
                    path,
                    error,
                )
                return None
            raise CheckpointRestoreError(
                f"checkpoint manifest of {tp.topic}[{tp.partition}] cannot be read: {error}. "
                "Nothing of the partition was tracked. To recover, restore the file from a "
                "backup and run again; or, to accept new track ids for its streams, run once "
                'with checkpoint.on_invalid="fresh" (--set checkpoint.on_invalid=fresh).'
            ) from None

    def record_fetched(self, tp: Any, offset: int) -> None:
        """A partition assigned without a committed offset starts at its first record: its
        empty manifest is written then."""
        if tp in self.initial_manifest_due:
            self.initial_manifest_due.discard(tp)
            self._write_initial_manifest(tp, offset)

    def forget(self, partitions: set[Any], streams: set[str]) -> None:
        """`partitions` are revoked and `streams` (theirs) dropped from the shards."""
        self.snapshot_due = None  # may hold states of the lost partitions' streams
        for tp in partitions:
            self.manifests.pop(tp, None)
            self.covered.pop(tp, None)
            self.replay_below.pop(tp, None)
            self.initial_manifest_due.discard(tp)
        for stream_id in streams:
            self.stream_position.pop(stream_id, None)
            self.persisted.pop(stream_id, None)
            self.on_disk.pop(stream_id, None)
            self.last_seen.pop(stream_id, None)

    def _write_initial_manifest(self, tp: Any, offset: int) -> None:
        """Empty state at `offset`: what this run starts the partition from."""
        assert self.store is not None
        manifest = PartitionManifest(tp.topic, tp.partition, offset)
        self.store.write_manifest(manifest)
        self.manifests[tp] = manifest
        self.covered[tp] = offset

    # ------------------------------------------------------------------ batches
    def replay_limit(self, tp: Any, offset: int) -> int | None:
        """The committed offset while the record at `offset` is replayed only to rebuild
        tracker state (its output exists already); None from the first record past it on."""
        below = self.replay_below.get(tp)
        if below is not None and offset < below:
            return below
        self.replay_below.pop(tp, None)
        return None

    def frame_submitted(self, tp: Any, stream_id: str, offset: int, at: float) -> None:
        """A frame of `stream_id` goes to its shard (at monotonic time `at`)."""
        self.stream_position[stream_id] = (tp, offset)
        self.last_seen[stream_id] = at

    def take_restore(self, stream_id: str) -> bool:
        """True once for a stream whose state is only in storage: this frame tells its shard
        to load it."""
        return self.on_disk.pop(stream_id, None) is not None

    def states_after_batch(self, batch_id: int) -> ShardStates | None:
        """Every `checkpoint.every_batches`-th batch, the shards' states right after it.

        Call it once the batch's shard calls are sent: actor calls run in submission order.
        """
        if self.store is None or batch_id % self.config.checkpoint.every_batches != 0:
            return None
        return self._capture()

    def batch_finished(
        self, seen_last: dict[Any, int], owned: set[Any], states: ShardStates | None
    ) -> None:
        """A batch's output is written: its partitions are covered up to its last records
        (`seen_last`, replayed ones included), and its `states` (None when it has none or lost
        a partition in flight) become the snapshot written at the next commit."""
        for tp, last in seen_last.items():
            if tp in owned and tp in self.covered:
                self.covered[tp] = max(self.covered[tp], last + 1)
        if states is not None:
            self.snapshot_due = _Snapshot(
                states=states,
                covered={tp: o for tp, o in self.covered.items() if tp in owned},
            )

    # ------------------------------------------------------------------ snapshots
    def snapshot_now(self, owned: set[Any]) -> None:
        """Snapshot every shard; only with no batch in flight (a graceful stop or a rebalance
        keeps the last state)."""
        if self.store is None:
            return
        self.snapshot_due = _Snapshot(
            states=self._capture(),
            covered={tp: o for tp, o in self.covered.items() if tp in owned},
        )

    def _capture(self) -> ShardStates:
        """Every shard's state once the calls already sent to it have run, limited to the
        streams that moved since their last checkpoint file (the others would not be written,
        and copying every idle stream's galleries at each snapshot costs a fleet dearly)."""
        moved: list[dict[str, tuple[Any, int]]] = [{} for _ in self.pool.shards]
        for stream_id, position in self.stream_position.items():
            if self.persisted.get(stream_id) != position:
                moved[shard_of(stream_id, len(self.pool.shards))][stream_id] = position
        refs = [
            shard.state_dict.remote(incarnation, list(moved[k]))
            for k, (shard, incarnation) in enumerate(
                zip(self.pool.shards, self.pool.shard_incarnations, strict=True)
            )
        ]
        return ShardStates(refs, moved)

    def write_snapshot(self) -> None:
        """Persist the latest snapshot; call it once every batch it covers is committed.

        Stream files first (only streams that changed since their last file), then each
        partition's manifest, so a manifest never names state it does not have.
        """
        snapshot, self.snapshot_due = self.snapshot_due, None
        if snapshot is None or self.store is None:
            return
        states = snapshot.states
        # Each shard writes its own streams' files from its snapshot (the states never travel
        # through the driver); only streams that moved since their last file are written.
        # A stream may have been written since the capture, by an earlier snapshot.
        due = [
            {
                stream_id: (tp.topic, tp.partition, offset)
                for stream_id, (tp, offset) in moved.items()
                if self.persisted.get(stream_id) != (tp, offset)
                and tp in snapshot.covered
                and tp in self.manifests
            }
            for moved in states.moved
        ]
        # Every shard gets the call, with or without streams to write: a shard that died
        # after the batch (its snapshot failed) raises here, even one that holds no stream
        # now; the offsets are committed and `StreamJob.recover_actors` rebuilds from the
        # last checkpoint.
        calls = [
            shard.write_checkpoints.remote(state_ref, shard_due)
            for shard, state_ref, shard_due in zip(
                self.pool.shards, states.state_refs, due, strict=True
            )
        ]
        written: dict[Any, dict[str, str]] = collections.defaultdict(dict)
        for moved, names in zip(states.moved, self._get(calls), strict=True):
            for stream_id, name in names.items():
                tp, offset = moved[stream_id]
                written[tp][stream_id] = name
                self.persisted[stream_id] = (tp, offset)
        for tp, covered in snapshot.covered.items():
            manifest = self.manifests.get(tp)
            if manifest is None or (covered == manifest.offset and not written[tp]):
                continue
            manifest.streams.update(written[tp])
            manifest.offset = covered
            self.store.write_manifest(manifest)
            self.summary.checkpoints += 1

    # ------------------------------------------------------------------ idle streams
    def evict_idle(self, owned: set[Any], all_committed: bool) -> None:
        """Drop streams idle for `checkpoint.evict_idle_s` from their shards' memory.

        Only a stream whose latest state is in its checkpoint file leaves (nothing of it is in
        flight then); its next frame carries `restore` and the shard loads the file again.
        `all_committed`: no batch in flight and none waiting for its commit, so idle streams'
        last states can be snapshot and written right away.
        """
        limit = self.config.checkpoint.evict_idle_s
        now = time.monotonic()
        if not limit or self.store is None or now < self.evict_check_at:
            return
        self.evict_check_at = now + min(limit / 4, 5.0)
        idle = [sid for sid, seen in self.last_seen.items() if now - seen >= limit]
        unsaved = [sid for sid in idle if self.persisted.get(sid) != self.stream_position[sid]]
        if unsaved and all_committed:
            self.snapshot_now(owned)  # everything is committed: persist their last state now
            self.write_snapshot()
        evicted: list[str] = []
        for stream_id in idle:
            position = self.stream_position[stream_id]
            if self.persisted.get(stream_id) != position:
                continue  # its last frames are not in a file yet: try again later
            evicted.append(stream_id)
            self.on_disk[stream_id] = position[0]
            del self.last_seen[stream_id]
        if evicted:
            self.summary.streams_evicted += drop_streams(self.pool.shards, evicted)
            logger.info("evicted %d idle stream(s)", len(evicted))
