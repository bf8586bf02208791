"""Broker outages and rebalances in the driver, without Kafka or Ray: the retry schedule,
produce retries, commit backoff, a broker that lost its offsets, records fenced by a rebalance."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from driver_fakes import (
    P0,
    P1,
    P2,
    FakeConsumer,
    FakeProducer,
    Record,
    frame_record,
    make_job,
    write_result_file,
)
from kafka.errors import CommitFailedError, KafkaTimeoutError, MessageSizeTooLargeError

from ray_deepsort.pipeline import batch_file_stem
from ray_deepsort.stream.config import ConfigError, load_config
from ray_deepsort.stream.metrics import JobMetrics
from ray_deepsort.stream.retry import Backoff, BrokerUnavailableError
from ray_deepsort.stream.sink import Outgoing, ResultSink
from ray_deepsort.stream.summary import JobSummary
from ray_deepsort.stream.worker import PartitionWorker


# ---------------------------------------------------------------------- retry schedule
class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_up_to_the_cap_and_starts_over_after_success() -> None:
    backoff = Backoff(0.5, 4.0, clock=FakeClock())
    assert [backoff.failed("commit", "down") for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]
    backoff.succeeded()
    assert backoff.failed("commit", "down") == 0.5
    assert backoff.delay(10_000) == 4.0  # no overflow after a very long outage


def test_backoff_gives_up_after_the_broker_timeout_only() -> None:
    clock = FakeClock()
    backoff = Backoff(1.0, 30.0, give_up_after_s=60.0, clock=clock)
    backoff.failed("producing", "down")
    clock.now += 59.0
    backoff.failed("producing", "down")
    clock.now += 1.0
    with pytest.raises(BrokerUnavailableError, match="producing kept failing for 60s"):
        backoff.failed("producing", "down")
    backoff.succeeded()  # a success in between starts the clock again
    clock.now += 1000.0
    assert backoff.failed("producing", "down") == 1.0


def test_backoff_forever_and_bad_settings() -> None:
    clock = FakeClock()
    backoff = Backoff(1.0, 2.0, give_up_after_s=0.0, clock=clock)
    for _ in range(100):
        clock.now += 3600.0
        assert backoff.failed("commit", "down") <= 2.0
    with pytest.raises(ValueError):
        Backoff(0.0, 1.0)
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)


@pytest.mark.parametrize(
    "override",
    ["job.retry_backoff_s=0", "job.request_timeout_s=0", "job.broker_timeout_s=-1"],
)
def test_retry_settings_are_checked(override: str) -> None:
    with pytest.raises(ConfigError):
        load_config(None, [override])


def test_retry_backoff_cap_must_not_be_below_the_first_delay() -> None:
    with pytest.raises(ConfigError, match="retry_backoff_max_s"):
        load_config(None, ["job.retry_backoff_s=5", "job.retry_backoff_max_s=1"])


# ---------------------------------------------------------------------- fakes
def _job(tmp_path: Path, consumer: FakeConsumer, *overrides: str) -> PartitionWorker:
    return make_job(tmp_path, consumer, "checkpoint.enabled=false", *overrides)


# ---------------------------------------------------------------------- broker lost its state
def test_broker_that_lost_committed_offsets_resumes_at_the_jobs_own(tmp_path: Path) -> None:
    consumer = FakeConsumer({P0: 40, P1: 5})
    job = _job(tmp_path, consumer)
    consumer.assigned = {P0, P1}
    job.partitions.accept([])
    for offset in (0, 20, 40):  # 40: output of input in flight when the broker went away
        write_result_file(job.sink.writer, 0, offset)
    # The broker restarts without its state; P1: another replica went further meanwhile.
    consumer.committed_offsets = {P0: None, P1: 7}
    asyncio.run(consumer.listener.on_partitions_lost({P0, P1}))
    job.partitions.accept([])  # assigned again in the same poll
    assert job.summary.broker_resets == 1
    assert consumer.seeks == [(P0, 40)]
    assert job.ledger.next_offset[P0] == 40 and job.ledger.pending == {P0: 40}
    assert job.ledger.committed == {P0: 40, P1: 7}
    # Output below the job's own offset stays; the uncommitted file above it goes.
    stems = {job.sink.writer.stem_of(p) for p in job.sink.writer.files()}
    assert stems == {batch_file_stem("frames", 0, o) for o in (0, 20)}
    # Re-published records below 40 are skipped, new ones processed.
    records = [Record("frames", 0, o, b"k", b"v") for o in (38, 39, 40, 41)]
    assert [r.offset for r in job.partitions.accept(records)] == [40, 41]


def test_partitions_kept_through_a_rebalance_continue_where_the_job_is(tmp_path: Path) -> None:
    consumer = FakeConsumer({P0: 10, P1: 20})
    job = _job(tmp_path, consumer)
    consumer.assigned = {P0, P1}
    job.partitions.accept([])
    job.ledger.committed_now({P0: 12})
    job.ledger.seek(P0, 15)
    job.ledger.seek(P1, 20)
    consumer.committed_offsets = {P0: None, P1: 20}  # the broker restarted meanwhile
    # A revoke callback (nothing to hand off) while the rebalance is not done yet: records of
    # the revoked partitions are fenced, whatever the assignment still says.
    listener = consumer.listener
    asyncio.run(listener.on_partitions_revoked({P0, P1}))
    assert consumer.async_commits == [] and job.summary.handoffs == 1  # counted, none due
    fetched = [Record("frames", 0, 15, b"k", b"v"), Record("frames", 1, 20, b"k", b"v")]
    assert job.partitions.accept(fetched) == []
    assert consumer.seeks == []
    asyncio.run(listener.on_partitions_assigned({P0, P1}))  # the same partitions came back
    assert job.partitions.accept(fetched) == []
    assert sorted(consumer.seeks) == [(P0, 15), (P1, 20)]
    assert job.summary.broker_resets == 1 and job.ledger.pending == {P0: 12}
    assert [r.offset for r in job.partitions.accept(fetched)] == [15, 20]


def test_a_partition_kept_through_a_rebalance_resumes_at_its_commit_when_nothing_was_accepted(
    tmp_path: Path,
) -> None:
    """Taken over (or rebuilt after an actor failure) at offset 27, then a rebalance before a
    record was accepted: the records fetched meanwhile were fenced and moved kafka-python's
    position past them, so the job goes back to 27 (they were lost once, in the chaos test)."""
    consumer = FakeConsumer({P2: 27})
    job = _job(tmp_path, consumer)
    consumer.assigned = {P2}
    job.partitions.accept([])
    listener = consumer.listener
    asyncio.run(listener.on_partitions_revoked({P2}))
    assert job.partitions.accept([frame_record(2, o) for o in range(27, 35)]) == []
    asyncio.run(listener.on_partitions_assigned({P2}))
    assert job.partitions.accept([frame_record(2, 35)]) == []
    assert consumer.seeks == [(P2, 27)]
    assert [r.offset for r in job.partitions.accept([frame_record(2, 27)])] == [27]


def test_lost_membership_drops_in_flight_results_even_if_the_partition_returns(
    tmp_path: Path,
) -> None:
    consumer = FakeConsumer({P0: 0})
    job = _job(tmp_path, consumer)
    consumer.assigned = {P0}
    records = job.partitions.accept([frame_record(0, o, "cam0") for o in range(9)])
    batch = job.batches.submit(records, time.monotonic())
    # on_partitions_lost, then P0 assigned again within one poll
    asyncio.run(consumer.listener.on_partitions_lost({P0}))
    assert job.partitions.accept([Record("frames", 0, 9, b"k", b"v")]) == []
    assert batch.revoked == {P0}
    assert [shard.dropped for shard in job.pool.shards] == [[["cam0"]], []]  # its owner only
    assert job.owned == {P0} and not consumer.listener.take_fences().void


# ---------------------------------------------------------------------- commits
def test_failed_commit_is_retried_with_backoff_and_forced_at_stop(tmp_path: Path) -> None:
    consumer = FakeConsumer({})
    job = _job(tmp_path, consumer, "job.retry_backoff_s=30", "job.retry_backoff_max_s=60")
    job.ledger.batch_done({P0: 4}, {P0})
    consumer.commit_error = CommitFailedError("rebalance")
    job.committer.commit()
    assert job.summary.commit_failures == 1 and job.ledger.pending == {P0: 5}
    consumer.commit_error = None
    job.committer.commit()  # within the backoff: not tried
    assert consumer.commits == []
    job.committer.commit(force=True)
    assert consumer.commits == [{P0: 5}] and job.ledger.pending == {}
    assert job.ledger.committed == {P0: 5} and job.summary.committed == {"frames:0": 5}
    assert job.committer.backoff.failures == 0


def test_a_revoke_drops_the_batch_in_flight_and_commits_what_was_written(tmp_path: Path) -> None:
    consumer = FakeConsumer({P0: 0})
    job = _job(tmp_path, consumer)
    consumer.assigned = {P0}
    job.partitions.accept([])
    job.ledger.batch_done({P0: 4}, {P0})
    # Revoked with a batch in flight: it is dropped, not written (the group may have moved on
    # already), and the hand-off commits what was written, asynchronously.
    records = job.partitions.accept([frame_record(0, o, "cam0") for o in (5, 6)])
    job.batches.submit(records, time.monotonic())
    asyncio.run(consumer.listener.on_partitions_revoked({P0}))
    assert consumer.commits == [] and consumer.async_commits == [{P0: 5}]
    assert job.summary.handoffs == 1 and job.summary.batches_dropped == 1
    assert job.summary.frames == 0 and job.sink.writer.files() == []
    assert not job.inflight and job.ledger.pending == {} and job.ledger.committed == {P0: 5}
    # P0 comes straight back: its shards' state is past its output, so it is rebuilt.
    asyncio.run(consumer.listener.on_partitions_assigned({P0}))
    assert job.partitions.accept([]) == []
    assert [shard.dropped for shard in job.pool.shards] == [[["cam0"]], []]


def test_a_failed_handoff_commit_is_counted_not_raised(tmp_path: Path) -> None:
    consumer = FakeConsumer({})
    job = _job(tmp_path, consumer)
    job.ledger.batch_done({P0: 4}, {P0})

    async def failing_commit(offsets: object) -> None:
        raise CommitFailedError("generation changed")

    consumer.commit_async = failing_commit  # type: ignore[method-assign]
    asyncio.run(consumer.listener.on_partitions_revoked({P0}))
    assert job.summary.commit_failures == 1 and job.ledger.pending == {P0: 5}
    consumer.listener.raise_error()  # nothing kept for the main thread


# ---------------------------------------------------------------------- produce retries
def _messages(n: int) -> list[Outgoing]:
    return [Outgoing("tracks", b"cam", str(i).encode()) for i in range(n)]


def _sink(tmp_path: Path, producers: list[FakeProducer], *overrides: str) -> ResultSink:
    """A sink whose producer factory hands out `producers` in turn (the first at once)."""
    config = load_config(
        None, [f'output.path="{tmp_path}"', "job.retry_backoff_s=0.001", *overrides]
    )
    made = iter(producers)
    return ResultSink(config, lambda config: next(made), JobSummary(), JobMetrics(enabled=False))


def test_failed_records_are_sent_again_by_a_new_producer(tmp_path: Path) -> None:
    first = FakeProducer(["ok", "failed", "ok", "failed"])
    second = FakeProducer([])
    sink = _sink(tmp_path, [first, second])
    sink.produce(_messages(4))
    assert first.closed and second.sent == [b"1", b"3"]
    assert sink.summary.produce_retries == 1 and sink.producer is second


def test_unacknowledged_records_are_waited_for_not_sent_twice(tmp_path: Path) -> None:
    producer = FakeProducer(["pending", "pending"], delivers=False)
    sink = _sink(tmp_path, [producer])
    sink.produce(_messages(2))
    assert producer.sent == [b"0", b"1"] and not producer.closed
    assert sink.summary.produce_retries == 1


def test_send_errors_retry_when_retriable_and_raise_otherwise(tmp_path: Path) -> None:
    first = FakeProducer(["ok", KafkaTimeoutError("no metadata")])
    second = FakeProducer([])
    _sink(tmp_path, [first, second]).produce(_messages(3))
    assert first.sent == [b"0"] and second.sent == [b"1", b"2"]
    too_large = FakeProducer([MessageSizeTooLargeError("too large")])
    with pytest.raises(MessageSizeTooLargeError):
        _sink(tmp_path, [too_large]).produce(_messages(1))


def test_producing_gives_up_after_the_broker_timeout(tmp_path: Path) -> None:
    producers = [FakeProducer(["failed"]) for _ in range(1000)]
    sink = _sink(tmp_path, producers, "job.broker_timeout_s=0.05")
    with pytest.raises(BrokerUnavailableError, match=r"broker_timeout_s=0\.05"):
        sink.produce(_messages(1))
