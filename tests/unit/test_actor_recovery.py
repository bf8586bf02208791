"""Recovering from a dead tracker shard, without Kafka or Ray: what the driver drops, commits,
seeks and rebuilds, and the shard's refusal to track on after a restart."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
from driver_fakes import (
    P0,
    P1,
    P2,
    FakeConsumer,
    Record,
    make_job,
)

from ray_deepsort.pipeline import SourcePosition
from ray_deepsort.pipeline.actors import ShardRestartedError, TrackerShardActor
from ray_deepsort.pipeline.types import TrackRequest
from ray_deepsort.stream.config import load_config
from ray_deepsort.stream.job import MAX_STALLED_RECOVERIES, _Batch


def _batch(batch_id: int, records: list[tuple[int, int]], consumed: int) -> _Batch:
    by_position = {("frames", p, o): Record("frames", p, o, b"k", b"v") for p, o in records}
    return _Batch(batch_id, 0.0, by_position, [], [], {}, {}, 0.0, consumed=consumed)


def test_recovery_drops_the_window_commits_and_rebuilds_every_partition(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    consumer = FakeConsumer({P0: 10})
    job = make_job(tmp_path, consumer, "checkpoint.enabled=false")
    consumer.assigned = {P0, P1}
    job._handle_assignment([])
    job.partition_streams[P0].update({"cam0", "cam3"})
    job.partition_streams[P1].add("cam1")
    job.pending_commit = {P0: 14, P2: 5}  # finished, not committed yet (commit interval)
    job.batch_counter, job.records_seen = 7, 30
    job.inflight.extend([_batch(6, [(0, 14), (1, 3)], 2), _batch(7, [(1, 4), (0, 15)], 2)])

    with caplog.at_level(logging.WARNING, logger="ray_deepsort.stream"):
        job._recover_actors(ShardRestartedError("tracker shard 0 restarted"))

    assert not job.inflight and (job.batch_counter, job.records_seen) == (5, 26)
    # P2 was given away meanwhile (a rebalance): never commit for its new owner.
    assert consumer.committed_offsets == {P0: 14} and not job.pending_commit
    # Back to the commit, or (never committed, auto_offset_reset=earliest) to the beginning.
    assert dict(consumer.seeks) == {P0: 14, P1: "beginning"}
    # One call per owning shard (all three streams are shard 0's).
    assert [shard.dropped for shard in job.pool.shards] == [[["cam0", "cam1", "cam3"]], []]
    assert job.pool.shard_incarnations == ["a1", "b0"]
    assert job.owned == {P0, P1} and not job.partition_streams
    assert job.summary.actor_recoveries == 1
    assert "dropping 2 batch(es) in flight" in caplog.text
    assert "checkpoints are off" in caplog.text and "fresh trackers" in caplog.text


def test_latest_without_commit_goes_back_to_the_first_dropped_record(tmp_path: Path) -> None:
    consumer = FakeConsumer({})
    job = make_job(tmp_path, consumer, 'kafka.auto_offset_reset="latest"')
    consumer.assigned = {P2}
    job._handle_assignment([])
    job.inflight.append(_batch(1, [(2, 40), (2, 41)], 2))
    job._recover_actors(ShardRestartedError("restarted"))
    assert dict(consumer.seeks) == {P2: 40}


def test_recoveries_without_progress_give_up(tmp_path: Path) -> None:
    job = make_job(tmp_path, FakeConsumer({}))
    for _ in range(MAX_STALLED_RECOVERIES):
        job._recover_actors(ShardRestartedError("restarted"))
    job.summary.frames += 1  # progress resets the count
    for _ in range(MAX_STALLED_RECOVERIES):
        job._recover_actors(ShardRestartedError("restarted"))
    with pytest.raises(RuntimeError, match="giving up"):
        job._recover_actors(ShardRestartedError("restarted"))


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
