"""Rebalance: a second job replica joins the consumer group mid-run and leaves again; each
replica runs 2 ingest workers, so 4 consumers share 3 partitions while both run.

The replicas hand partitions over with their batches in flight finished and committed and the
tracker state checkpointed, so the output is what one uninterrupted job writes: every frame
once in Parquet and once in the results topic, with the same track ids.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from stream_support import (
    Topics,
    confirmed_ids,
    job_config,
    parquet_tracker_ids,
    read_topic,
    reference_tracker_ids,
    wait_until,
)

from ray_deepsort.stream.broker import LocalBroker
from ray_deepsort.stream.job import StreamJob
from ray_deepsort.stream.publish import FramePublisher, publish, synthetic_frames
from ray_deepsort.stream.wire import FrameMessage, decode_result

pytestmark = pytest.mark.integration

PARTITIONS = {"cam0": 0, "cam1": 1, "cam2": 2, "cam3": 0}
FRAMES = 240  # per stream
GATE = 120  # frames from here on are published once replica B owns partitions
MESSAGES_PER_S = 120.0  # 30 fps per stream: the replicas always have input


def test_replica_joins_and_leaves_without_loss_or_duplicates(
    broker: LocalBroker,
    ray_local: None,
    topics: Topics,
    tmp_path: Path,
) -> None:
    _, generator = synthetic_frames(
        len(PARTITIONS),
        FRAMES,
        objects=8,
        width=480,
        height=270,
        start_time=1_732_500_000.0,
        image_format="none",
    )
    frames = list(generator)
    output = tmp_path / "out"
    # No idle stop: the test stops each replica. No commits of their own within the test: only
    # the handoffs (and the final commit of a stopping replica) commit, so a replica that took
    # over without them would start behind and write results again. Small shards so that both
    # replicas fit on 2 CPUs.
    settings = (
        "job.max_idle_s=0",
        "job.commit_interval_s=300",
        "actors.shard_num_cpus=0.25",
        "actors.ingest_workers=2",
        "batch.max_frames=8",
        # The bundled broker completes a rebalance with the members that rejoined within half
        # the session timeout; a member that learns of the rebalance later (4 consumers on 2
        # cores) would have its hand-off commit refused (IllegalGeneration). Real Kafka waits
        # for max.poll.interval.ms instead.
        "kafka.session_timeout_ms=12000",
    )
    first = StreamJob(job_config(broker, topics, output, *settings, 'kafka.client_id="a"'))
    second = StreamJob(job_config(broker, topics, output, *settings, 'kafka.client_id="b"'))

    def owned(job: StreamJob) -> set[str]:
        return set(job.summary.owned)

    def split() -> bool:
        return bool(owned(first) and owned(second) and not owned(first) & owned(second))

    publishing = threading.Thread(
        target=_publish_paced, args=(broker, topics.frames, frames, split), daemon=True
    )
    with ThreadPoolExecutor(2) as replicas, _stopping(first, second):
        first_run = replicas.submit(first.run)
        publishing.start()
        wait_until(lambda: first.summary.frames > 0, "replica A tracks frames")
        second_run = replicas.submit(second.run)
        wait_until(lambda: split() and second.summary.frames > 0, "replica B tracks frames")
        second.request_stop()
        second_summary = second_run.result(timeout=60)
        wait_until(lambda: len(owned(first)) == len(set(PARTITIONS.values())), "A owns all")
        publishing.join(timeout=60)
        wait_until(
            lambda: first.summary.frames + second.summary.frames >= len(frames),
            "every frame is written",
        )
        first.request_stop()
        first_summary = first_run.result(timeout=60)
    assert not publishing.is_alive()
    assert second_summary.frames > 0 and first_summary.frames > second_summary.frames
    assert first_summary.frames + second_summary.frames == len(frames)
    # B joining and leaving made A hand its partitions over twice (B's own leaving is a
    # graceful stop: it commits before it closes), and every handoff commit went through.
    assert first_summary.handoffs >= 2
    assert first_summary.commit_failures == second_summary.commit_failures == 0
    assert first_summary.ingest_restarts == second_summary.ingest_restarts == 0

    tracker_params = job_config(broker, topics, output).tracker.params()
    expected = reference_tracker_ids(frames, tracker_params)
    frame_counts, boxes = parquet_tracker_ids(output)
    assert set(frame_counts) == set(expected), "Parquet misses or invents frames"
    assert set(frame_counts.values()) == {1}, "a frame is in the Parquet output twice"
    for key, tracker_id in expected.items():
        assert boxes.get(key, {}) == confirmed_ids(tracker_id), key

    records = read_topic(broker.bootstrap_servers, topics.results, len(frames))
    keys = collections.Counter(
        (message["stream_id"], message["frame_index"])
        for message in (decode_result(record.value) for record in records)
    )
    assert set(keys) == set(expected), "the results topic misses or invents frames"
    assert set(keys.values()) == {1}, "a frame is in the results topic twice"


@contextlib.contextmanager
def _stopping(*jobs: StreamJob) -> Iterator[None]:
    """Stop every job on the way out, also when the test fails (they run in threads)."""
    try:
        yield
    finally:
        for job in jobs:
            job.request_stop()


def _publish_paced(
    broker: LocalBroker, topic: str, frames: list[FrameMessage], split: Callable[[], bool]
) -> None:
    """Frames at a steady rate; from `GATE` on only once the partitions are split between the
    replicas (so that B gets frames however long the group takes to rebalance)."""

    def paced() -> Iterator[FrameMessage]:
        for frame in frames:
            if frame.frame_index == GATE:
                wait_until(split, "the replicas split the partitions")
            time.sleep(1.0 / MESSAGES_PER_S)
            yield frame

    with FramePublisher(broker.bootstrap_servers, topic) as publisher:
        publish(paced(), publisher, partitions=PARTITIONS)
