"""Driver logic without Kafka or Ray: partition assignment, leftover cleanup, re-fetch dedupe."""

from __future__ import annotations

from pathlib import Path

from driver_fakes import (
    P0,
    P1,
    FakeConsumer,
    Record,
    make_job,
    write_result_file,
)

from ray_deepsort.pipeline import batch_file_stem
from ray_deepsort.stream.job import _Batch


def test_assignment_removes_uncommitted_files_only(tmp_path: Path) -> None:
    consumer = FakeConsumer({P0: 10, P1: None})
    job = make_job(tmp_path, consumer)
    for partition, offset in [(0, 5), (0, 10), (0, 20), (1, 0)]:
        write_result_file(job.writer, partition, offset)
    consumer.assigned = {P0, P1}
    job._handle_assignment([])
    stems = {job.writer.stem_of(p) for p in job.writer.files()}
    assert stems == {batch_file_stem("frames", 0, 5)}
    assert job.summary.leftovers_removed == 6  # tracks + frames file of each removed batch
    assert job.owned == {P0, P1} and job.first_assignment_at is not None


def test_without_committed_offset_only_files_the_run_rewrites_are_removed(tmp_path: Path) -> None:
    """The group lost its offsets (Kafka's offsets.retention expired while the job was stopped)
    and retention already deleted records 0-49: their output must stay, the rest is rewritten."""
    consumer = FakeConsumer({P0: None})
    consumer.start_positions[P0] = 50
    job = make_job(tmp_path, consumer)
    for offset in (10, 30, 50, 70):
        write_result_file(job.writer, 0, offset)
    consumer.assigned = {P0}
    job._handle_assignment([])
    stems = {job.writer.stem_of(p) for p in job.writer.files()}
    assert stems == {batch_file_stem("frames", 0, 10), batch_file_stem("frames", 0, 30)}
    assert job.summary.leftovers_removed == 4


def test_refetched_and_foreign_records_are_dropped(tmp_path: Path) -> None:
    consumer = FakeConsumer({})
    job = make_job(tmp_path, consumer)
    consumer.assigned = {P0}
    first = [Record("frames", 0, o, b"k", b"v") for o in (0, 1, 2)]
    assert job._handle_assignment(first) == first
    again = [Record("frames", 0, o, b"k", b"v") for o in (1, 2, 3)]
    foreign = [Record("frames", 1, 0, b"k", b"v")]
    assert [r.offset for r in job._handle_assignment(again + foreign)] == [3]


def test_lost_partition_revokes_in_flight_results_and_streams(tmp_path: Path) -> None:
    consumer = FakeConsumer({})
    job = make_job(tmp_path, consumer)
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
    first, second = job.pool.shards  # each stream goes to the shard that owns it only
    assert first.dropped == [["cam9"]] and second.dropped == [["cam7"]]
    consumer.assigned = {P0, P1}  # it comes back: replayed from its committed offset
    job._handle_assignment([])
    assert batch.revoked == {P1} and job.owned == {P0, P1}
