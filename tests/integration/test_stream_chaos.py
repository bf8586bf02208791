"""Chaos: an ingest worker, tracker shards and an embedder killed while frames flow; the
output stays exact."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from stream_support import Topics, job_config, read_topic, reference_tracker_ids

from ray_deepsort.pipeline.parquet import ParquetResultWriter
from ray_deepsort.pipeline.sharding import shard_of
from ray_deepsort.stream.broker import LocalBroker
from ray_deepsort.stream.job import StreamJob
from ray_deepsort.stream.publish import FramePublisher, PublishStats, publish, synthetic_frames
from ray_deepsort.stream.wire import FrameMessage, decode_result

pytestmark = pytest.mark.integration

# cam0..cam3 hash to tracker shard 0 and cam4 to shard 1: every shard kill hits live state.
PARTITIONS = {"cam0": 0, "cam1": 1, "cam2": 2, "cam3": 0, "cam4": 1}
STREAMS, FRAMES = 5, 48
REID_INPUT = (128, 64)
# (box values, tracker id) per detection index: what the Parquet rows and messages must hold.
Rows = dict[int, tuple[tuple[float, ...], int]]


def _expected_rows(frames: list[FrameMessage], tracker_ids: dict) -> dict[tuple[str, int], Rows]:
    expected: dict[tuple[str, int], Rows] = {}
    for frame in frames:
        ids = tracker_ids[(frame.stream_id, frame.frame_index)]
        expected[(frame.stream_id, frame.frame_index)] = {
            i: (
                (*np.asarray(frame.xyxy[i], np.float32).tolist(), float(frame.confidence[i])),
                int(ids[i]),
            )
            for i in np.flatnonzero(ids >= 0).tolist()
        }
    return expected


def _reference_ids(frames: list[FrameMessage], tracker_params: dict[str, Any]) -> dict:
    """One uninterrupted in-process tracker per stream with the same CNN, on one torch thread:
    passes of a few crops gain nothing from more, and spinning threads slow down a lot when
    the cores are busy with other work."""
    import torch

    from ray_deepsort.pipeline.embedder import ModelChoice, load_reid_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = load_reid_model(ModelChoice(device="cpu", input_size=REID_INPUT))
        return reference_tracker_ids(frames, tracker_params, model)
    finally:
        torch.set_num_threads(threads)


def _parquet_rows(output: Path) -> tuple[collections.Counter, dict[tuple[str, int], Rows]]:
    writer = ParquetResultWriter(output)
    frames = writer.read("frames")
    counts = collections.Counter(
        zip(frames["stream_id"].to_pylist(), frames["frame_index"].to_pylist(), strict=True)
    )
    tracks = writer.read("tracks").to_pydict()
    rows: dict[tuple[str, int], Rows] = collections.defaultdict(dict)
    for k in range(len(tracks["stream_id"])):
        key = (tracks["stream_id"][k], tracks["frame_index"][k])
        detection = tracks["detection_index"][k]
        assert detection not in rows[key], f"duplicate row {key}/{detection}"
        box = tuple(tracks[c][k] for c in ("x1", "y1", "x2", "y2", "confidence"))
        rows[key][detection] = (box, tracks["tracker_id"][k])
    return counts, rows


def _message_rows(message: dict[str, Any]) -> Rows:
    return {
        t["detection_index"]: ((*t["xyxy"], t["confidence"]), t["tracker_id"])
        for t in message["tracks"]
    }


def _publish_live(
    job: StreamJob,
    broker: LocalBroker,
    topic: str,
    frames: list[FrameMessage],
    stopped: threading.Event,
) -> PublishStats:
    """Send the frames at a tenth of real time once the job consumes (1.6 s of video per stream
    over ~16 s): every poll then holds frames of every partition, and kills hit all streams."""
    while not job.summary.started and not stopped.wait(0.05):
        pass
    with FramePublisher(broker.bootstrap_servers, topic) as publisher:
        return publish(frames, publisher, partitions=PARTITIONS, realtime=True, speed=0.1)


class Chaos(threading.Thread):
    """Kills a random ingest worker (the driver replaces it), tracker shard or the embedder (Ray
    restarts them) at seeded random moments once the job has finished a few batches; after a
    worker or shard kill it waits for the job to notice before the next kill, so every kill
    hits a running pipeline."""

    def __init__(self, job: StreamJob, schedule: list[str], seed: int) -> None:
        super().__init__(daemon=True)
        self.job, self.schedule, self.rng = job, schedule, np.random.default_rng(seed)
        self.kills: list[tuple[str, int, int]] = []  # (kind, actor index, batches finished)
        self.error: BaseException | None = None
        self.stopped = threading.Event()

    def _wait(
        self, condition: Callable[[], bool], timeout_s: float = 60.0, required: bool = True
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if self.stopped.is_set() or time.monotonic() > deadline:
                if not required and not self.stopped.is_set():
                    return
                raise TimeoutError("the job did not get there")
            time.sleep(0.01)

    def run(self) -> None:
        import ray

        try:
            self._wait(lambda: hasattr(self.job, "pool") and self.job.summary.batches >= 2)
            for kind in self.schedule:
                target = self.job.summary.batches + int(self.rng.integers(1, 4))
                self._wait(lambda t=target: self.job.summary.batches >= t)
                time.sleep(float(self.rng.uniform(0.0, 0.4)))  # somewhere inside a batch
                # Preferably with work in flight (the driver sees it every 0.25 s only).
                self._wait(lambda: self.job.summary.inflight > 0, timeout_s=2.0, required=False)
                actors = {
                    "shard": self.job.pool.shards,
                    "embedder": self.job.pool.embedders,
                    "ingest": [worker.actor for worker in self.job.running],
                }[kind]
                index = int(self.rng.integers(len(actors)))
                recoveries = self.job.summary.actor_recoveries
                restarts = self.job.summary.ingest_restarts
                self.kills.append((kind, index, self.job.summary.batches))
                ray.kill(actors[index], no_restart=kind == "ingest")
                if kind == "shard":
                    self._wait(lambda r=recoveries: self.job.summary.actor_recoveries > r)
                if kind == "ingest":
                    self._wait(lambda r=restarts: self.job.summary.ingest_restarts > r)
        except BaseException as error:  # reported by the test
            self.error = error


@pytest.mark.slow
def test_killed_actors_change_nothing_in_the_output(
    broker: LocalBroker, ray_local: None, topics: Topics, tmp_path: Path
) -> None:
    """5 streams x 48 JPEG frames through the real CNN, 2 ingest workers, checkpoints every
    batch; an ingest worker, two tracker shards and the embedder killed at random moments:
    every frame is written to Parquet once, with the boxes and track ids of one uninterrupted
    in-process tracker per stream; the results topic holds every frame with the same tracks
    (at least once: the killed worker may have sent results it had not committed)."""
    _, generator = synthetic_frames(
        STREAMS, FRAMES, objects=8, width=480, height=270, start_time=1_732_500_000.0
    )
    frames = list(generator)
    total = len(frames)
    config = job_config(
        broker,
        topics,
        tmp_path / "out",
        'model.name="mobilenetv2_100"',
        f"model.input_height={REID_INPUT[0]}",
        f"model.input_width={REID_INPUT[1]}",
        "batch.max_frames=8",
        "batch.max_embed_crops=16",
        "checkpoint.every_batches=1",
        f"job.expected_frames={total}",
        "job.max_idle_s=30",
        "actors.ingest_workers=2",
    )
    job = StreamJob(config)
    chaos = Chaos(job, ["ingest", "shard", "embedder", "shard"], seed=5)
    with ThreadPoolExecutor(1) as executor:
        live = executor.submit(_publish_live, job, broker, topics.frames, frames, chaos.stopped)
        chaos.start()
        try:
            summary = job.run()
        finally:
            chaos.stopped.set()
            chaos.join(timeout=10)
        assert live.result().frames == total
    assert chaos.error is None, chaos.error
    kinds = collections.Counter(kind for kind, _, _ in chaos.kills)
    assert kinds == {"ingest": 1, "shard": 2, "embedder": 1}
    # Kills hit a running pipeline: each shard kill was recovered from, the dead worker was
    # replaced, and all happened before the last frames were in.
    assert summary.actor_recoveries >= 2 and summary.ingest_restarts == 1
    assert all(batches < summary.batches for _, _, batches in chaos.kills)
    assert {shard_of(f"cam{k}", len(job.pool.shards)) for k in range(STREAMS)} == {0, 1}
    assert summary.dead_letters == 0
    assert sum(summary.committed.values()) == total

    expected = _expected_rows(frames, _reference_ids(frames, config.tracker.params()))
    assert sum(len(rows) for rows in expected.values()) > 400  # real tracks, not empty frames
    counts, rows = _parquet_rows(tmp_path / "out")
    assert set(counts) == set(expected) and set(counts.values()) == {1}
    for key, want in expected.items():
        assert rows.get(key, {}) == want, key

    records = read_topic(broker.bootstrap_servers, topics.results, total)
    messages = [decode_result(record.value) for record in records]
    keys = collections.Counter((m["stream_id"], m["frame_index"]) for m in messages)
    assert set(keys) == set(expected), "missing frames"
    for message in messages:
        assert _message_rows(message) == expected[(message["stream_id"], message["frame_index"])]
