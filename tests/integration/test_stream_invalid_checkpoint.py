"""A stream checkpoint that fails validation, through the real job: `checkpoint.on_invalid`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from stream_support import (
    Topics,
    confirmed_ids,
    job_config,
    parquet_tracker_ids,
    reference_tracker_ids,
)

from ray_deepsort.pipeline.state_store import CheckpointStore, StreamCheckpoint
from ray_deepsort.pipeline.tracker_shard import CheckpointRestoreError
from ray_deepsort.stream.broker import LocalBroker
from ray_deepsort.stream.job import StreamJob
from ray_deepsort.stream.publish import FramePublisher, publish, synthetic_frames

pytestmark = pytest.mark.integration

# One stream per partition: a partition's offsets are its stream's frame indices.
PARTITIONS = {"cam0": 0, "cam1": 1, "cam2": 2}
FRAMES = 40


def test_invalid_checkpoint_fails_the_job_or_starts_the_stream_fresh(
    broker: LocalBroker,
    ray_local: None,
    topics: Topics,
    tmp_path: Path,
) -> None:
    """Stop after a few batches, put NaN into one stream's checkpoint (the file still reads),
    rerun: "fail" stops the job naming the file and commits nothing past the output written;
    a rerun with on_invalid="fresh" finishes with every frame written exactly once."""
    _, generator = synthetic_frames(
        len(PARTITIONS),
        FRAMES,
        objects=8,
        width=480,
        height=270,
        start_time=1_732_600_000.0,
        image_format="none",
        embeddings="identity",
    )
    frames = list(generator)
    with FramePublisher(broker.bootstrap_servers, topics.frames) as publisher:
        publish(frames, publisher, partitions=PARTITIONS)
    output = tmp_path / "out"

    first = StreamJob(job_config(broker, topics, output, "job.stop_after_batches=3")).run()
    assert 0 < first.frames < len(frames) and first.checkpoints > 0

    # A stream with a checkpoint and frames still to come (its next frame restores it).
    store = CheckpointStore(output)
    victim = None
    for stream, partition in PARTITIONS.items():
        manifest = store.read_manifest(topics.frames, partition)
        if manifest is not None and stream in manifest.streams and manifest.offset < FRAMES:
            checkpoint = store.read_stream(topics.frames, partition, stream)
            if len(checkpoint.state["mean"]):
                victim = (stream, partition, checkpoint)
                break
    assert victim is not None, "no checkpointed stream with tracks and frames left"
    stream, partition, checkpoint = victim
    state = dict(checkpoint.state)
    state["mean"] = state["mean"].copy()
    state["mean"][0, 0] = np.nan
    store.write_stream(StreamCheckpoint(stream, topics.frames, partition, checkpoint.offset, state))
    path = store.stream_path(topics.frames, partition, stream)

    failing = StreamJob(job_config(broker, topics, output))
    with pytest.raises(CheckpointRestoreError) as caught:
        failing.run()
    message = str(caught.value)
    for part in (path, repr(stream), f"{topics.frames}[{partition}]", "mean", "backup", "fresh"):
        assert part in message, part
    # Nothing lost or twice: the output holds exactly the committed frames.
    committed = {int(k.rsplit(":", 1)[1]): v for k, v in failing.summary.committed.items()}
    assert (
        committed.get(partition, first.committed[f"{topics.frames}:{partition}"])
        == (first.committed[f"{topics.frames}:{partition}"])
    ), "the stream whose checkpoint failed must not move on"
    counts, _ = parquet_tracker_ids(output)
    assert set(counts.values()) == {1}, "a frame is in the Parquet output twice"
    committed_all = {
        p: committed.get(p, first.committed.get(f"{topics.frames}:{p}", 0))
        for p in PARTITIONS.values()
    }
    expected_written = {
        (f.stream_id, f.frame_index)
        for f in frames
        if f.frame_index < committed_all[PARTITIONS[f.stream_id]]
    }
    assert set(counts) == expected_written

    # The shard logs the refused file as an ERROR (in its actor's log) and starts it fresh.
    last = StreamJob(job_config(broker, topics, output, 'checkpoint.on_invalid="fresh"')).run()
    assert sum(last.committed.values()) == len(frames)
    counts, boxes = parquet_tracker_ids(output)
    assert set(counts.values()) == {1}, "a frame is in the Parquet output twice"
    assert set(counts) == {(f.stream_id, f.frame_index) for f in frames}
    # The other streams kept their ids (the refused one has new ones from its restart on).
    expected = reference_tracker_ids(frames, job_config(broker, topics, output).tracker.params())
    for key, tracker_id in expected.items():
        if key[0] != stream:
            assert boxes.get(key, {}) == confirmed_ids(tracker_id), key
