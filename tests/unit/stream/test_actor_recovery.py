"""Recovering from a dead tracker shard, without Kafka or Ray: what the driver drops, commits,
seeks and rebuilds, and the shard's refusal to track on after a restart."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from driver_fakes import (
    P0,
    P1,
    P2,
    FakeConsumer,
    frame_record,
    make_job,
)

from ray_deepsort.pipeline import SourcePosition
from ray_deepsort.pipeline.actors import ShardRestartedError, TrackerShardActor
from ray_deepsort.pipeline.types import TrackRequest
from ray_deepsort.stream.config import load_config
from ray_deepsort.stream.worker import MAX_STALLED_RECOVERIES, PartitionWorker


def _submit(job: PartitionWorker, records: list[tuple[int, int, str]]) -> None:
    """A batch of (partition, offset, stream) frames, polled and sent to the shards."""
    polled = [frame_record(partition, offset, stream) for partition, offset, stream in records]
    job.batches.submit(job.partitions.accept(polled), time.monotonic())


def test_recovery_drops_the_window_commits_and_rebuilds_every_partition(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    consumer = FakeConsumer({P0: 10})
    job = make_job(tmp_path, consumer, "checkpoint.enabled=false")
    consumer.assigned = {P0, P1}
    _submit(job, [(0, 10, "cam0"), (0, 11, "cam0"), (0, 12, "cam3"), (0, 13, "cam3")])
    assert job.batches.pop_ready(block=True) is not None  # finished...
    job.ledger.batch_done({P0: 13, P2: 4}, {P0, P2})  # ...not committed yet (commit interval)
    _submit(job, [(0, 14, "cam0"), (1, 3, "cam1")])  # in flight
    _submit(job, [(1, 4, "cam1"), (0, 15, "cam3")])
    assert (job.batches.submitted, job.batches.records_seen) == (3, 8)

    with caplog.at_level(logging.WARNING, logger="ray_deepsort.stream"):
        job.recover_actors(ShardRestartedError("tracker shard 0 restarted"))

    assert not job.inflight and (job.batches.submitted, job.batches.records_seen) == (1, 4)
    # P2 was given away meanwhile (a rebalance): never commit for its new owner.
    assert consumer.committed_offsets == {P0: 14} and not job.ledger.pending
    # Back to the commit, or (never committed, auto_offset_reset=earliest) to the beginning.
    assert dict(consumer.seeks) == {P0: 14, P1: "beginning"}
    # One call per owning shard (all three streams are shard 0's).
    assert [shard.dropped for shard in job.pool.shards] == [[["cam0", "cam1", "cam3"]], []]
    assert job.pool.shard_incarnations == ["a1", "b0"]
    assert job.owned == {P0, P1} and not job.ledger.streams
    assert job.summary.actor_recoveries == 1
    assert "dropping 2 batch(es) in flight" in caplog.text
    assert "checkpoints are off" in caplog.text and "fresh trackers" in caplog.text


def test_latest_without_commit_goes_back_to_the_first_dropped_record(tmp_path: Path) -> None:
    consumer = FakeConsumer({})
    job = make_job(tmp_path, consumer, 'kafka.auto_offset_reset="latest"')
    consumer.assigned = {P2}
    _submit(job, [(2, 40, "cam0"), (2, 41, "cam0")])
    job.recover_actors(ShardRestartedError("restarted"))
    assert dict(consumer.seeks) == {P2: 40}


def test_recoveries_without_progress_give_up(tmp_path: Path) -> None:
    job = make_job(tmp_path, FakeConsumer({}))
    for _ in range(MAX_STALLED_RECOVERIES):
        job.recover_actors(ShardRestartedError("restarted"))
    job.summary.frames += 1  # progress resets the count
    for _ in range(MAX_STALLED_RECOVERIES):
        job.recover_actors(ShardRestartedError("restarted"))
    with pytest.raises(RuntimeError, match="giving up"):
        job.recover_actors(ShardRestartedError("restarted"))


def test_a_shard_that_dies_in_the_loop_is_recovered_and_its_batch_replayed(
    tmp_path: Path,
) -> None:
    consumer = FakeConsumer({P0: 0})
    job = make_job(
        tmp_path,
        consumer,
        "checkpoint.enabled=false",
        "batch.max_wait_ms=0",
        "job.stop_after_batches=1",
    )
    consumer.assigned = {P0}
    polled = [frame_record(0, offset, "cam0") for offset in range(3)]
    consumer.to_poll = [polled, polled]  # fetched again after the seek back to the commit
    job.pool.shards[0].errors[1] = ShardRestartedError("tracker shard 0 restarted")
    job.run_until_stopped()
    assert job.summary.actor_recoveries == 1 and consumer.seeks == [(P0, 0)]
    assert consumer.commits == [{P0: 3}] and job.summary.frames == 3
    assert job.summary.stop_reason == "stop_after_batches=1"


def test_a_restarted_shard_refuses_calls_meant_for_its_previous_incarnation() -> None:
    params = load_config(None, []).tracker.params()
    shard = TrackerShardActor(params, 0, 1)
    token = shard.ready()
    request = TrackRequest(
        stream_id="cam0",
        frame_index=0,
        timestamp=0.0,
        xyxy=np.array([[10, 10, 50, 90]], np.float32),
        confidence=np.array([0.9], np.float32),
        class_id=np.zeros(1, np.int64),
        position=SourcePosition("frames", 0, 0),
    )
    assert len(shard.process(token, [request]).results) == 1
    state = shard.state_dict(token)
    assert set(state) == {"cam0"}

    restarted = TrackerShardActor(params, 0, 1)  # what Ray builds after the process died
    assert restarted.ready() != token
    with pytest.raises(ShardRestartedError, match="shard 0 restarted"):
        restarted.process(token, [request])
    with pytest.raises(ShardRestartedError):
        restarted.state_dict(token)
    assert restarted.drop_streams(["cam0"]) == 0  # harmless without state
    second = dataclasses.replace(request, frame_index=1)  # the driver adopted the new token
    assert restarted.process(restarted.ready(), [second]).results[0].frame_index == 1
