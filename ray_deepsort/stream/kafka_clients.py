"""The stream job's Kafka side: its clients, offset commits and the rebalance listener.

- `make_consumer` / `make_producer`: the consumer (group member, manual commits, one poll = one
  batch) and the producer of the results and dead-letter topics, both from `[kafka]`.
  `ClientFactories` lets tests wrap them.
- `OffsetCommitter`: commits the offsets of finished batches (`PartitionLedger.pending`), every
  `job.commit_interval_s`; a failed commit is retried with backoff (broker outages). Never from
  inside a rebalance callback: there the hand-off commits asynchronously.
- `PartitionHandoff`: the rebalance listener. Before partitions are revoked it has the driver
  finish the batches in flight and commits them, so the next owner starts exactly there; until
  the main thread has seen the new assignment it fences records of revoked or lost partitions.
- Small helpers: `topic_partition`, `partition_of` (a result's source partition),
  `by_partition` (a stable order), `commit_offsets`, `broker_answers`, `create_job_topics`.
- `check_topic_limits`: at start, each topic's `max.message.bytes` must hold what the job reads
  and sends, else the job refuses to start (one oversized dead letter would crash-loop it).

kafka-python is imported where a client is made or one of its errors is caught; only the
listener's base class is needed at import time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener

from ray_deepsort.pipeline.types import SourcePosition
from ray_deepsort.stream.config import StreamConfig
from ray_deepsort.stream.retry import Backoff

if TYPE_CHECKING:
    from ray_deepsort.stream.ledger import PartitionLedger
    from ray_deepsort.stream.summary import JobSummary

logger = logging.getLogger("ray_deepsort.stream")

# Room for a record's key, headers and batch framing beyond its value: the producer's
# max_request_size, and what output topics must hold beyond kafka.max_message_bytes.
RECORD_HEADROOM = 64 * 1024


class TopicLimitError(RuntimeError):
    """A topic's `max.message.bytes` is smaller than what the job reads or sends."""


# ---------------------------------------------------------------------- partitions, offsets
def topic_partition(topic: str, partition: int) -> Any:
    """kafka-python's `TopicPartition` (the key of every per-partition map)."""
    from kafka.structs import TopicPartition

    return TopicPartition(topic, partition)


def partition_of(position: SourcePosition) -> Any:
    """The partition a frame result came from."""
    return topic_partition(position.source, position.partition)


def by_partition(partitions: Iterable[Any]) -> list[Any]:
    """`partitions` in (topic, partition) order: logs and seeks read the same in every run."""
    return sorted(partitions, key=lambda tp: (tp.topic, tp.partition))


def lowest_offsets(positions: Iterable[tuple[str, int, int]]) -> dict[Any, int]:
    """Partition -> the lowest offset among `positions` (topic, partition, offset)."""
    lowest: dict[Any, int] = {}
    for topic, partition, offset in positions:
        tp = topic_partition(topic, partition)
        lowest[tp] = min(offset, lowest.get(tp, offset))
    return lowest


def commit_offsets(offsets: dict[Any, int]) -> dict[Any, Any]:
    """The `offsets` argument of `KafkaConsumer.commit` / `commit_async`."""
    from kafka.structs import OffsetAndMetadata

    return {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}


# ---------------------------------------------------------------------- clients
def make_consumer(config: StreamConfig) -> Any:
    """The job's KafkaConsumer: consumer group, manual commits, poll size = batch size."""
    from kafka import KafkaConsumer

    kafka = config.kafka
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "group_id": kafka.group_id,
        "client_id": kafka.client_id,
        "enable_auto_commit": False,
        "auto_offset_reset": kafka.auto_offset_reset,
        "session_timeout_ms": kafka.session_timeout_ms,
        "heartbeat_interval_ms": kafka.heartbeat_interval_ms,
        "max_poll_interval_ms": kafka.max_poll_interval_ms,
        "max_poll_records": config.batch.max_frames,
        "max_partition_fetch_bytes": max(kafka.max_partition_fetch_bytes, 1024 * 1024),
        "fetch_max_bytes": max(52_428_800, kafka.max_partition_fetch_bytes),
        **kafka.security,
        **kafka.consumer,
    }
    return KafkaConsumer(**options)


def make_producer(config: StreamConfig) -> Any:
    """Producer for the results and dead-letter topics (acks=all; dead letters can be large).

    Not idempotent: a broker that restarts without its state does not know the producer id
    any more, and an idempotent producer then stalls until its records expire. The results
    topic is at least once anyway; one request in flight keeps a retried record in order.
    """
    from kafka import KafkaProducer

    kafka = config.kafka
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "client_id": f"{kafka.client_id}-sink",
        "acks": "all",
        "linger_ms": 5,
        "enable_idempotence": False,
        "max_in_flight_requests_per_connection": 1,
        "max_request_size": kafka.max_message_bytes + RECORD_HEADROOM,
        **kafka.security,
        **kafka.producer,
    }
    return KafkaProducer(**options)


