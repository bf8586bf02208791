"""The stream job against a real broker and a real local Ray (acceptance 1-3)."""

from __future__ import annotations

import collections
import json
import logging
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from stream_support import (
    Topics,
    confirmed_ids,
    job_config,
    parquet_tracker_ids,
    read_topic,
    reference_tracker_ids,
)

from ray_deepsort.core import is_default
from ray_deepsort.pipeline.parquet import ParquetResultWriter, parse_batch_file_stem
from ray_deepsort.pipeline.state_store import CheckpointStore
from ray_deepsort.stream.broker import LocalBroker
from ray_deepsort.stream.job import SimulatedCrash, StreamJob
from ray_deepsort.stream.publish import FramePublisher, make_frame, publish, synthetic_frames
from ray_deepsort.stream.wire import FrameMessage, decode_result, encode_frame

pytestmark = pytest.mark.integration

PARTITIONS = {"cam0": 0, "cam1": 1, "cam2": 2, "cam3": 0}


def _synthetic(cameras: int, frames: int, **kwargs: Any) -> list[FrameMessage]:
    _, generator = synthetic_frames(
        cameras, frames, objects=12, width=480, height=270, start_time=1_732_500_000.0, **kwargs
    )
    return list(generator)


def _publish(broker: LocalBroker, topic: str, frames: list[FrameMessage]) -> None:
    with FramePublisher(broker.bootstrap_servers, topic) as publisher:
        publish(frames, publisher, partitions=PARTITIONS)


def _check_results_topic(
    broker: LocalBroker, topic: str, expected: dict[tuple[str, int], np.ndarray] | set
) -> list[dict]:
    records = read_topic(broker.bootstrap_servers, topic, len(expected))
    messages = [decode_result(r.value) for r in records]
    for record, message in zip(records, messages, strict=True):
        assert record.key == message["stream_id"].encode()
    keys = collections.Counter((m["stream_id"], m["frame_index"]) for m in messages)
    assert set(keys) == set(expected), "results topic misses or invents frames"
    return messages


