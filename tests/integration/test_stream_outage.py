"""Broker outage: the bundled broker is stopped (mid-produce, then while the job idles) and
started again on the same port; the job (2 ingest workers) survives both and resumes by itself.

The bundled broker keeps everything in memory, so a restart loses the topics, the records and
the committed offsets. The job notices that the broker's committed offsets went back behind its
own, resumes at its own and commits them again (docs/streaming.md, "Rebalances and broker
outages"); re-published records below them are skipped. So when the producer re-publishes the
same frames, the Parquet output holds every frame exactly once with the track ids of one
uninterrupted tracker.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from pathlib import Path
from typing import Any

import pytest
import ray
from stream_support import (
    Topics,
    confirmed_ids,
    job_config,
    parquet_tracker_ids,
    read_topic,
    reference_tracker_ids,
    wait_until,
)

from ray_deepsort.stream.broker import LocalBroker, create_topics, start_broker
from ray_deepsort.stream.config import StreamConfig
from ray_deepsort.stream.job import StreamJob
from ray_deepsort.stream.kafka_clients import make_producer
from ray_deepsort.stream.publish import FramePublisher, publish, synthetic_frames
from ray_deepsort.stream.wire import FrameMessage, decode_result

pytestmark = pytest.mark.integration

# The wrapped producer is made in an ingest worker's process, which cannot import this file.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

# One stream per partition, 4 partitions: what the broker creates on its own when a client asks
# for a topic it lost, so topics re-created by the job's clients look like the originals.
PARTITIONS = {"cam0": 0, "cam1": 1, "cam2": 2, "cam3": 3}
FIRST, TOTAL = 60, 90  # frames per stream before the second outage, in all
STOP_AT_FLUSH = 3  # the first outage starts right before this flush of results
FIRST_OUTAGE_S = 3.0  # longer than job.request_timeout_s: the flush is retried
IDLE_S = 2.0
SECOND_OUTAGE_S = 3 * IDLE_S  # longer than job.max_idle_s: waiting for a broker is not idling


@pytest.fixture
def restartable_broker() -> Iterator[dict[str, LocalBroker]]:
    """A broker of this test only (`holder["broker"]`, replaced on restart), stopped at the end."""
    holder = {"broker": start_broker()}
    try:
        yield holder
    finally:
        holder["broker"].stop()


def test_job_survives_broker_restarts(
    restartable_broker: dict[str, LocalBroker],
    ray_local: None,
    tmp_path: Path,
) -> None:
    broker = restartable_broker["broker"]
    topics = Topics("frames", "tracks", "frames-dlq", "outage")
    _create_topics(broker, topics)
    _, generator = synthetic_frames(
        len(PARTITIONS),
        TOTAL,
        objects=8,
        width=480,
        height=270,
        start_time=1_732_500_000.0,
        image_format="none",
    )
    frames = list(generator)
    first_part = [f for f in frames if f.frame_index < FIRST]
    _publish(broker, topics, first_part)

    down = tmp_path / "broker-killed"  # the ingest worker's producer kills it mid-produce
    fast = {"reconnect_backoff_max_ms": 500}
    config = job_config(
        broker,
        topics,
        tmp_path / "out",
        f"job.max_idle_s={IDLE_S}",
        "job.request_timeout_s=2",
        "job.retry_backoff_s=0.2",
        "job.retry_backoff_max_s=1",
        "job.broker_timeout_s=60",
        f"kafka.consumer={_toml(fast)}",
        f"kafka.producer={_toml(fast)}",
        "actors.ingest_workers=2",
    )
    job = StreamJob(
        config,
        producer_factory=functools.partial(
            _StopBrokerOnFlush.make, broker_pid=broker.process.pid, flag=down
        ),
    )
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(job.run)
        try:
            # Outage 1, mid-produce: the results of a batch cannot be flushed in time.
            wait_until(down.exists, "the broker is stopped")
            broker.process.wait()  # reaped here, killed there
            time.sleep(FIRST_OUTAGE_S)
            broker = _restart(restartable_broker, topics)
            _publish(broker, topics, first_part)  # the producer sends its frames again
            wait_until(
                lambda: sum(job.summary.committed.values()) == len(first_part),
                "the frames published so far are committed",
            )
            # Outage 2, while the job idles: longer than job.max_idle_s.
            _kill(broker)
            with pytest.raises(FutureTimeoutError):  # the built-in one only from Python 3.11
                running.result(timeout=SECOND_OUTAGE_S)
            broker = _restart(restartable_broker, topics)
            _publish(broker, topics, frames)  # everything again, and new frames
            summary = running.result(timeout=120)
        finally:
            job.request_stop()
    assert summary.stop_reason == f"idle for {IDLE_S:g}s"
    assert summary.produce_retries >= 1  # outage 1: the flush was retried
    assert summary.broker_resets >= len(PARTITIONS)  # outage 2: every partition was committed
    assert summary.broker_waits >= 1  # outage 2: "the broker does not answer", not idling

    expected = reference_tracker_ids(frames, config.tracker.params())
    frame_counts, boxes = parquet_tracker_ids(tmp_path / "out")
    assert set(frame_counts) == set(expected), "Parquet misses or invents frames"
    assert set(frame_counts.values()) == {1}, "a frame is in the Parquet output twice"
    for key, tracker_id in expected.items():
        assert boxes.get(key, {}) == confirmed_ids(tracker_id), key
    # The broker forgot the results of the frames before the last restart; those after it are
    # there, at least once: frames fetched before the consumer noticed that the restarted
    # broker no longer knows its group are tracked again after it rejoined.
    after = {key for key in expected if key[1] >= FIRST}
    records = read_topic(broker.bootstrap_servers, topics.results, len(after))
    keys = {
        (message["stream_id"], message["frame_index"])
        for message in (decode_result(record.value) for record in records)
    }
    assert keys == after


class _StopBrokerOnFlush:
    """The job's producer, made in the ingest worker's process: right before its
    `STOP_AT_FLUSH`-th flush of results it kills the broker (a crash mid-produce) and creates
    `flag`, once."""

    def __init__(self, producer: Any, broker_pid: int, flag: Path) -> None:
        self.producer, self.broker_pid, self.flag = producer, broker_pid, flag
        self.flushes = 0

    @classmethod
    def make(cls, config: StreamConfig, *, broker_pid: int, flag: Path) -> _StopBrokerOnFlush:
        return cls(make_producer(config), broker_pid, flag)

    def send(self, *args: Any, **kwargs: Any) -> Any:
        return self.producer.send(*args, **kwargs)

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1
        if self.flushes == STOP_AT_FLUSH and not self.flag.exists():
            os.kill(self.broker_pid, signal.SIGKILL)
            self.flag.touch()
        self.producer.flush(timeout=timeout)

    def close(self, timeout: float | None = None) -> None:
        self.producer.close(timeout=timeout)


def _kill(broker: LocalBroker) -> None:
    """A crash: gone at once (a terminated broker shuts down for seconds, answering meanwhile)."""
    broker.process.kill()
    broker.process.wait()


def _restart(holder: dict[str, LocalBroker], topics: Topics) -> LocalBroker:
    """The broker again on the same port (empty: the bundled broker keeps nothing)."""
    holder["broker"] = start_broker(port=holder["broker"].port)
    _create_topics(holder["broker"], topics)
    return holder["broker"]


def _create_topics(broker: LocalBroker, topics: Topics) -> None:
    partitions = len(PARTITIONS)
    create_topics(
        broker.bootstrap_servers,
        {topics.frames: partitions, topics.results: partitions, topics.dead_letters: partitions},
    )


def _publish(broker: LocalBroker, topics: Topics, frames: list[FrameMessage]) -> None:
    with FramePublisher(broker.bootstrap_servers, topics.frames) as publisher:
        publish(frames, publisher, partitions=PARTITIONS)


def _toml(table: dict[str, int]) -> str:
    return "{" + ", ".join(f"{key} = {json.dumps(value)}" for key, value in table.items()) + "}"