@dataclass(frozen=True)
class ClientFactories:
    """How the job makes its consumer and its producers (tests wrap or replace them)."""

    consumer: Callable[[StreamConfig], Any]
    producer: Callable[[StreamConfig], Any]


def broker_answers(consumer: Any, owned: set[Any], config: StreamConfig) -> bool:
    """Whether the consumer is a stable group member and the broker answers right now."""
    from kafka.errors import KafkaError
    from kafka.structs import MemberState

    if consumer.group_metadata().state != MemberState.STABLE:
        return False
    probe = by_partition(owned) or [topic_partition(config.kafka.frames_topics[0], 0)]
    try:
        consumer.end_offsets(probe, timeout_ms=int(config.job.request_timeout_s * 1000))
    except KafkaError:
        return False
    return True


def create_job_topics(config: StreamConfig) -> None:
    """Create missing input, results and dead-letter topics (`kafka.create_topics`), each with a
    `max.message.bytes` that holds what the job reads or sends (`required_topic_bytes`)."""
    from ray_deepsort.stream.broker import create_topics

    kafka = config.kafka
    required = required_topic_bytes(config)
    create_topics(
        kafka.bootstrap_servers,
        {name: kafka.topic_partitions for name in required},
        client_options=dict(kafka.security),
        replication_factor=kafka.topic_replication_factor,
        topic_configs={name: {"max.message.bytes": str(size)} for name, size in required.items()},
    )


def required_topic_bytes(config: StreamConfig) -> dict[str, int]:
    """Topic -> the smallest `max.message.bytes` the job needs: frames topics hold frames up to
    `kafka.max_message_bytes`; results and dead letters get what the job's producer may send
    (a dead letter re-sends a frame of up to that size, plus key and headers)."""
    kafka = config.kafka
    sizes = {name: kafka.max_message_bytes for name in kafka.frames_topics}
    for name in (kafka.results_topic, kafka.dead_letter_topic):
        if name:
            sizes[name] = kafka.max_message_bytes + RECORD_HEADROOM
    return sizes


def topic_limit_problems(
    required: Mapping[str, int], limits: Mapping[str, int | None]
) -> list[str]:
    """One line per topic whose `max.message.bytes` (from `limits`) is below `required`."""
    problems = []
    for name, size in required.items():
        limit = limits.get(name)
        if limit is not None and limit < size:
            problems.append(f"topic {name!r} has max.message.bytes={limit}, the job needs {size}")
    return problems


