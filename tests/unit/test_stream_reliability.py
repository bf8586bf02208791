"""Broker outages and rebalances in the driver, without Kafka or Ray: the retry schedule,
produce retries, commit backoff, a broker that lost its offsets, records fenced by a rebalance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from driver_fakes import (
    P0,
    P1,
    FakeConsumer,
    Record,
    make_job,
    write_result_file,
)
from kafka.errors import CommitFailedError, KafkaTimeoutError, MessageSizeTooLargeError

from ray_deepsort.pipeline import batch_file_stem
from ray_deepsort.stream.config import ConfigError, load_config
from ray_deepsort.stream.job import StreamJob, _Batch, _Outgoing
from ray_deepsort.stream.retry import Backoff, BrokerUnavailableError


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
def _job(tmp_path: Path, consumer: FakeConsumer, *overrides: str) -> StreamJob:
    return make_job(tmp_path, consumer, "checkpoint.enabled=false", *overrides)


# ---------------------------------------------------------------------- broker lost its state
def test_broker_that_lost_committed_offsets_resumes_at_the_jobs_own(tmp_path: Path) -> None:
    consumer = FakeConsumer({P0: None, P1: 7})
    job = _job(tmp_path, consumer)
    job.committed = {P0: 40, P1: 5}  # P1: another replica went further meanwhile
    for offset in (0, 20, 40):
        write_result_file(job.writer, 0, offset)
    consumer.assigned = {P0, P1}
    job._handle_assignment([])
    assert job.summary.broker_resets == 1
    assert consumer.seeks == [(P0, 40)]
    assert job.next_offset[P0] == 40 and job.pending_commit == {P0: 40}
    assert job.committed == {P0: 40, P1: 7}
    # Output below the job's own offset stays; the uncommitted file above it goes.
    stems = {job.writer.stem_of(p) for p in job.writer.files()}
    assert stems == {batch_file_stem("frames", 0, o) for o in (0, 20)}
    # Re-published records below 40 are skipped, new ones processed.
    records = [Record("frames", 0, o, b"k", b"v") for o in (38, 39, 40, 41)]
    assert [r.offset for r in job._handle_assignment(records)] == [40, 41]


def test_partitions_kept_through_a_rebalance_continue_where_the_job_is(tmp_path: Path) -> None:
    consumer = FakeConsumer({P0: 10, P1: 20})
    job = _job(tmp_path, consumer)
    consumer.assigned = {P0, P1}
    job._handle_assignment([])
    job.committed = {P0: 12, P1: 20}
    job.next_offset = {P0: 15, P1: 20}
    consumer.committed_offsets = {P0: None, P1: 20}  # the broker restarted meanwhile
    # A revoke callback (nothing to hand off) while the rebalance is not done yet: records of
    # the revoked partitions are fenced, whatever the assignment still says.
    job.revoked_in_rebalance = {P0, P1}
    job.rebalance_done = False
    fetched = [Record("frames", 0, 15, b"k", b"v"), Record("frames", 1, 20, b"k", b"v")]
    assert job._handle_assignment(fetched) == []
    assert consumer.seeks == []
    job.rebalance_done = True  # the assignment callback: the same partitions came back
    assert job._handle_assignment(fetched) == []
    assert sorted(consumer.seeks) == [(P0, 15), (P1, 20)]
    assert job.summary.broker_resets == 1 and job.pending_commit == {P0: 12}
    assert [r.offset for r in job._handle_assignment(fetched)] == [15, 20]


def test_lost_membership_drops_in_flight_results_even_if_the_partition_returns(
    tmp_path: Path,
) -> None:
    consumer = FakeConsumer({P0: 0})
    job = _job(tmp_path, consumer)
    consumer.assigned = {P0}
    job._handle_assignment([])
    job.partition_streams[P0].add("cam0")
    batch = _Batch(1, 0.0, {}, [], [], {P0: 0}, {P0: 8}, 0.0)
    job.inflight.append(batch)
    job.lost_in_rebalance = {P0}  # on_partitions_lost, then P0 assigned again in one poll
    assert job._handle_assignment([Record("frames", 0, 9, b"k", b"v")]) == []
    assert batch.revoked == {P0}
    assert [shard.dropped for shard in job.pool.shards] == [[["cam0"]], []]  # its owner only
    assert job.owned == {P0} and not job.lost_in_rebalance


# ---------------------------------------------------------------------- commits
def test_failed_commit_is_retried_with_backoff_and_forced_at_stop(tmp_path: Path) -> None:
    consumer = FakeConsumer({})
    job = _job(tmp_path, consumer, "job.retry_backoff_s=30", "job.retry_backoff_max_s=60")
    job.pending_commit = {P0: 5}
    consumer.commit_error = CommitFailedError("rebalance")
    job._commit()
    assert job.summary.commit_failures == 1 and job.pending_commit == {P0: 5}
    consumer.commit_error = None
    job._commit()  # within the backoff: not tried
    assert consumer.commits == []
    job._commit(force=True)
    assert consumer.commits == [{P0: 5}] and job.pending_commit == {}
    assert job.committed == {P0: 5} and job.summary.committed == {"frames:0": 5}
    assert job.commit_backoff.failures == 0


def test_commit_inside_a_rebalance_callback_is_left_to_the_handoff(tmp_path: Path) -> None:
    consumer = FakeConsumer({})
    job = _job(tmp_path, consumer)
    job.pending_commit = {P0: 5}
    job.in_handoff = True  # blocking consumer calls would wait for kafka's IO thread itself
    job._commit(force=True)
    assert consumer.commits == []
    assert job._hand_off() == {P0: 5}  # nothing in flight: the pending offsets to commit
    assert job.summary.handoffs == 1


# ---------------------------------------------------------------------- produce retries
class FakeFuture:
    def __init__(self, outcome: str) -> None:
        self.is_done = outcome != "pending"
        self.exception = KafkaTimeoutError("expired") if outcome == "failed" else None

    def failed(self) -> bool:
        return self.exception is not None


class FakeProducer:
    """Answers each send with the next outcome: "ok", "failed", "pending" (until a flush that
    `delivers`), or an exception to raise."""

    def __init__(self, outcomes: list[Any], delivers: bool = True) -> None:
        self.outcomes = outcomes
        self.delivers = delivers
        self.sent: list[bytes] = []
        self.futures: list[FakeFuture] = []
        self.closed = False

    def send(self, topic: str, key: bytes, value: bytes, headers: Any) -> FakeFuture:
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if isinstance(outcome, Exception):
            raise outcome
        self.sent.append(value)
        self.futures.append(FakeFuture(outcome))
        return self.futures[-1]

    def flush(self, timeout: float) -> None:
        pending = [f for f in self.futures if not f.is_done]
        if pending and not self.delivers:
            self.delivers = True  # the broker is back for the next flush
            raise KafkaTimeoutError("Timeout waiting for future")
        for future in pending:
            future.is_done = True

    def close(self, timeout: float) -> None:
        self.closed = True


def _messages(n: int) -> list[_Outgoing]:
    return [_Outgoing("tracks", b"cam", str(i).encode()) for i in range(n)]


def _producing_job(tmp_path: Path, producers: list[FakeProducer], *overrides: str) -> StreamJob:
    job = _job(tmp_path, FakeConsumer({}), "job.retry_backoff_s=0.001", *overrides)
    made = iter(producers)
    job._producer_factory = lambda config: next(made)
    job.producer = None
    return job


def test_failed_records_are_sent_again_by_a_new_producer(tmp_path: Path) -> None:
    first = FakeProducer(["ok", "failed", "ok", "failed"])
    second = FakeProducer([])
    job = _producing_job(tmp_path, [first, second])
    job._produce(_messages(4))
    assert first.closed and second.sent == [b"1", b"3"]
    assert job.summary.produce_retries == 1 and job.producer is second


def test_unacknowledged_records_are_waited_for_not_sent_twice(tmp_path: Path) -> None:
    producer = FakeProducer(["pending", "pending"], delivers=False)
    job = _producing_job(tmp_path, [producer])
    job._produce(_messages(2))
    assert producer.sent == [b"0", b"1"] and not producer.closed
    assert job.summary.produce_retries == 1


def test_send_errors_retry_when_retriable_and_raise_otherwise(tmp_path: Path) -> None:
    first = FakeProducer(["ok", KafkaTimeoutError("no metadata")])
    second = FakeProducer([])
    job = _producing_job(tmp_path, [first, second])
    job._produce(_messages(3))
    assert first.sent == [b"0"] and second.sent == [b"1", b"2"]
    too_large = FakeProducer([MessageSizeTooLargeError("too large")])
    with pytest.raises(MessageSizeTooLargeError):
        _producing_job(tmp_path, [too_large])._produce(_messages(1))


def test_producing_gives_up_after_the_broker_timeout(tmp_path: Path) -> None:
    producers = [FakeProducer(["failed"]) for _ in range(1000)]
    job = _producing_job(tmp_path, producers, "job.broker_timeout_s=0.05")
    with pytest.raises(BrokerUnavailableError, match=r"broker_timeout_s=0\.05"):
        job._produce(_messages(1))
