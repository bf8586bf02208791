"""The driver's sinks without Kafka or Ray (issue #17, item 3): offsets are committed only after
both sinks are done, and dead letters go where `[kafka]` says, never to the results topic.

The job runs its real loop (poll -> submit -> finish in order -> commit) over the fakes of
`driver_fakes`; a fake consumer's commit hook looks at both sinks at the moment of each commit.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from driver_fakes import P0, FakeConsumer, FakeProducer, Record, frame_record, make_job
from kafka.errors import MessageSizeTooLargeError

from ray_deepsort.pipeline import batch_file_stem
from ray_deepsort.stream.config import load_config
from ray_deepsort.stream.metrics import JobMetrics
from ray_deepsort.stream.retry import BrokerUnavailableError
from ray_deepsort.stream.sink import DeadLetter, ResultSink
from ray_deepsort.stream.summary import JobSummary
from ray_deepsort.stream.wire import WireFormatError, decode_frame, decode_result
from ray_deepsort.stream.worker import PartitionWorker

MALFORMED = Record("frames", 0, 1, b"cam0", b"RDSF but not really")


def _job(
    tmp_path: Path, producer: FakeProducer, *overrides: str
) -> tuple[PartitionWorker, FakeConsumer]:
    """A job that owns frames[0] (committed at 0), polls one batch per poll and commits after
    every batch (`job.commit_interval_s` = 0, the default)."""
    consumer = FakeConsumer({P0: 0})
    consumer.assigned = {P0}
    job = make_job(
        tmp_path,
        consumer,
        "checkpoint.enabled=false",
        "batch.max_wait_ms=0",
        *overrides,
        producer=producer,
    )
    return job, consumer


def _stems(job: PartitionWorker) -> set[str]:
    return {job.sink.writer.stem_of(path) for path in job.sink.writer.files()}


# ---------------------------------------------------------------------- commit after the sinks
def test_offsets_are_committed_only_after_parquet_and_kafka_are_done(tmp_path: Path) -> None:
    producer = FakeProducer(["pending"] * 10)  # acknowledged by the broker only at a flush
    job, consumer = _job(tmp_path, producer, "job.stop_after_batches=2")
    consumer.to_poll = [
        [frame_record(0, 0), MALFORMED, frame_record(0, 2)],
        [frame_record(0, 3), frame_record(0, 4)],
    ]
    at_commit: list[tuple[dict[Any, int], set[str], bool, int]] = []
    consumer.on_commit = lambda offsets: at_commit.append(
        (offsets, _stems(job), producer.acknowledged(), len(producer.messages))
    )
    job.run_until_stopped()
    first, second = batch_file_stem("frames", 0, 0), batch_file_stem("frames", 0, 3)
    assert at_commit == [
        ({P0: 3}, {first}, True, 3),  # 2 results + 1 dead letter, all acknowledged
        ({P0: 5}, {first, second}, True, 5),
    ]
    assert consumer.commits == [{P0: 3}, {P0: 5}] and not job.ledger.pending


@pytest.mark.parametrize(
    ("outcomes", "error"),
    [
        ([MessageSizeTooLargeError("too large")], MessageSizeTooLargeError),  # not retriable
        (["failed"] * 1000, BrokerUnavailableError),  # retried until job.broker_timeout_s
    ],
)
def test_nothing_is_committed_when_producing_fails(
    tmp_path: Path, outcomes: list[Any], error: type[Exception]
) -> None:
    producer = FakeProducer(outcomes)
    job, consumer = _job(
        tmp_path,
        producer,
        "job.stop_after_batches=1",
        "job.retry_backoff_s=0.001",
        "job.broker_timeout_s=0.05",
    )
    consumer.to_poll = [[frame_record(0, 0), frame_record(0, 1)]]
    with pytest.raises(error):
        job.run_until_stopped()
    assert consumer.commits == [] and consumer.committed_offsets == {P0: 0}
    assert not job.ledger.pending and job.summary.batches == 0
    # Parquet was written first; the next owner removes it as an uncommitted leftover.
    assert _stems(job) == {batch_file_stem("frames", 0, 0)}


# ---------------------------------------------------------------------- dead letters
def _reason(record: Record) -> str:
    with pytest.raises(WireFormatError) as caught:
        decode_frame(record.value, record.key)
    return caught.value.reason


def test_a_malformed_record_goes_to_the_dead_letter_topic_and_a_good_one_to_results(
    tmp_path: Path,
) -> None:
    producer = FakeProducer([])
    job, consumer = _job(tmp_path, producer, "job.stop_after_batches=1")
    consumer.to_poll = [[frame_record(0, 0, "cam0"), MALFORMED]]
    job.run_until_stopped()

    assert [topic for topic, *_ in producer.messages] == ["tracks", "frames-dlq"]
    (_, result_key, result_value, _), (_, key, value, headers) = producer.messages
    result = decode_result(result_value)
    assert result_key == b"cam0" and (result["stream_id"], result["frame_index"]) == ("cam0", 0)
    reason = _reason(MALFORMED)
    assert key == MALFORMED.key and value == MALFORMED.value  # the original message
    assert dict(headers) == {
        "reason": reason.encode(),
        "source_topic": b"frames",
        "source_partition": b"0",
        "source_offset": b"1",
    }
    code = reason.split(":", 1)[0]
    assert job.summary.dead_letters == 1 and job.summary.dead_letter_codes == {code: 1}
    assert job.summary.frames == 1 and consumer.commits == [{P0: 2}]  # dead letters commit too


def test_without_a_dead_letter_topic_dead_letters_are_only_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    producer = FakeProducer([])
    job, consumer = _job(
        tmp_path, producer, "job.stop_after_batches=1", 'kafka.dead_letter_topic=""'
    )
    consumer.to_poll = [[frame_record(0, 0, "cam0"), MALFORMED]]
    with caplog.at_level(logging.WARNING, logger="ray_deepsort.stream"):
        job.run_until_stopped()
    assert [topic for topic, *_ in producer.messages] == ["tracks"]
    reason = _reason(MALFORMED)
    assert job.summary.dead_letters == 1
    assert job.summary.dead_letter_codes == {reason.split(":", 1)[0]: 1}
    assert f"dead letter frames[0]@1: {reason}" in caplog.text
    assert consumer.commits == [{P0: 2}]


def test_oversized_dead_letters_are_cut_to_the_message_limit(tmp_path: Path) -> None:
    config = load_config(None, [f'output.path="{tmp_path}"', "kafka.max_message_bytes=1000"])
    sink = ResultSink(config, lambda _: FakeProducer([]), JobSummary(), JobMetrics(False))
    big = Record("frames", 2, 7, b"cam0", bytes(1500))
    small = Record("frames", 2, 8, b"cam0", bytes(1000))
    reason = "too_large: message is 1500 bytes, limit is 1000"
    outgoing = sink.messages([], [DeadLetter(big, reason), DeadLetter(small, "bad_magic: x")])
    assert [message.topic for message in outgoing] == ["frames-dlq", "frames-dlq"]
    cut, whole = outgoing
    assert cut.value == bytes(1000) and dict(cut.headers or [])["value_truncated"] == b"1500"
    assert dict(cut.headers or [])["reason"] == reason.encode()
    assert whole.value == small.value and "value_truncated" not in dict(whole.headers or [])
    assert sink.summary.dead_letter_codes == {"too_large": 1, "bad_magic": 1}


def test_write_returns_once_the_files_exist_and_every_message_is_acknowledged(
    tmp_path: Path,
) -> None:
    producer = FakeProducer(["pending", "pending"])  # acknowledged only at a flush
    job, consumer = _job(tmp_path, producer)
    records = job.partitions.accept(
        [frame_record(0, 4), Record("frames", 0, 5, MALFORMED.key, MALFORMED.value)]
    )
    job.batches.submit(records, 0.0)
    popped = job.batches.pop_ready(block=True)
    assert popped is not None
    batch, outputs = popped
    results, dead = batch.output(outputs, job.owned)
    report = job.sink.write(results, dead, batch.first_offsets)
    assert report.files and all(Path(path).is_file() for path in report.files)
    assert {job.sink.writer.stem_of(path) for path in report.files} == {
        batch_file_stem("frames", 0, 4)
    }
    assert report.acknowledged == 2 and producer.acknowledged() and len(producer.messages) == 2
    assert consumer.commits == []  # committing is the driver's, after `write` returned
