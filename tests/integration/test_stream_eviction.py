"""Idle streams leave memory and come back with their tracks (checkpoint.evict_idle_s)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from stream_support import (
    Topics,
    confirmed_ids,
    job_config,
    parquet_tracker_ids,
    reference_tracker_ids,
)

from ray_deepsort.stream.broker import LocalBroker
from ray_deepsort.stream.job import StreamJob
from ray_deepsort.stream.publish import FramePublisher, publish, synthetic_frames

pytestmark = pytest.mark.integration

# cam0 and cam3 share partition 0; cam4 hashes to the second tracker shard.
PARTITIONS = {"cam0": 0, "cam1": 1, "cam2": 2, "cam3": 0, "cam4": 1}
EVICT_AFTER_S = 0.5


def test_idle_streams_are_evicted_and_restored_with_their_ids(
    broker: LocalBroker, ray_local: None, topics: Topics, tmp_path: Path
) -> None:
    """Every stream sends 30 frames, falls silent long enough to be evicted from its shard,
    then sends 30 more: the second half continues the same tracks (ids equal to one
    uninterrupted in-process tracker per stream) and every frame is written once."""
    _, generator = synthetic_frames(
        len(PARTITIONS), 60, objects=8, width=480, height=270, start_time=1_732_500_000.0,
        image_format="none", embeddings="identity",
    )  # fmt: skip
    frames = list(generator)
    first = [f for f in frames if f.frame_index < 30]
    second = [f for f in frames if f.frame_index >= 30]
    config = job_config(
        broker,
        topics,
        tmp_path / "out",
        f"checkpoint.evict_idle_s={EVICT_AFTER_S}",
        f"job.expected_frames={len(frames)}",
        "job.max_idle_s=30",
    )
    job = StreamJob(config)
    evicted_in_pause: list[int] = []
    errors: list[BaseException] = []

    def feed() -> None:
        try:
            with FramePublisher(broker.bootstrap_servers, topics.frames) as publisher:
                publish(first, publisher, partitions=PARTITIONS)
                deadline = time.monotonic() + 60
                while job.summary.frames < len(first) and time.monotonic() < deadline:
                    time.sleep(0.05)
                while job.summary.streams_evicted < len(PARTITIONS) and time.monotonic() < deadline:
                    time.sleep(0.05)
                evicted_in_pause.append(job.summary.streams_evicted)
                publish(second, publisher, partitions=PARTITIONS)
        except BaseException as error:  # reported by the test
            errors.append(error)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    summary = job.run()
    feeder.join(timeout=30)
    assert not errors, errors
    assert evicted_in_pause == [len(PARTITIONS)]  # every stream left memory during the pause
    assert summary.frames == len(frames) and summary.dead_letters == 0

    expected = reference_tracker_ids(frames, config.tracker.params())
    counts, boxes = parquet_tracker_ids(tmp_path / "out")
    assert set(counts) == set(expected) and set(counts.values()) == {1}
    for key, tracker_id in expected.items():
        assert boxes.get(key, {}) == confirmed_ids(tracker_id), key
    # The streams really had tracks to lose: ids confirmed before the pause continue after it.
    before = {t for key, ids in boxes.items() if key[1] == 29 for t in ids.values()}
    after = {t for key, ids in boxes.items() if key[1] == 30 for t in ids.values()}
    assert before & after
