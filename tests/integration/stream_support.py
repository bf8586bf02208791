"""Helpers for the stream integration tests: job configs, topic reading, in-process reference."""

from __future__ import annotations

import collections
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ray_deepsort.core import DeepSORTTracker, Detections
from ray_deepsort.pipeline.parquet import ParquetResultWriter
from ray_deepsort.stream.broker import LocalBroker
from ray_deepsort.stream.config import StreamConfig, load_config
from ray_deepsort.stream.wire import FrameMessage


@dataclass
class Topics:
    frames: str
    results: str
    dead_letters: str
    group: str


def job_config(broker: LocalBroker, topics: Topics, output: Path, *overrides: str) -> StreamConfig:
    """A job config for tests: small batches, short idle stop, no ReID unless overridden."""
    return load_config(
        None,
        [
            f"kafka.bootstrap_servers={json.dumps(broker.bootstrap_servers)}",
            f"kafka.frames_topics={json.dumps([topics.frames])}",
            f"kafka.results_topic={json.dumps(topics.results)}",
            f"kafka.dead_letter_topic={json.dumps(topics.dead_letters)}",
            f"kafka.group_id={json.dumps(topics.group)}",
            f"output.path={json.dumps(str(output))}",
            "output.fsync=false",
            'model.name="none"',
            "batch.max_frames=16",
            "batch.max_wait_ms=20",
            "batch.max_inflight_batches=3",
            "actors.num_shards=2",
            "job.max_idle_s=2",
            "job.progress_interval_s=0",
            "tracker.minimum_consecutive_frames=2",
            *overrides,
        ],
    )


def read_topic(
    bootstrap_servers: str,
    topic: str,
    expected: int,
    timeout_s: float = 20.0,
    settle_s: float = 1.0,
) -> list[Any]:
    """Every record of `topic` from the beginning: waits for `expected`, then `settle_s` more so
    that surplus (duplicate) records would be seen too."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or [])
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        consumer.seek_to_beginning()
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        while time.monotonic() < (settle_until or deadline):
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
            if len(records) >= expected and settle_until is None:
                settle_until = time.monotonic() + settle_s
        return records
    finally:
        consumer.close(autocommit=False)


def reference_tracker_ids(
    frames: list[FrameMessage], tracker_params: dict[str, Any], reid_model: Any = None
) -> dict[tuple[str, int], np.ndarray]:
    """Tracker ids of one in-process `DeepSORTTracker` per stream over the same frames.

    Frames with images are decoded here and handed to the tracker (which embeds them itself with
    `reid_model`); frames with embeddings pass them; others are motion-only.
    """
    import cv2

    trackers: dict[str, DeepSORTTracker] = {}
    expected: dict[tuple[str, int], np.ndarray] = {}
    for frame in frames:
        tracker = trackers.setdefault(
            frame.stream_id, DeepSORTTracker(reid_model=reid_model, **tracker_params)
        )
        detections = Detections(
            xyxy=frame.xyxy, confidence=frame.confidence, class_id=frame.class_id
        )
        image = None
        if frame.image is not None and reid_model is not None and frame.embeddings is None:
            image = cv2.imdecode(np.frombuffer(frame.image, np.uint8), cv2.IMREAD_COLOR)
        out = tracker.update(
            detections, frame=image, embeddings=frame.embeddings, frame_index=frame.frame_index
        )
        expected[(frame.stream_id, frame.frame_index)] = out.tracker_id
    return expected


def parquet_tracker_ids(
    output: Path,
) -> tuple[collections.Counter[tuple[str, int]], dict[tuple[str, int], dict[int, int]]]:
    """(stream, frame) -> rows in the `frames` dataset, and (stream, frame) -> {detection index:
    tracker id} from `tracks`; asserts that no box is written twice."""
    writer = ParquetResultWriter(output)
    frames = writer.read("frames")
    frame_counts = collections.Counter(
        zip(frames["stream_id"].to_pylist(), frames["frame_index"].to_pylist(), strict=True)
    )
    tracks = writer.read("tracks")
    boxes: dict[tuple[str, int], dict[int, int]] = collections.defaultdict(dict)
    for stream, frame, detection, tracker_id in zip(
        tracks["stream_id"].to_pylist(),
        tracks["frame_index"].to_pylist(),
        tracks["detection_index"].to_pylist(),
        tracks["tracker_id"].to_pylist(),
        strict=True,
    ):
        assert detection not in boxes[(stream, frame)], f"duplicate row {stream}/{frame}"
        boxes[(stream, frame)][detection] = tracker_id
    return frame_counts, boxes


def confirmed_ids(tracker_id: np.ndarray) -> dict[int, int]:
    """{detection index: tracker id} of the boxes with a confirmed track (what is written)."""
    return {int(i): int(t) for i, t in enumerate(tracker_id) if t >= 0}


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Poll `condition` every 50 ms; fail the test with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting until {what}")
        time.sleep(0.05)


# Tests that start their own `ray start --head` (about a minute each): in CI, or when asked.
starts_a_ray_head = pytest.mark.skipif(
    not (os.environ.get("RAY_DEEPSORT_TEST_JOB_SUBMIT") == "1" or os.environ.get("CI") == "true"),
    reason="set RAY_DEEPSORT_TEST_JOB_SUBMIT=1 (or CI=true) to start a Ray head",
)


def ray_cli() -> str:
    """The `ray` command of this venv (the job's `python` must have the project installed)."""
    candidate = Path(sys.executable).with_name("ray")
    return str(candidate) if candidate.exists() else shutil.which("ray") or "ray"


def wait_for_dashboard(url: str, timeout_s: float) -> None:
    """Until a Ray head's dashboard answers (401 without the auth token counts as up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"Ray dashboard at {url} did not come up in {timeout_s}s")
