"""Tracker state checkpoints: a stopped, crashed and restarted job keeps its track ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from stream_support import Topics, job_config, parquet_tracker_ids, reference_tracker_ids

from ray_deepsort.pipeline.state_store import CheckpointStore
from ray_deepsort.stream.broker import LocalBroker
from ray_deepsort.stream.job import SimulatedCrash, StreamJob
from ray_deepsort.stream.publish import FramePublisher, publish, synthetic_frames

pytestmark = pytest.mark.integration

# Two streams share partition 0, so restoring must handle streams at different offsets.
PARTITIONS = {"cam0": 0, "cam1": 1, "cam2": 2, "cam3": 0}


def _tracker_ids(output: Path) -> dict[tuple[str, int], dict[int, int]]:
    """(stream, frame) -> {detection index: tracker id}; asserts each frame is written once."""
    counts, boxes = parquet_tracker_ids(output)
    assert set(counts.values()) == {1}, "a frame is in the Parquet output twice"
    return {key: boxes.get(key, {}) for key in counts}


def test_restarts_keep_track_ids(
    broker: LocalBroker,
    ray_local: None,
    topics: Topics,
    tmp_path: Path,
) -> None:
    """Graceful stop, crash after sinks but before commit (checkpoint behind the commit: replay),
    restart with another shard count: every frame's ids equal one uninterrupted tracker's."""
    _, generator = synthetic_frames(
        4,
        45,
        objects=10,
        width=480,
        height=270,
        start_time=1_732_500_000.0,
        image_format="none",
        embeddings="identity",
    )
    frames = list(generator)
    with FramePublisher(broker.bootstrap_servers, topics.frames) as publisher:
        publish(frames, publisher, partitions=PARTITIONS)
    output = tmp_path / "out"
    every = "checkpoint.every_batches=3"

    first = StreamJob(job_config(broker, topics, output, every, "job.stop_after_batches=4")).run()
    assert 0 < first.frames < len(frames) and first.checkpoints > 0
    first_keys = set(_tracker_ids(output))

    crashing = StreamJob(job_config(broker, topics, output, every, "job.fail_after_batches=5"))
    with pytest.raises(SimulatedCrash):
        crashing.run()
    # One shard instead of two: restored streams land on whichever actor owns them now.
    last = StreamJob(job_config(broker, topics, output, every, "actors.num_shards=1")).run()
    assert sum(last.committed.values()) == len(frames)

    # Partitions with committed frames were restored (how the polls interleave partitions
    # varies); the last restart replayed committed frames to rebuild state because its checkpoint
    # (every 3rd batch) was behind the commit (4 batches).
    assert crashing.summary.streams_restored + last.streams_restored >= 4
    assert crashing.summary.records_replayed + last.records_replayed > 0

    expected = reference_tracker_ids(frames, job_config(broker, topics, output).tracker.params())
    boxes = _tracker_ids(output)
    assert set(boxes) == set(expected)
    for key, tracker_id in expected.items():
        confirmed = {int(i): int(t) for i, t in enumerate(tracker_id) if t >= 0}
        assert boxes[key] == confirmed, key
    # Without the checkpoint a resumed stream would start over: fresh trackers from the first
    # frame after the first run give other ids than the uninterrupted run.
    resumed = [f for f in frames if (f.stream_id, f.frame_index) not in first_keys]
    restarted_streams = {stream for stream, _ in first_keys}
    assert restarted_streams
    fresh = reference_tracker_ids(
        [f for f in resumed if f.stream_id in restarted_streams],
        job_config(broker, topics, output).tracker.params(),
    )
    assert any(not np.array_equal(fresh[key], expected[key]) for key in fresh)

    store = CheckpointStore(output)
    for partition in set(PARTITIONS.values()):
        manifest = store.read_manifest(topics.frames, partition)
        assert manifest is not None
        assert manifest.offset == last.committed[f"{topics.frames}:{partition}"]
        streams = {s for s, p in PARTITIONS.items() if p == partition}
        assert set(manifest.streams) == streams
        for stream in streams:
            checkpoint = store.read_stream(topics.frames, partition, stream)
            assert checkpoint.offset < manifest.offset
            assert int(checkpoint.state["last_frame_index"]) == 44
            assert int(checkpoint.state["next_track_id"]) > 1
