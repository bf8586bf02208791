"""Small fakes for unit tests of the stream driver (`StreamJob`) without Kafka or Ray."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from kafka.structs import TopicPartition

from ray_deepsort.pipeline import ParquetResultWriter
from ray_deepsort.pipeline.parquet import batch_file_stem
from ray_deepsort.pipeline.state_store import stream_file_name
from ray_deepsort.pipeline.types import FrameResult, SourcePosition
from ray_deepsort.stream.config import load_config
from ray_deepsort.stream.job import StreamJob
from ray_deepsort.stream.metrics import JobMetrics
from ray_deepsort.stream.snapshots import CheckpointCoordinator

Record = namedtuple("Record", "topic partition offset key value")
P0, P1, P2 = (TopicPartition("frames", k) for k in range(3))


class FakeConsumer:
    """Assignment, committed offsets (a commit updates them), and every seek and commit made."""

    def __init__(self, committed: dict[Any, int | None]) -> None:
        self.assigned: set[Any] = set()
        self.committed_offsets = dict(committed)
        self.seeks: list[tuple[Any, int | str]] = []
        self.commits: list[dict[Any, int]] = []
        self.commit_error: Exception | None = None
        self.start_positions: dict[Any, int] = {}  # auto_offset_reset result; 0 if absent

    def assignment(self) -> set[Any]:
        return set(self.assigned)

    def committed(self, tp: Any) -> int | None:
        return self.committed_offsets.get(tp)

    def commit(self, offsets: dict[Any, Any], timeout_ms: int | None = None) -> None:
        if self.commit_error is not None:
            raise self.commit_error
        committed = {tp: meta.offset for tp, meta in offsets.items()}
        self.commits.append(committed)
        self.committed_offsets.update(committed)

    def position(self, tp: Any, timeout_ms: int | None = None) -> int:
        return self.start_positions.get(tp, 0)

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))

    def seek_to_beginning(self, *partitions: Any) -> None:
        self.seeks.extend((tp, "beginning") for tp in partitions)


class _Recorder:
    """`actor.method.remote(*args)` stand-in: records the arguments of every call and returns
    `answer(*args)` (the arguments themselves without `answer`)."""

    def __init__(self, answer: Callable[..., Any] | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._answer = answer

    def remote(self, *args: Any) -> Any:
        self.calls.append(args)
        return args if self._answer is None else self._answer(*args)


class FakeShard:
    """Records `drop_streams`, `state_dict` and `write_checkpoints` calls; `write_checkpoints`
    answers with the file names a shard writes for the streams it is given (no files)."""

    def __init__(self) -> None:
        self.drop_streams = _Recorder()
        self.state_dict = _Recorder()
        self.write_checkpoints = _Recorder(
            lambda states, due: {stream_id: stream_file_name(stream_id) for stream_id in due}
        )

    @property
    def dropped(self) -> list[list[str]]:
        return [args[0] for args in self.drop_streams.calls]


class FakePool:
    """Two shards; `await_shards` plays shard 0 coming back with a new incarnation."""

    def __init__(self) -> None:
        self.shards = [FakeShard(), FakeShard()]
        self.shard_incarnations = ["a0", "b0"]
        self.restarts = 0

    def await_shards(self, timeout_s: float) -> None:
        self.restarts += 1
        self.shard_incarnations = [f"a{self.restarts}", "b0"]


def make_job(tmp_path: Path, consumer: FakeConsumer, *overrides: str) -> StreamJob:
    """A `StreamJob` with its run-time state, a real Parquet writer and the fakes above."""
    job = StreamJob(load_config(None, [f'output.path="{tmp_path}"', *overrides]))
    job._init_state()
    job.consumer = consumer
    job.writer = ParquetResultWriter(tmp_path)
    job.metrics = JobMetrics(enabled=False)
    job.pool = FakePool()  # type: ignore[assignment]
    job.checkpoint = CheckpointCoordinator(job.config, job.pool, job.summary)
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
