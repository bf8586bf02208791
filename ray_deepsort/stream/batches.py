"""Micro-batches from poll to finish: decoding, embed requests, shard calls, the in-flight window.

`BatchWindow.submit` turns the polled records into one `Batch`. Each record is decoded and
validated (`decode_frame`, up to `kafka.max_message_bytes`); a `WireFormatError` makes it a dead
letter. Frames that need ReID are grouped across streams into embed requests of at most
`batch.max_embed_crops` crops, spread over the embedders least-loaded first, and every tracker
shard gets its frames in order together with the embed requests' ObjectRefs, so Ray runs
embedding and tracking as a pipeline without the driver waiting in between. Records below a
restored checkpoint's committed offset are tracked again only to rebuild tracker state: they
count for nothing and give no output, not even dead letters.

Batches finish in order: `pop_ready` hands out the oldest once all its shard calls returned, and
`Batch.output` keeps what may be written (partitions still owned, records not replayed).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ray_deepsort.pipeline.inflight import InflightWindow, ray_get, ray_wait
from ray_deepsort.pipeline.requests import FrameRecord, plan_requests
from ray_deepsort.pipeline.types import FrameResult, ShardOutput, SourcePosition, TrackRequest
from ray_deepsort.stream.config import StreamConfig
from ray_deepsort.stream.kafka_clients import lowest_offsets, partition_of, topic_partition
from ray_deepsort.stream.ledger import PartitionLedger
from ray_deepsort.stream.sink import DeadLetter
from ray_deepsort.stream.snapshots import CheckpointCoordinator, ShardStates
from ray_deepsort.stream.wire import FrameMessage, WireFormatError, decode_frame

if TYPE_CHECKING:
    from ray_deepsort.pipeline.actors import JobActors


@dataclass(frozen=True)
class RayCalls:
    """How the driver waits for and fetches actor results: Ray's, or a unit test's stand-ins."""

    wait: Callable[[list[Any], int, float | None], tuple[list[Any], list[Any]]] = ray_wait
    get: Callable[[list[Any]], list[Any]] = ray_get


@dataclass
class Batch:
    """A micro-batch between submission and commit."""

    batch_id: int
    started: float  # perf_counter when it was submitted (the "batch" stage latency)
    records: dict[tuple[str, int, int], Any]  # (topic, partition, offset) -> record
    dead: list[DeadLetter]  # records that failed decoding
    shard_refs: list[Any]  # one `process` call per shard with frames
    first_offsets: dict[Any, int]  # partition -> first new offset (names the Parquet files)
    last_offsets: dict[Any, int]  # partition -> last new offset (committed past it)
    decode_s: float
    revoked: set[Any] = field(default_factory=set)  # partitions lost while in flight
    seen_last: dict[Any, int] = field(default_factory=dict)  # incl. replayed records
    replay_below: dict[Any, int] = field(default_factory=dict)  # output only from here on
    states: ShardStates | None = None  # shard states after this batch (checkpoint snapshot)
    consumed: int = 0  # records counted in `records_seen` (replayed ones are not)

    def output(
        self, outputs: list[ShardOutput], owned: set[Any]
    ) -> tuple[list[FrameResult], list[DeadLetter]]:
        """The results (in partition order) and dead letters to write: those of `owned`
        partitions and not replayed. Frames a shard could not track become dead letters."""
        dead = list(self.dead)
        results: list[FrameResult] = []
        for shard_output in outputs:
            results.extend(shard_output.results)
            for failure in shard_output.failures:
                position = failure.position
                record = self.records[(position.source, position.partition, position.offset)]
                dead.append(DeadLetter(record, failure.reason))
        results = [
            r
            for r in results
            if partition_of(r.position) in owned
            and r.position.offset >= self.replay_below.get(partition_of(r.position), -1)
        ]
        dead = [
            d
            for d in dead
            if (tp := topic_partition(d.record.topic, d.record.partition)) in owned
            and d.record.offset >= self.replay_below.get(tp, -1)
        ]
        results.sort(key=lambda r: (r.position.source, r.position.partition, r.position.offset))
        return results, dead


def first_offsets(batches: list[Batch]) -> dict[Any, int]:
    """Partition -> the first offset of any of `batches`, replayed records included (where a
    replay of them starts); its keys are every partition the batches sent frames of."""
    return lowest_offsets(position for batch in batches for position in batch.records)


class BatchWindow:
    """Submits batches to the actors and holds them, in order, until they are finished.

    At most `batch.max_inflight_batches` are in flight; the driver enforces it.
    """

    def __init__(
        self,
        config: StreamConfig,
        pool: JobActors,
        checkpoint: CheckpointCoordinator,
        ledger: PartitionLedger,
        ray_calls: RayCalls,
    ) -> None:
        self.config = config
        self.pool = pool
        self.checkpoint = checkpoint
        self.ledger = ledger  # the streams seen per partition are recorded there
        self.ray_calls = ray_calls
        self.inflight: InflightWindow[Batch] = InflightWindow(
            config.batch.max_inflight_batches,
            lambda batch: batch.shard_refs,
            ray_calls.wait,
            ray_calls.get,
        )
        self.submitted = 0  # batch ids; dropped batches are polled again and not counted
        self.records_seen = 0  # new records submitted (replayed ones are not)
        self.embed_requests = 0
        self.embed_crops = 0
        self.owner = uuid.uuid4().hex  # this ingest worker, on every frame it sends a shard

    def submit(self, records: list[Any], polled_at: float) -> Batch:
        """Decode `records` (polled at monotonic `polled_at`) and send their frames to the
        embedders and shards; the batch joins the window."""
        started = time.perf_counter()
        self.submitted += 1
        records_before = self.records_seen
        dead: list[DeadLetter] = []
        frames: list[tuple[Any, FrameMessage]] = []
        first: dict[Any, int] = {}
        last: dict[Any, int] = {}
        by_position: dict[tuple[str, int, int], Any] = {}
        seen_last: dict[Any, int] = {}
        replay_below: dict[Any, int] = {}
        for record in records:
            tp = topic_partition(record.topic, record.partition)
            seen_last[tp] = record.offset
            committed_below = self.checkpoint.replay_limit(tp, record.offset)
            replaying = committed_below is not None
            if replaying:
                # Already in the output: tracked again only to rebuild tracker state.
                replay_below[tp] = committed_below
            else:
                self.records_seen += 1
                first.setdefault(tp, record.offset)
                last[tp] = record.offset
            by_position[(record.topic, record.partition, record.offset)] = record
            try:
                frame = decode_frame(
                    record.value,
                    record.key,
                    max_message_bytes=self.config.kafka.max_message_bytes,
                )
            except WireFormatError as error:
                if not replaying:
                    dead.append(DeadLetter(record, error.reason))
                continue
            frames.append((record, frame))
            self.ledger.stream_seen(tp, frame.stream_id)
            self.checkpoint.frame_submitted(tp, frame.stream_id, record.offset, polled_at)
        decode_s = time.perf_counter() - started
        shard_refs = self._track(frames)
        batch = Batch(
            batch_id=self.submitted,
            started=started,
            records=by_position,
            dead=dead,
            shard_refs=shard_refs,
            first_offsets=first,
            last_offsets=last,
            decode_s=decode_s,
            seen_last=seen_last,
            replay_below=replay_below,
            states=self.checkpoint.states_after_batch(self.submitted),
            consumed=self.records_seen - records_before,
        )
        self.inflight.append(batch)
        return batch

    def _track(self, frames: list[tuple[Any, FrameMessage]]) -> list[Any]:
        """One `process` call per shard with its frames in order (and the embed requests they
        need, planned by `pipeline.requests`); returns the calls' refs."""
        embedders = self.pool.embedders if self.config.reid_enabled else []
        plan = plan_requests(
            [self._record(record, frame) for record, frame in frames],
            num_shards=len(self.pool.shards),
            num_embedders=len(embedders),
            max_embed_crops=self.config.batch.max_embed_crops,
        )
        embed_refs = [
            embedders[request.embedder].embed_coalesced.remote(request.items)
            for request in plan.embed_requests
        ]
        self.embed_requests += len(plan.embed_requests)
        self.embed_crops += sum(request.crops for request in plan.embed_requests)
        return [
            self.pool.shards[shard].process.remote(
                self.pool.shard_incarnations[shard],
                requests,
                *[embed_refs[r] for r in plan.embed_inputs[shard]],
            )
            for shard, requests in plan.track_requests.items()
        ]

    def _record(self, record: Any, frame: FrameMessage) -> FrameRecord:
        request = TrackRequest(
            stream_id=frame.stream_id,
            frame_index=frame.frame_index,
            timestamp=frame.timestamp,
            xyxy=frame.xyxy,
            confidence=frame.confidence,
            class_id=frame.class_id,
            position=SourcePosition(record.topic, record.partition, record.offset),
            frame_shape=None if frame.width is None else (frame.height, frame.width),
            embeddings=frame.embeddings,
            restore=self.checkpoint.take_restore(frame.stream_id),
            owner=self.owner,
        )
        return FrameRecord(request, frame.image, frame.image_format)

    def crops_per_request(self) -> float:
        return self.embed_crops / self.embed_requests if self.embed_requests else 0.0

    # ------------------------------------------------------------------ finishing, dropping
    def pop_ready(
        self, block: bool, timeout: float | None = None
    ) -> tuple[Batch, list[ShardOutput]] | None:
        """The oldest batch and its shard outputs once every shard call returned (waiting for
        them when `block`, else up to `timeout` seconds); None when not yet, or none in flight.

        A dead shard raises here, before anything of the batch is written: it stays in flight
        for the driver's actor recovery.
        """
        return self.inflight.pop_ready(block, timeout)

    def revoke(self, lost: set[Any]) -> None:
        """`lost` partitions were revoked: their results in flight must not be written even if
        the partition comes back (it is then replayed from the committed offset)."""
        for batch in self.inflight:
            batch.revoked |= lost

    def drop_all(self) -> list[Batch]:
        """Forget every batch in flight (an actor failed, or the group rebalances): they are
        polled again, so neither they nor their records count as submitted."""
        dropped = self.inflight.clear()
        self.submitted -= len(dropped)
        self.records_seen -= sum(batch.consumed for batch in dropped)
        return dropped
