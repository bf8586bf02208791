"""Small fakes for unit tests of an ingest worker (`PartitionWorker`) and its pieces, without
Kafka or Ray: a consumer, a producer, actors, and `RayCalls` that resolve the fakes' answers at
once.

`make_job` builds a `PartitionWorker` through its public `open`, as `run` does on the job's
actors.
"""

from __future__ import annotations

from collections import defaultdict, namedtuple
from collections.abc import Callable
from typing import Any

import numpy as np
from kafka.structs import TopicPartition

from ray_deepsort.pipeline import ParquetResultWriter
from ray_deepsort.pipeline.parquet import batch_file_stem
from ray_deepsort.pipeline.state_store import stream_file_name
from ray_deepsort.pipeline.types import FrameResult, ShardOutput, SourcePosition, TrackRequest
from ray_deepsort.stream.batches import RayCalls
from ray_deepsort.stream.config import load_config
from ray_deepsort.stream.wire import FrameMessage, encode_frame
from ray_deepsort.stream.worker import PartitionWorker

Record = namedtuple("Record", "topic partition offset key value")
P0, P1, P2 = (TopicPartition("frames", k) for k in range(3))


def frame_record(partition: int, offset: int, stream_id: str = "cam0") -> Record:
    """A valid frame message (one box) of `stream_id` at `offset` of frames[`partition`]."""
    frame = FrameMessage(
        stream_id,
        offset,
        1_732_500_000.0 + offset,
        np.array([[10, 10, 50, 90]], np.float32),
        np.array([0.9], np.float32),
        np.zeros(1, np.int64),
    )
    return Record("frames", partition, offset, stream_id.encode(), encode_frame(frame))


class FakeConsumer:
    """Assignment, committed offsets (a commit updates them), every seek and commit made, and
    polls answered from `to_poll` (one list of records per poll, then nothing)."""

    def __init__(self, committed: dict[Any, int | None]) -> None:
        self.assigned: set[Any] = set()
        self.committed_offsets = dict(committed)
        self.seeks: list[tuple[Any, int | str]] = []
        self.commits: list[dict[Any, int]] = []
        self.async_commits: list[dict[Any, int]] = []
        self.commit_error: Exception | None = None
        self.on_commit: Callable[[dict[Any, int]], None] | None = None  # sees each commit first
        self.start_positions: dict[Any, int] = {}  # auto_offset_reset result; 0 if absent
        self.to_poll: list[list[Record]] = []
        self.polls = 0
        self.listener: Any = None

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Record]]:
        self.polls += 1
        polled: dict[Any, list[Record]] = defaultdict(list)
        for record in self.to_poll.pop(0) if self.to_poll else []:
            polled[TopicPartition(record.topic, record.partition)].append(record)
        return polled

    def assignment(self) -> set[Any]:
        return set(self.assigned)

    def committed(self, tp: Any) -> int | None:
        return self.committed_offsets.get(tp)

    def commit(self, offsets: dict[Any, Any], timeout_ms: int | None = None) -> None:
        if self.commit_error is not None:
            raise self.commit_error
        committed = {tp: meta.offset for tp, meta in offsets.items()}
        if self.on_commit is not None:
            self.on_commit(committed)
        self.commits.append(committed)
        self.committed_offsets.update(committed)

    async def commit_async(self, offsets: dict[Any, Any]) -> None:
        committed = {tp: meta.offset for tp, meta in offsets.items()}
        self.async_commits.append(committed)
        self.committed_offsets.update(committed)

    def position(self, tp: Any, timeout_ms: int | None = None) -> int:
        return self.start_positions.get(tp, 0)

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))

    def seek_to_beginning(self, *partitions: Any) -> None:
        self.seeks.extend((tp, "beginning") for tp in partitions)

    def highwater(self, tp: Any) -> int | None:
        return None

    def close(self, autocommit: bool = False) -> None:
        pass


class FakeFuture:
    """A send's future: "ok" and "failed" are done at once, "pending" once a flush delivers."""

    def __init__(self, outcome: str) -> None:
        from kafka.errors import KafkaTimeoutError

        self.is_done = outcome != "pending"
        self.exception = KafkaTimeoutError("expired") if outcome == "failed" else None

    def failed(self) -> bool:
        return self.exception is not None


