"""The driver's checkpoint decisions on partition assignment, without Kafka or Ray."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from driver_fakes import (
    P0,
    P1,
    P2,
    FakeConsumer,
    Record,
    frame_record,
    make_job,
)

from ray_deepsort.pipeline.state_store import CheckpointStore, PartitionManifest


def test_checkpoint_behind_the_commit_replays_without_output(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, fsync=False)
    store.write_manifest(PartitionManifest("frames", 0, 7))  # behind the commit (12)
    store.write_manifest(PartitionManifest("frames", 1, 30))  # ahead of the commit: reset by hand
    store.write_manifest(PartitionManifest("frames", 2, 4))
    consumer = FakeConsumer({P0: 12, P1: 20, P2: 4})
    job = make_job(tmp_path, consumer)
    consumer.assigned = {P0, P1, P2}

    fetched = [Record("frames", 0, 12, b"cam0", b""), Record("frames", 2, 4, b"cam2", b"")]
    kept = job.partitions.accept(fetched)

    assert consumer.seeks == [(P0, 7)]
    assert job.checkpoint.replay_below == {P0: 12} and job.ledger.next_offset[P0] == 7
    assert [r.partition for r in kept] == [2]  # P0's record comes again after the seek
    assert job.checkpoint.covered == {P0: 7, P1: 20, P2: 4}
    fresh = store.read_manifest("frames", 1)
    assert fresh is not None and (fresh.offset, fresh.streams) == (20, {})


def test_partition_without_commit_gets_its_manifest_at_the_first_record(tmp_path: Path) -> None:
    consumer = FakeConsumer({P0: None})
    job = make_job(tmp_path, consumer)
    consumer.assigned = {P0}
    job.partitions.accept([])
    store = CheckpointStore(tmp_path)
    assert store.read_manifest("frames", 0) is None
    job.partitions.accept([Record("frames", 0, 3, b"cam0", b"")])
    manifest = store.read_manifest("frames", 0)
    assert manifest is not None and manifest.offset == 3 and job.checkpoint.covered == {P0: 3}


def test_disabled_checkpoints_write_nothing(tmp_path: Path) -> None:
    consumer = FakeConsumer({P0: 5})
    job = make_job(tmp_path, consumer, "checkpoint.enabled=false")
    consumer.assigned = {P0}
    job.partitions.accept([Record("frames", 0, 5, b"cam0", b"")])
    assert not job.checkpoint.enabled and not (tmp_path / "_checkpoints").exists()


def test_a_replaying_batch_dropped_at_a_revoke_rebuilds_its_partition(tmp_path: Path) -> None:
    """A batch that only replays committed records writes nothing, yet its frames moved the
    shard's state: dropped at a revoke, its partition must be rebuilt, not resumed as kept."""
    CheckpointStore(tmp_path, fsync=False).write_manifest(PartitionManifest("frames", 0, 7))
    consumer = FakeConsumer({P0: 12})
    job = make_job(tmp_path, consumer)
    consumer.assigned = {P0}
    job.partitions.accept([])  # restore: replay 7..11 without output
    records = job.partitions.accept([frame_record(0, o) for o in (7, 8)])
    batch = job.batches.submit(records, time.monotonic())
    assert batch.first_offsets == {}  # replayed only: no new record, no file
    asyncio.run(consumer.listener.on_partitions_revoked({P0}))
    asyncio.run(consumer.listener.on_partitions_assigned({P0}))
    assert job.summary.batches_dropped == 1
    job.partitions.accept([])
    assert [shard.dropped for shard in job.pool.shards] == [[["cam0"]], []]