def read_topic_limits(admin: Any, topics: Iterable[str]) -> dict[str, int | None]:
    """Each topic's `max.message.bytes` from the broker (None: not reported)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    names = list(topics)
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in names], config_filter="all"
    )
    limits: dict[str, int | None] = {}
    for name in names:
        entry = described.get("topic", {}).get(name, {}).get("max.message.bytes")
        value = entry.get("value") if isinstance(entry, dict) else entry
        limits[name] = int(value) if value not in (None, "") else None
    return limits


def check_topic_limits(config: StreamConfig, admin: Any | None = None) -> None:
    """Refuse to start (`TopicLimitError`) when a topic cannot hold what the job reads or
    sends; a topic whose limit the broker does not report is logged, not refused."""
    from kafka.errors import KafkaError

    from ray_deepsort.stream.broker import admin_client

    kafka = config.kafka
    required = required_topic_bytes(config)
    try:
        client = (
            admin if admin is not None else admin_client(kafka.bootstrap_servers, kafka.security)
        )
        try:
            limits = read_topic_limits(client, required)
        finally:
            if admin is None:
                client.close()
    except KafkaError as error:  # broker down (the consumer waits for it) or no DescribeConfigs
        logger.warning("cannot read the topics' max.message.bytes (%s): not checked", error)
        return
    unknown = sorted(name for name in required if limits.get(name) is None)
    if unknown:
        logger.warning("max.message.bytes not reported for %s: not checked", unknown)
    problems = topic_limit_problems(required, limits)
    if problems:
        raise TopicLimitError(
            "; ".join(problems) + ". Raise the topics' max.message.bytes (KafkaTopic "
            "spec.config) or lower kafka.max_message_bytes"
        )


# ---------------------------------------------------------------------- commits
class OffsetCommitter:
    """Commits the ledger's pending offsets (finished batches) and records what is committed.

    `on_committed` runs after every successful commit: the checkpoint written there must cover
    committed offsets only.
    """

    def __init__(
        self,
        consumer: Any,
        ledger: PartitionLedger,
        config: StreamConfig,
        summary: JobSummary,
        on_committed: Callable[[], None],
    ) -> None:
        job = config.job
        self.consumer = consumer
        self.ledger = ledger
        self.settings = job
        self.summary = summary  # `committed` and `commit_failures` are kept up to date here
        self.on_committed = on_committed
        self.last_commit = time.monotonic()
        self.backoff = Backoff(job.retry_backoff_s, job.retry_backoff_max_s, job.broker_timeout_s)
        self.retry_at = 0.0  # after a failed commit, none is tried before this (monotonic)

    def commit(self, force: bool = False) -> None:
        """Commit the finished batches' offsets (every `commit_interval_s`); a failed commit is
        retried with backoff (`job.retry_backoff_s`...), a forced one at once."""
        if not self.ledger.pending:
            return
        now = time.monotonic()
        due = now - self.last_commit >= self.settings.commit_interval_s
        if not force and (not due or now < self.retry_at):
            return
        from kafka.errors import KafkaError

        pending = dict(self.ledger.pending)
        try:
            self.consumer.commit(
                offsets=commit_offsets(pending),
                timeout_ms=int(self.settings.request_timeout_s * 1000),
            )
        except KafkaError as error:
            self.summary.commit_failures += 1
            delay = self.backoff.failed("committing offsets", error)
            self.retry_at = time.monotonic() + delay
            logger.warning("commit failed (retrying in %.1fs): %s", delay, error)
            return
        self.committed(pending)

    def committed(self, offsets: dict[Any, int]) -> None:
        """`offsets` are committed: record them and write the checkpoint they cover."""
        self.ledger.committed_now(offsets)
        self.summary.committed = self.ledger.committed_labels()
        self.last_commit = time.monotonic()
        self.backoff.succeeded()
        self.retry_at = 0.0
        self.on_committed()

    async def commit_handoff(self, offsets: dict[Any, int]) -> None:
        """Commit from a rebalance callback: awaited (`commit_async`), so that the heartbeat
        goes on; a failure is counted and logged, not raised."""
        try:
            await self.consumer.commit_async(commit_offsets(offsets))
        except Exception as error:  # the new owner replays; Parquet stays exact
            self.summary.commit_failures += 1
            logger.warning(
                "rebalance: commit failed (%s); the next owner of the revoked partitions "
                "replays from their last committed offsets (results may repeat)",
                error,
            )
            return
        self.committed(offsets)


# ---------------------------------------------------------------------- rebalances
@dataclass
class Fences:
    """What the rebalance callbacks told the main thread since it last looked."""

    fenced: set[Any]  # their fetched records are not processed
    void: set[Any]  # membership lost: their state is void even if they stay assigned
    rebalanced: set[Any]  # revoked in a rebalance that has completed


class PartitionHandoff(AsyncConsumerRebalanceListener):
    """Rebalance callbacks: before partitions are given up, the finished batches are committed,
    so the next owner starts right after the last output this job wrote.

    Batches still in flight are not written: a member that rejoins late may already have been
    left out of the group (the broker waits only so long; the bundled test broker half the
    session timeout), and its output would then race the partitions' new owner, who replays
    the same records with other batch boundaries. `hand_off` drops them and names their
    partitions, which `void` marks: their state is rebuilt from the checkpoint if they stay.

    kafka-python calls the callbacks on its IO thread while the job's main thread waits in
    `poll` (or `close`), so they may use the job's state but no blocking consumer call: the
    commit is awaited with `commit_async`. An error is kept and raised on the main thread
    (`raise_error`). `on_event` runs at every callback (a rebalance is not idling).
    """

    def __init__(
        self,
        committer: OffsetCommitter,
        hand_off: Callable[[], dict[Any, int]],
        on_event: Callable[[], None],
    ) -> None:
        self.committer = committer
        self.hand_off = hand_off
        self.on_event = on_event
        self.enabled = True  # off while closing: a crashed job must not commit
        self.revoked: set[Any] = set()  # given up (maybe reassigned at once)
        self.lost: set[Any] = set()  # membership lost or batches dropped: their state is void
        self.done = True  # no revoke callback waiting for its assignment
        self.error: BaseException | None = None  # raised again on the main thread

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.on_event()
        if not self.enabled or not revoked:
            return
        self.revoked |= set(revoked)
        self.done = False
        try:
            offsets = self.hand_off()
            if offsets:
                await self.committer.commit_handoff(offsets)
        except BaseException as error:
            self.error = error

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.on_event()
        self.done = True

    async def on_partitions_lost(self, lost: Any) -> None:
        """Membership lost (session expired, broker restarted): nothing can be committed, and
        in-flight results of these partitions are dropped even if they come straight back."""
        self.on_event()
        if self.enabled and lost:
            logger.warning("consumer group membership lost: %s", sorted(map(str, lost)))
            self.lost |= set(lost)

    def void(self, partitions: set[Any]) -> None:
        """Batches in flight of `partitions` were dropped: the shards hold state past the
        output, so the partitions are rebuilt (revoked and, if still ours, taken over again)."""
        self.lost |= set(partitions)

    def take_fences(self) -> Fences:
        """Called by the main thread after each poll. Records of partitions revoked or lost in a
        callback are not processed (they may have been polled before it): they are fetched
        again once the partition is assigned again. Until the rebalance completes,
        `assignment()` still lists them, so revoked partitions stay fenced until then."""
        fenced = self.revoked | self.lost
        void, self.lost = self.lost, set()
        rebalanced: set[Any] = set()
        if self.done:
            rebalanced, self.revoked = self.revoked, set()
        return Fences(fenced, void, rebalanced)

    def raise_error(self) -> None:
        """Raise, on the main thread, what a callback raised."""
        if self.error is not None:
            error, self.error = self.error, None
            raise error
