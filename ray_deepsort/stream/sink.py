"""`ResultSink`: writes a finished batch's output and returns only once all of it is safe.

The driver commits a batch's offsets only after `ResultSink.write` returned, which is what makes
the Parquet output exactly once and the results topic at least once:

1. Parquet: one file per input partition and batch, written atomically under a deterministic
   name (`<topic>-<partition>-<first offset>`), so a replay rewrites the same files; a
   partition's files of uncommitted input are removed when it is assigned
   (`remove_uncommitted`).
2. Kafka: one results-topic message per frame and the batch's dead letters, produced and
   acknowledged by the broker (`produce`: retried through broker outages, see its docstring).

Dead letters (`DeadLetter`: a record and why it is not processed) go to
`kafka.dead_letter_topic` with `dead_letter_headers` (the reason and the source position); a
value larger than `kafka.max_message_bytes` is cut to that size. With no dead-letter topic ("")
they are only logged and counted (and still committed).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ray_deepsort.pipeline.parquet import ParquetResultWriter, batch_file_stem
from ray_deepsort.pipeline.types import FrameResult
from ray_deepsort.stream.config import StreamConfig
from ray_deepsort.stream.kafka_clients import partition_of
from ray_deepsort.stream.metrics import JobMetrics
from ray_deepsort.stream.retry import Backoff
from ray_deepsort.stream.summary import JobSummary, job_version
from ray_deepsort.stream.wire import dead_letter_headers, encode_result

logger = logging.getLogger("ray_deepsort.stream")


@dataclass
class DeadLetter:
    """A record that is not processed, and why (`<code>: <detail>`)."""

    record: Any
    reason: str


@dataclass
class Outgoing:
    """One record for the results or dead-letter topic (kept until the broker acknowledged it)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None


@dataclass(frozen=True)
class SinkReport:
    """What `ResultSink.write` did for one batch."""

    files: list[str]  # Parquet files written
    acknowledged: int  # results and dead letters the broker acknowledged
    parquet_s: float  # seconds until the Parquet files were written
    sink_s: float  # seconds until every message was acknowledged
    produced_at: float = 0.0  # wall-clock time (epoch s) when everything was acknowledged