class FakeProducer:
    """Answers each send with the next outcome: "ok", "failed", "pending" (until a flush that
    `delivers`), or an exception to raise. `messages`: (topic, key, value, headers) sent."""

    def __init__(self, outcomes: list[Any], delivers: bool = True) -> None:
        self.outcomes = outcomes
        self.delivers = delivers
        self.sent: list[bytes] = []
        self.messages: list[tuple[str, bytes | None, bytes | None, Any]] = []
        self.futures: list[FakeFuture] = []
        self.closed = False

    def send(self, topic: str, key: bytes, value: bytes, headers: Any) -> FakeFuture:
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if isinstance(outcome, Exception):
            raise outcome
        self.sent.append(value)
        self.messages.append((topic, key, value, headers))
        self.futures.append(FakeFuture(outcome))
        return self.futures[-1]

    def flush(self, timeout: float) -> None:
        from kafka.errors import KafkaTimeoutError

        pending = [f for f in self.futures if not f.is_done]
        if pending and not self.delivers:
            self.delivers = True  # the broker is back for the next flush
            raise KafkaTimeoutError("Timeout waiting for future")
        for future in pending:
            future.is_done = True

    def acknowledged(self) -> bool:
        """Whether the broker acknowledged everything sent so far."""
        return all(f.is_done and not f.failed() for f in self.futures)

    def close(self, timeout: float) -> None:
        self.closed = True


class _Recorder:
    """`actor.method.remote(*args)` stand-in: records the arguments of every call and returns
    `answer(*args)` (the arguments themselves without `answer`)."""

    def __init__(self, answer: Callable[..., Any] | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.answer = answer

    def remote(self, *args: Any) -> Any:
        self.calls.append(args)
        return args if self.answer is None else self.answer(*args)


class FakeShard:
    """Records `process`, `drop_streams`, `drop_partitions`, `state_dict` and
    `write_checkpoints` calls.

    `process` tracks every frame as one confirmed track (id 1 per box), or answers once with
    `errors[offset]` when a frame at that offset is in the call (`FAKE_RAY.get` raises it);
    `write_checkpoints` answers with the file names a shard writes (no files).
    """

    def __init__(self) -> None:
        self.errors: dict[int, BaseException] = {}
        self.process = _Recorder(self._track)
        self.drop_streams = _Recorder()
        self.drop_partitions = _Recorder()
        self.state_dict = _Recorder()
        self.write_checkpoints = _Recorder(
            lambda states, due: {stream_id: stream_file_name(stream_id) for stream_id in due}
        )

    def _track(self, incarnation: str, requests: list[TrackRequest], *embeds: Any) -> Any:
        for request in requests:
            if request.position.offset in self.errors:
                return self.errors.pop(request.position.offset)
        return ShardOutput(
            results=[
                FrameResult(
                    r.stream_id,
                    r.frame_index,
                    r.timestamp,
                    r.xyxy,
                    r.confidence,
                    r.class_id,
                    np.ones(len(r.xyxy), np.int64),
                    r.position,
                )
                for r in requests
            ]
        )

    @property
    def dropped(self) -> list[list[str]]:
        return [args[0] for args in self.drop_streams.calls]

    @property
    def requests(self) -> list[TrackRequest]:
        """Every frame sent to this shard, in order."""
        return [request for call in self.process.calls for request in call[1]]


class FakePool:
    """Two shards, no embedders; `await_shards` plays shard 0 coming back with a new
    incarnation."""

    def __init__(self) -> None:
        self.shards = [FakeShard(), FakeShard()]
        self.embedders: list[Any] = []
        self.shard_incarnations = ["a0", "b0"]
        self.restarts = 0
        self.killed = False

    def await_shards(self, timeout_s: float) -> None:
        self.restarts += 1
        self.shard_incarnations = [f"a{self.restarts}", "b0"]

    def kill(self) -> None:
        self.killed = True


def _resolve(refs: list[Any]) -> list[Any]:
    """`ray.get` of the fakes' answers: an exception among them is raised, as Ray does."""
    for ref in refs:
        if isinstance(ref, BaseException):
            raise ref
    return list(refs)


FAKE_RAY = RayCalls(wait=lambda refs, num_returns, timeout: (list(refs), []), get=_resolve)


def make_job(
    tmp_path: Any, consumer: FakeConsumer, *overrides: str, producer: FakeProducer | None = None
) -> PartitionWorker:
    """A `PartitionWorker` opened on the fakes above (a real Parquet writer under `tmp_path`)."""
    config = load_config(
        None, [f'output.path="{tmp_path}"', "output.fsync=false", "job.metrics=false", *overrides]
    )
    job = PartitionWorker(
        config,
        consumer_factory=lambda _: consumer,
        producer_factory=lambda _: producer if producer is not None else FakeProducer([]),
    )
    job.open(FakePool(), FAKE_RAY)  # type: ignore[arg-type]
    return job


def write_result_file(writer: ParquetResultWriter, partition: int, offset: int) -> None:
    """One frame's Parquet file, as a finished batch starting at `offset` leaves it."""
    result = FrameResult(
        "cam",
        offset,
        1_732_500_000.0,
        np.array([[0, 0, 5, 5]], np.float32),
        np.ones(1, np.float32),
        np.zeros(1, np.int64),
        np.array([1]),
        SourcePosition("frames", partition, offset),
    )
    writer.write(batch_file_stem("frames", partition, offset), [result])
