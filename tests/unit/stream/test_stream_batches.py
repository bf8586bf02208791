"""Batch submission without Kafka or Ray (issue #17, item 3): the decoder's size limit is the
config's `kafka.max_message_bytes`, and what a batch may write once it is finished."""

from __future__ import annotations

import time
from pathlib import Path

from driver_fakes import P0, P1, FakeConsumer, frame_record, make_job

from ray_deepsort.pipeline.types import FrameFailure, ShardOutput, SourcePosition
from ray_deepsort.stream.sink import DeadLetter


def test_the_decoders_size_limit_comes_from_the_config(tmp_path: Path) -> None:
    small = frame_record(0, 0, "cam0")
    large = frame_record(0, 1, "cam000")  # the same frame, 3 bytes longer
    limit = len(small.value) + 1  # far below the default (16 MiB)
    assert len(large.value) > limit
    consumer = FakeConsumer({P0: 0})
    consumer.assigned = {P0}
    job = make_job(tmp_path, consumer, f"kafka.max_message_bytes={limit}")

    batch = job.batches.submit(job.partitions.accept([small, large]), time.monotonic())

    expected = f"too_large: message is {len(large.value)} bytes, limit is {limit}"
    assert [(d.record.offset, d.reason) for d in batch.dead] == [(1, expected)]
    tracked = [r for shard in job.pool.shards for r in shard.requests]
    assert [(r.stream_id, r.position.offset) for r in tracked] == [("cam0", 0)]
    # Both were new records: the batch covers (and commits) offsets 0-1.
    assert (batch.first_offsets, batch.last_offsets) == ({P0: 0}, {P0: 1})


def test_a_finished_batch_writes_only_owned_partitions_and_shard_failures_as_dead_letters(
    tmp_path: Path,
) -> None:
    consumer = FakeConsumer({P0: 0, P1: 0})
    consumer.assigned = {P0, P1}
    job = make_job(tmp_path, consumer)
    records = [frame_record(0, 0, "cam0"), frame_record(0, 1, "cam0"), frame_record(1, 0, "cam1")]
    batch = job.batches.submit(job.partitions.accept(records), time.monotonic())
    popped = job.batches.pop_ready(block=True)
    assert popped is not None and popped[0] is batch and not job.inflight
    outputs = popped[1]
    failed = SourcePosition("frames", 0, 1)
    outputs.append(ShardOutput(failures=[FrameFailure("cam0", 1, failed, "bad_image: no")]))
    results = [r for output in outputs for r in output.results if r.position != failed]
    outputs = [ShardOutput(results=results), outputs[-1]]

    written, dead = batch.output(outputs, {P0})  # frames[1] was revoked meanwhile
    assert [(r.position.partition, r.position.offset) for r in written] == [(0, 0)]
    assert dead == [DeadLetter(records[1], "bad_image: no")]