class ResultSink:
    """The job's two sinks, Parquet and Kafka (see the module docstring).

    Counts into `summary`: `files_written`, `dead_letter_codes`, `produce_retries`.
    """

    def __init__(
        self,
        config: StreamConfig,
        producer_factory: Callable[[StreamConfig], Any],
        summary: JobSummary,
        metrics: JobMetrics,
    ) -> None:
        self.config = config
        self.writer = ParquetResultWriter(
            config.output.path,
            compression=config.output.compression,
            include_unconfirmed=config.output.include_unconfirmed,
            fsync=config.output.fsync,
        )
        self.summary = summary
        self.metrics = metrics
        self.version = job_version()
        self.producer_factory = producer_factory
        self.producer: Any | None = producer_factory(config)  # None after a failure: make anew

    def write(
        self, results: list[FrameResult], dead: list[DeadLetter], first_offsets: dict[Any, int]
    ) -> SinkReport:
        """Write a batch: Parquet files first, then every message produced and acknowledged.

        `results` are in partition order; `first_offsets` (partition -> first offset of the
        batch) names the files. Raises when producing fails for good: nothing may be committed.
        """
        started = time.perf_counter()
        files = self.write_parquet(results, first_offsets)
        parquet_s = time.perf_counter() - started
        outgoing = self.messages(results, dead)
        self.produce(outgoing)
        return SinkReport(
            files, len(outgoing), parquet_s, time.perf_counter() - started, time.time()
        )

    def write_parquet(self, results: list[FrameResult], first_offsets: dict[Any, int]) -> list[str]:
        """One file (per dataset) per input partition; returns the files written."""
        groups: dict[Any, list[FrameResult]] = collections.defaultdict(list)
        for result in results:
            groups[partition_of(result.position)].append(result)
        files: list[str] = []
        for tp, group in groups.items():
            stem = batch_file_stem(tp.topic, tp.partition, first_offsets[tp])
            written = self.writer.write(stem, group)
            self.summary.files_written += len(written)
            files.extend(written)
        return files

    def remove_uncommitted(self, tp: Any, start: int) -> list[str]:
        """Delete the partition's files at offsets >= `start` (output of uncommitted input)."""
        return self.writer.remove_uncommitted(tp.topic, tp.partition, start)

    # ------------------------------------------------------------------ Kafka
    def messages(self, results: list[FrameResult], dead: list[DeadLetter]) -> list[Outgoing]:
        """The results-topic messages and the dead letters (each logged and counted by code)."""
        kafka = self.config.kafka
        outgoing: list[Outgoing] = []
        if kafka.results_topic:
            for result in results:
                outgoing.append(
                    Outgoing(
                        kafka.results_topic,
                        result.stream_id.encode("utf-8"),
                        self._result_message(result),
                    )
                )
        for letter in dead:
            record = letter.record
            code = letter.reason.split(":", 1)[0]
            self.summary.dead_letter_codes[code] = self.summary.dead_letter_codes.get(code, 0) + 1
            self.metrics.dead_letter(code)
            logger.warning(
                "dead letter %s[%d]@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                letter.reason,
            )
            if kafka.dead_letter_topic:
                value = record.value
                headers = dead_letter_headers(
                    letter.reason, record.topic, record.partition, record.offset
                )
                if value is not None and len(value) > kafka.max_message_bytes:
                    # Too big to re-send whole (and a send failure would stop the job on this
                    # record at every restart): keep its head; the source offset finds the rest.
                    headers.append(("value_truncated", str(len(value)).encode("ascii")))
                    value = value[: kafka.max_message_bytes]
                outgoing.append(Outgoing(kafka.dead_letter_topic, record.key, value, headers))
        return outgoing

    def _result_message(self, result: FrameResult) -> bytes:
        """A frame's results-topic message (confirmed tracks only, unless configured)."""
        keep = (
            np.ones(result.num_detections, bool)
            if self.config.output.include_unconfirmed
            else result.tracker_id >= 0
        )
        return encode_result(
            result.stream_id,
            result.frame_index,
            result.timestamp,
            {
                "tracker_id": result.tracker_id[keep],
                "detection_index": np.flatnonzero(keep),
                "xyxy": result.xyxy[keep],
                "confidence": result.confidence[keep],
                "class_id": result.class_id[keep],
            },
            job_version=self.version,
            source={
                "topic": result.position.source,
                "partition": result.position.partition,
                "offset": result.position.offset,
            },
        )

    def produce(self, outgoing: list[Outgoing]) -> None:
        """Send `outgoing` and wait until the broker acknowledged every record.

        A flush that times out (broker unreachable) is waited for again: the producer keeps
        retrying those records itself. Records that could not be sent, or that the producer gave
        up on, are sent again after a backoff by a new producer (a broker that lost its state
        can leave an idempotent producer unusable). After `job.broker_timeout_s` of failures the
        job fails with `BrokerUnavailableError`. A record may then reach the topic twice (the
        results topic is at least once); nothing is committed before all are acknowledged.
        """
        from kafka.errors import KafkaError

        job = self.config.job
        backoff = Backoff(job.retry_backoff_s, job.retry_backoff_max_s, job.broker_timeout_s)
        unsent = collections.deque(outgoing)
        waiting: list[tuple[Outgoing, Any]] = []  # sent, not acknowledged yet
        while unsent or waiting:
            error: BaseException | None = None
            try:
                if unsent and not waiting:
                    if self.producer is None:
                        self.producer = self.producer_factory(self.config)
                    while unsent:
                        message = unsent[0]
                        future = self.producer.send(
                            message.topic,
                            key=message.key,
                            value=message.value,
                            headers=message.headers,
                        )
                        waiting.append((message, future))
                        unsent.popleft()
                if waiting:
                    self.producer.flush(timeout=job.request_timeout_s)
            except KafkaError as exc:  # no broker for the metadata, or the flush timed out
                if not exc.retriable:
                    raise
                error = exc
            failed: list[Outgoing] = []
            pending: list[tuple[Outgoing, Any]] = []
            for message, future in waiting:
                if not future.is_done:
                    pending.append((message, future))
                elif future.failed():
                    failed.append(message)
                    error = error or future.exception
            waiting = pending
            unsent.extendleft(reversed(failed))
            if not unsent and not waiting:
                return
            delay = backoff.failed("producing results/dead letters", error or "not acknowledged")
            self.summary.produce_retries += 1
            if waiting:
                logger.warning(
                    "%d record(s) not acknowledged after %gs (%s): waiting for the broker",
                    len(waiting),
                    job.request_timeout_s,
                    error,
                )
                continue
            logger.warning(
                "producing %d record(s) failed (%s): retrying with a new producer in %.1fs",
                len(unsent),
                error,
                delay,
            )
            self._discard_producer()
            time.sleep(delay)

    def _discard_producer(self) -> None:
        """Close the producer (none of its records is pending); the next send makes a new one."""
        producer, self.producer = self.producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)
            except Exception as error:  # a broken producer may not close cleanly
                logger.warning("closing the failed producer: %s", error)

    def close(self, crashed: bool) -> None:
        """Close the producer; after a (simulated) crash without waiting for its records."""
        if self.producer is not None:
            self.producer.close(timeout=0 if crashed else 5)