def test_every_frame_once_and_same_ids_as_in_process(
    broker: LocalBroker,
    ray_local: None,
    topics: Topics,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Acceptance 1: 4 streams x 100 frames (3 with precomputed embeddings, 1 motion-only)."""
    with_embeddings = _synthetic(3, 100, image_format="none", embeddings="identity")
    _, motion_only = synthetic_frames(
        1,
        100,
        objects=12,
        width=480,
        height=270,
        seed=7,
        image_format="none",
        start_time=1_732_500_000.0,
    )
    motion = [FrameMessage(**{**frame.__dict__, "stream_id": "cam3"}) for frame in motion_only]
    frames = with_embeddings + motion
    _publish(broker, topics.frames, frames)
    config = job_config(
        broker, topics, tmp_path / "out", "job.expected_frames=400", "job.progress_interval_s=0.2"
    )

    with caplog.at_level(logging.INFO, logger="ray_deepsort.stream"):
        summary = StreamJob(config).run()

    assert summary.frames == 400 and summary.dead_letters == 0
    assert summary.stop_reason == "expected_frames=400"
    assert summary.batches >= 400 // 16
    assert sum(summary.committed.values()) == 400
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    assert progress and "fps frames=" in progress[-1] and "lag=" in progress[-1]
    expected = reference_tracker_ids(frames, config.tracker.params())
    frame_counts, boxes = parquet_tracker_ids(tmp_path / "out")
    assert set(frame_counts) == set(expected) and set(frame_counts.values()) == {1}
    confirmed_total = 0
    for key, tracker_id in expected.items():
        assert boxes.get(key, {}) == confirmed_ids(tracker_id), key
        confirmed_total += len(confirmed_ids(tracker_id))
    assert confirmed_total > 1500  # the comparison is about real tracks, not empty frames
    messages = _check_results_topic(broker, topics.results, expected)
    assert len(messages) == 400  # a clean run sends each frame exactly once
    for message in messages:
        tracker_id = expected[(message["stream_id"], message["frame_index"])]
        assert {t["detection_index"]: t["tracker_id"] for t in message["tracks"]} == confirmed_ids(
            tracker_id
        )
    assert not read_topic(broker.bootstrap_servers, topics.dead_letters, 0, timeout_s=0.5)


def _corrupt_but_well_formed_jpeg(width: int, height: int) -> bytes:
    """Passes the structural checks (SOI, SOF with the declared size, EOI) but cannot decode."""
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return (
        b"\xff\xd8" + sof + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + b"\x13" * 64 + b"\xff\xd9"
    )


@pytest.mark.slow
def test_dead_letters_and_real_cnn(
    broker: LocalBroker, ray_local: None, topics: Topics, tmp_path: Path
) -> None:
    """Acceptance 2 with the real ReID CNN: malformed messages are dead-lettered with a reason,
    the valid frames around them are tracked exactly as in-process trackers track them."""
    from ray_deepsort.pipeline.embedder import ModelChoice, load_reid_model

    frames = _synthetic(2, 30, image_format="jpeg")
    truncated_source = next(f for f in frames if (f.stream_id, f.frame_index) == ("cam1", 10))
    corrupt_source = next(f for f in frames if (f.stream_id, f.frame_index) == ("cam1", 20))
    truncated = FrameMessage(
        **{
            **truncated_source.__dict__,
            "image": truncated_source.image[: len(truncated_source.image) // 2],
        }
    )
    corrupt = FrameMessage(
        **{**corrupt_source.__dict__, "image": _corrupt_but_well_formed_jpeg(480, 270)}
    )
    valid = encode_frame(frames[4])
    bad_box = make_frame(
        "cam0",
        999,
        0.0,
        type(
            "D", (), {"xyxy": np.array([[50, 50, 10, 10]]), "confidence": None, "class_id": None}
        )(),
    )
    malformed = {
        "bad_magic": (b"cam0", np.random.default_rng(0).bytes(300)),
        "unsupported_version": (b"cam0", valid[:4] + b"\x07" + valid[5:]),
        "bad_box": (b"cam0", encode_frame(bad_box)),
        "key_mismatch": (b"cam1", valid),
    }
    publisher = FramePublisher(broker.bootstrap_servers, topics.frames)
    sent: dict[str, Any] = {}
    for position, frame in enumerate(frames):
        if frame is truncated_source:
            frame = truncated
        elif frame is corrupt_source:
            frame = corrupt
        partition = PARTITIONS[frame.stream_id]
        publisher.send(frame, partition)
        if position % 12 == 5 and malformed:
            code, (key, value) = malformed.popitem()
            sent[code] = publisher.send_raw(key, value, partition=0)
    publisher.flush()
    sent_offsets = {code: future.get(timeout=10).offset for code, future in sent.items()}
    publisher.close()
    assert not malformed

    spec = ModelChoice(device="cpu", input_size=(128, 64), max_batch_size=64)
    config = job_config(
        broker,
        topics,
        tmp_path / "out",
        'model.name="mobilenetv2_100"',
        "model.input_height=128",
        "model.input_width=64",
        "batch.max_embed_crops=64",
        "job.expected_frames=64",
        "job.max_idle_s=30",
    )
    summary = StreamJob(config).run()

    assert summary.dead_letters == 6
    letters = read_topic(broker.bootstrap_servers, topics.dead_letters, 6)
    assert len(letters) == 6
    reasons = {}
    for letter in letters:
        headers = {k: v.decode() for k, v in letter.headers}
        assert headers["source_topic"] == topics.frames
        code = headers["reason"].split(":", 1)[0]
        reasons[(code, int(headers["source_partition"]), int(headers["source_offset"]))] = headers[
            "reason"
        ]
    for code, offset in sent_offsets.items():
        assert (code, 0, offset) in reasons
    image_reasons = sorted(r for (c, _, _), r in reasons.items() if c == "bad_image")
    assert len(image_reasons) == 2
    assert "truncated" in image_reasons[0] + image_reasons[1]
    assert "does not decode" in image_reasons[0] + image_reasons[1]

    good = [f for f in frames if f is not truncated_source and f is not corrupt_source]
    expected = reference_tracker_ids(good, config.tracker.params(), load_reid_model(spec))
    frame_counts, boxes = parquet_tracker_ids(tmp_path / "out")
    assert set(frame_counts) == set(expected) and set(frame_counts.values()) == {1}
    assert sum(len(confirmed_ids(t)) for t in expected.values()) > 150
    for key, tracker_id in expected.items():
        assert boxes.get(key, {}) == confirmed_ids(tracker_id), key
    _check_results_topic(broker, topics.results, expected)


OMZ_0288 = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "models"
    / "intel-omz"
    / "person-reidentification-retail-0288"
    / "FP16"
    / "person-reidentification-retail-0288.xml"
).resolve()


@pytest.mark.skipif(not OMZ_0288.is_file(), reason="needs ../shared/models/intel-omz")
def test_openvino_model_same_ids_as_in_process(
    broker: LocalBroker,
    ray_local: None,
    topics: Topics,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An OpenVINO IR chosen by `model.path`: the embedder actors run it, the shards use its
    recommended gate, and the IDs are those of in-process trackers embedding with it."""
    pytest.importorskip("openvino")
    from ray_deepsort.reid import ReIDModel

    frames = _synthetic(2, 24, image_format="jpeg")
    _publish(broker, topics.frames, frames)
    config = job_config(
        broker,
        topics,
        tmp_path / "out",
        'model.name=""',
        f"model.path={json.dumps(str(OMZ_0288))}",
        "batch.max_embed_crops=64",
        "job.expected_frames=48",
        "job.max_idle_s=30",
    )
    assert is_default(config.tracker.appearance_threshold)
    with caplog.at_level(logging.INFO, logger="ray_deepsort.stream"):
        summary = StreamJob(config).run()
    assert summary.frames == 48 and summary.dead_letters == 0

    model = ReIDModel.from_file(OMZ_0288, device="cpu", threads=1)
    gate = model.spec.appearance_threshold
    assert gate is not None and gate != 0.7  # the comparison is about the model's gate
    weight = model.spec.appearance_weight
    assert (
        f"appearance gate {gate:.2f}, weight {weight:.2f} from person-reidentification-retail-0288"
        in caplog.text
    )
    expected = reference_tracker_ids(frames, config.tracker.params(), model)
    frame_counts, boxes = parquet_tracker_ids(tmp_path / "out")
    assert set(frame_counts) == set(expected) and set(frame_counts.values()) == {1}
    assert sum(len(confirmed_ids(t)) for t in expected.values()) > 100
    for key, tracker_id in expected.items():
        assert boxes.get(key, {}) == confirmed_ids(tracker_id), key
    # The shards' trackers ran with the model's gate (their checkpoints carry the effective one).
    store = CheckpointStore(tmp_path / "out")
    for stream_id in ("cam0", "cam1"):
        state = store.read_stream(topics.frames, PARTITIONS[stream_id], stream_id).state
        assert float(state["appearance_threshold"]) == pytest.approx(gate)


def test_restart_resumes_from_committed_offsets(
    broker: LocalBroker, ray_local: None, topics: Topics, tmp_path: Path
) -> None:
    """Acceptance 3: a graceful stop, then a crash between sink writes and commit, then a
    restart: nothing is lost and no Parquet row is duplicated."""
    frames = _synthetic(3, 60, image_format="none", embeddings="identity")
    _publish(broker, topics.frames, frames)
    output = tmp_path / "out"

    first = StreamJob(job_config(broker, topics, output, "job.stop_after_batches=3")).run()
    assert first.batches == 3 and 0 < first.frames < 180
    assert sum(first.committed.values()) == first.frames

    crashing = StreamJob(job_config(broker, topics, output, "job.fail_after_batches=2"))
    with pytest.raises(SimulatedCrash):
        crashing.run()
    writer = ParquetResultWriter(output)
    committed = {int(k.rsplit(":", 1)[1]): v for k, v in crashing.summary.committed.items()}
    leftovers = [
        path
        for path in writer.files()
        if (parsed := parse_batch_file_stem(writer.stem_of(path))) is not None
        and parsed[2]
        >= committed.get(parsed[1], first.committed.get(f"{topics.frames}:{parsed[1]}", 0))
    ]
    assert leftovers, "the crash must leave uncommitted files behind"

    last = StreamJob(job_config(broker, topics, output)).run()
    assert last.leftovers_removed >= len(leftovers)
    assert sum(last.committed.values()) == 180

    frame_counts, _ = parquet_tracker_ids(output)  # also asserts no duplicate track rows
    keys = {(f.stream_id, f.frame_index) for f in frames}
    assert set(frame_counts) == keys
    assert set(frame_counts.values()) == {1}, "a frame is in the Parquet output twice"
    _check_results_topic(broker, topics.results, keys)  # at least once, dedupe by (stream, frame)


def test_unschedulable_actors_fail_fast(
    broker: LocalBroker, ray_local: None, topics: Topics, tmp_path: Path
) -> None:
    """More shard CPUs than the cluster has: a clear error at once, never a pending actor."""
    from ray_deepsort.pipeline.actors import PlacementError

    config = job_config(broker, topics, tmp_path, "actors.num_shards=8", "actors.shard_num_cpus=1")
    started = time.monotonic()
    with pytest.raises(PlacementError, match="need 8 CPUs, the cluster has 2"):
        StreamJob(config).run()
    assert time.monotonic() - started < 10
