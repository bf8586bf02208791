"""Helpers for the stream integration tests: job configs, topic reading, in-process reference."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ray_deepsort.core import DeepSORTTracker, Detections
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
