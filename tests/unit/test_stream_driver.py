"""Driver logic without Kafka or Ray: partition assignment, leftover cleanup, re-fetch dedupe."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path
from typing import Any

import numpy as np
from kafka.structs import TopicPartition

from ray_deepsort.pipeline import FrameResult, ParquetResultWriter, SourcePosition, batch_file_stem
from ray_deepsort.stream.config import load_config
from ray_deepsort.stream.job import StreamJob, _Batch

Record = namedtuple("Record", "topic partition offset key value")
P0, P1 = TopicPartition("frames", 0), TopicPartition("frames", 1)


class FakeConsumer:
    def __init__(self, committed: dict[Any, int | None]) -> None:
        self.assigned: set[Any] = set()
        self.committed_offsets = committed

    def assignment(self) -> set[Any]:
        return set(self.assigned)

    def committed(self, tp: Any) -> int | None:
        return self.committed_offsets.get(tp)


class FakeShard:
    def __init__(self) -> None:
        self.dropped: list[list[str]] = []
        self.drop_streams = self

    def remote(self, stream_ids: list[str]) -> None:
        self.dropped.append(stream_ids)


class FakePool:
    def __init__(self) -> None:
        self.shards = [FakeShard(), FakeShard()]


def _job(tmp_path: Path, consumer: FakeConsumer) -> StreamJob:
    job = StreamJob(load_config(None, [f'output.path="{tmp_path}"']))
    job._init_state()
    job.consumer = consumer
    job.writer = ParquetResultWriter(tmp_path)
    job.pool = FakePool()  # type: ignore[assignment]
    return job


def _write(writer: ParquetResultWriter, partition: int, offset: int) -> None:
    result = FrameResult(
        "cam",
        offset,
        1_732_500_000.0,
        np.array([[0, 0, 5, 5]], np.float32),
        np.ones(1, np.float32),
        np.zeros(1, np.int64),
        np.array([1]),
        SourcePosition("frames", partition, offset),
    )
    writer.write(batch_file_stem("frames", partition, offset), [result])


def test_assignment_removes_uncommitted_files_only(tmp_path: Path) -> None:
    consumer = FakeConsumer({P0: 10, P1: None})
    job = _job(tmp_path, consumer)
    for partition, offset in [(0, 5), (0, 10), (0, 20), (1, 0)]:
        _write(job.writer, partition, offset)
    consumer.assigned = {P0, P1}
    job._handle_assignment([])
    stems = {job.writer.stem_of(p) for p in job.writer.files()}
    assert stems == {batch_file_stem("frames", 0, 5)}
    assert job.summary.leftovers_removed == 6  # tracks + frames file of each removed batch
    assert job.owned == {P0, P1} and job.first_assignment_at is not None


def test_refetched_and_foreign_records_are_dropped(tmp_path: Path) -> None:
    consumer = FakeConsumer({})
    job = _job(tmp_path, consumer)
    consumer.assigned = {P0}
    first = [Record("frames", 0, o, b"k", b"v") for o in (0, 1, 2)]
    assert job._handle_assignment(first) == first
    again = [Record("frames", 0, o, b"k", b"v") for o in (1, 2, 3)]
    foreign = [Record("frames", 1, 0, b"k", b"v")]
    assert [r.offset for r in job._handle_assignment(again + foreign)] == [3]


def test_lost_partition_revokes_in_flight_results_and_streams(tmp_path: Path) -> None:
    consumer = FakeConsumer({})
    job = _job(tmp_path, consumer)
    consumer.assigned = {P0, P1}
    job._handle_assignment([])
    job.partition_streams[P1].update({"cam7", "cam9"})
    job.pending_commit = {P0: 4, P1: 9}
    batch = _Batch(1, 0.0, {}, [], [], {P1: 0}, {P1: 8}, 0.0)
    job.inflight.append(batch)
    consumer.assigned = {P0}
    job._handle_assignment([])
    assert batch.revoked == {P1}
    assert job.pending_commit == {P0: 4}
    assert all(shard.dropped == [["cam7", "cam9"]] for shard in job.pool.shards)
    consumer.assigned = {P0, P1}  # it comes back: replayed from its committed offset
    job._handle_assignment([])
    assert batch.revoked == {P1} and job.owned == {P0, P1}
