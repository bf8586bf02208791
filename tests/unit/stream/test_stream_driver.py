"""Driver logic without Kafka or Ray: partition assignment, leftover cleanup, re-fetch dedupe,
a fatal checkpoint error."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from driver_fakes import (
    P0,
    P1,
    FakeConsumer,
    Record,
    frame_record,
    make_job,
    write_result_file,
)

from ray_deepsort.pipeline import batch_file_stem


def test_assignment_removes_uncommitted_files_only(tmp_path: Path) -> None:
    consumer = FakeConsumer({P0: 10, P1: None})
    job = make_job(tmp_path, consumer)
    writer = job.sink.writer
    for partition, offset in [(0, 5), (0, 10), (0, 20), (1, 0)]:
        write_result_file(writer, partition, offset)
    consumer.assigned = {P0, P1}
    job.partitions.accept([])
    stems = {writer.stem_of(p) for p in writer.files()}
    assert stems == {batch_file_stem("frames", 0, 5)}
    assert job.summary.leftovers_removed == 6  # tracks + frames file of each removed batch
    assert job.owned == {P0, P1} and job.idle.assigned_at is not None


def test_without_committed_offset_only_files_the_run_rewrites_are_removed(tmp_path: Path) -> None:
    """The group lost its offsets (Kafka's offsets.retention expired while the job was stopped)
    and retention already deleted records 0-49: their output must stay, the rest is rewritten."""
    consumer = FakeConsumer({P0: None})
    consumer.start_positions[P0] = 50
    job = make_job(tmp_path, consumer)
    writer = job.sink.writer
    for offset in (10, 30, 50, 70):
        write_result_file(writer, 0, offset)
    consumer.assigned = {P0}
    job.partitions.accept([])
    stems = {writer.stem_of(p) for p in writer.files()}
    assert stems == {batch_file_stem("frames", 0, 10), batch_file_stem("frames", 0, 30)}
    assert job.summary.leftovers_removed == 4


def test_a_partition_assigned_with_records_in_the_same_poll_starts_at_the_first_of_them(
    tmp_path: Path,
) -> None:
    """Without a committed offset, the consumer's position is already past the records the
    assigning poll returned: the run starts at the first of them (its files are rewritten, and
    `job.expected_frames` counts them)."""
    consumer = FakeConsumer({P0: None})
    consumer.start_positions[P0] = 3  # past the three records fetched below
    job = make_job(tmp_path, consumer)
    writer = job.sink.writer
    write_result_file(writer, 0, 0)
    consumer.assigned = {P0}
    kept = job.partitions.accept([frame_record(0, offset) for offset in range(3)])
    assert [record.offset for record in kept] == [0, 1, 2]
    assert job.summary.started == {"frames:0": 0}
    assert not writer.files()  # offset 0 is rewritten by this run


def test_refetched_and_foreign_records_are_dropped(tmp_path: Path) -> None:
    consumer = FakeConsumer({})
    job = make_job(tmp_path, consumer)
    consumer.assigned = {P0}
    first = [Record("frames", 0, o, b"k", b"v") for o in (0, 1, 2)]
    assert job.partitions.accept(first) == first
    again = [Record("frames", 0, o, b"k", b"v") for o in (1, 2, 3)]
    foreign = [Record("frames", 1, 0, b"k", b"v")]
    assert [r.offset for r in job.partitions.accept(again + foreign)] == [3]


def test_lost_partition_revokes_in_flight_results_and_streams(tmp_path: Path) -> None:
    consumer = FakeConsumer({})
    job = make_job(tmp_path, consumer)
    consumer.assigned = {P0, P1}
    records = [frame_record(0, 3, "cam0"), frame_record(1, 7, "cam7"), frame_record(1, 8, "cam9")]
    batch = job.batches.submit(job.partitions.accept(records), time.monotonic())
    job.ledger.batch_done({P0: 3, P1: 8}, {P0, P1})  # an earlier batch, not committed yet
    assert job.ledger.pending == {P0: 4, P1: 9}
    consumer.assigned = {P0}
    job.partitions.accept([])
    assert batch.revoked == {P1}
    assert job.ledger.pending == {P0: 4}
    first, second = job.pool.shards  # each stream goes to the shard that owns it only
    assert first.dropped == [["cam9"]] and second.dropped == [["cam7"]]
    consumer.assigned = {P0, P1}  # it comes back: replayed from its committed offset
    job.partitions.accept([])
    assert batch.revoked == {P1} and job.owned == {P0, P1}


def test_unrestorable_checkpoint_stops_the_job_without_committing_the_failed_batch(
    tmp_path: Path,
) -> None:
    """A shard's `CheckpointRestoreError` (wrapped by Ray) is fatal, not an actor failure: no
    recovery or retry; finished batches are committed, the failed batch and later ones are not."""
    from ray.exceptions import RayTaskError

    from ray_deepsort.pipeline.tracker_shard import CheckpointRestoreError

    consumer = FakeConsumer({P0: 0})
    # No commit of its own before the stop; one poll per batch.
    job = make_job(tmp_path, consumer, "job.commit_interval_s=300", "batch.max_wait_ms=0")
    consumer.assigned = {P0}
    # A finished batch (offsets 0-4), then the batch that needs the file (offsets 5-9).
    consumer.to_poll = [
        [frame_record(0, o, "cam") for o in range(5)],
        [frame_record(0, o, "cam") for o in range(5, 10)],
    ]
    cause = CheckpointRestoreError("checkpoint of stream 'cam' (frames[0]) cannot be restored")
    failure = RayTaskError("TrackerShardActor.process", "tb", cause).as_instanceof_cause()
    for shard in job.pool.shards:
        shard.errors[5] = failure
    with pytest.raises(CheckpointRestoreError, match=r"stream 'cam' \(frames\[0\]\)") as caught:
        job.run_until_stopped()
    assert type(caught.value) is CheckpointRestoreError  # the message, not Ray's traceback
    assert consumer.polls == 2 and not consumer.to_poll  # the loop ran once: no retry
    assert job.pool.restarts == 0 and job.summary.actor_recoveries == 0
    assert consumer.commits == [{P0: 5}] and not job.inflight
    assert job.summary.stop_reason == "checkpoint cannot be restored"
