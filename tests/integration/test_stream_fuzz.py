"""Fuzz through the real broker and job: ~1,000 mutated and random messages interleaved with the
valid frames of 2 streams. Every invalid message must reach the dead-letter topic with the
decoder's exact reason, every valid frame must be in Parquet exactly once, and the job must not
crash."""

from __future__ import annotations

import collections
import json
import random
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from stream_support import Topics, job_config, read_topic

from ray_deepsort.pipeline.parquet import ParquetResultWriter
from ray_deepsort.stream.broker import LocalBroker
from ray_deepsort.stream.job import StreamJob
from ray_deepsort.stream.publish import FramePublisher, synthetic_frames
from ray_deepsort.stream.wire import (
    MAGIC,
    PREAMBLE,
    VERSION,
    FrameMessage,
    WireFormatError,
    decode_frame,
    encode_frame,
)

pytestmark = pytest.mark.integration

STREAM_PARTITIONS = {"cam0": 0, "cam1": 1}
FRAMES_PER_STREAM = 60
NUM_INVALID = 1000
MAX_MESSAGE_BYTES = 32 * 1024  # small, so that "too_large" letters are cheap to produce
JSON_SWAPS: list[Any] = [
    None,
    True,
    "x",
    "../../etc/passwd",
    "\ud800",
    [],
    {},
    -1,
    2**64,
    10**400,
    1e39,
    float("nan"),
    float("inf"),
    [1, 2, 3],
    {"a": 1},
]


def _small_image_frame(fmt: str) -> FrameMessage:
    pixels = np.random.default_rng(3).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", pixels)
    assert ok
    return FrameMessage(
        stream_id="cam0",
        frame_index=10_000,
        timestamp=1_732_500_000.0,
        xyxy=np.array([[1, 1, 9, 9]], np.float32),
        confidence=np.ones(1, np.float32),
        class_id=np.zeros(1, np.int64),
        image=data.tobytes(),
        image_format=fmt,
        width=32,
        height=24,
    )


def _split(value: bytes) -> tuple[dict[str, Any], bytes]:
    length = PREAMBLE.unpack_from(value, 0)[2]
    header = json.loads(value[PREAMBLE.size : PREAMBLE.size + length])
    return header, value[PREAMBLE.size + length :]


def _with_header(header: dict[str, Any], payload: bytes) -> bytes:
    raw = json.dumps(header, allow_nan=True).encode("utf-8", "surrogatepass")
    return PREAMBLE.pack(MAGIC, VERSION, len(raw)) + raw + payload


def _mutant(rng: random.Random, seed: bytes) -> tuple[bytes | None, bytes | None]:
    """(key, value) of one mutated or random message (not necessarily invalid)."""
    key: bytes | None = _split(seed)[0]["stream_id"].encode()
    kind = rng.choice(
        ["flip", "truncate", "insert", "delete", "random", "field", "length", "key", "size"]
    )
    value = bytearray(seed)
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            value[rng.randrange(len(value))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del value[rng.randrange(len(value)) :]
    elif kind == "insert":
        at = rng.randrange(len(value) + 1)
        value[at:at] = rng.randbytes(rng.randint(1, 32))
    elif kind == "delete":
        at = rng.randrange(len(value))
        del value[at : at + rng.randint(1, 32)]
    elif kind == "random":
        value = bytearray(rng.randbytes(rng.randint(0, 600)))
        if rng.random() < 0.5:
            value[:5] = MAGIC + bytes([VERSION])
        key = rng.choice([None, b"cam1", rng.randbytes(8)])
    elif kind in ("field", "length"):
        header, payload = _split(seed)
        if kind == "field":  # a JSON type swap somewhere in the header
            section = rng.choice(["stream_id", "frame_index", "timestamp", "image", "detections"])
            target = header
            if isinstance(header[section], dict) and header[section]:
                target = header[section]
                section = rng.choice(sorted(target))
            target[section] = rng.choice(JSON_SWAPS)
        else:  # huge or wrong declared lengths
            header["image"]["length"] = rng.choice([1, 2**31, 2**63 - 1, 2**64])
        value = bytearray(_with_header(header, payload))
    elif kind == "key":
        key = rng.choice([None, b"", b"cam1", b"../cam0", "cäm0".encode()])
    elif kind == "size":  # a well-formed frame over kafka.max_message_bytes
        header, payload = _split(seed)
        header["detections"]["xyxy"] = [[0.0, 0.0, 1.0, 1.0]] * 1500
        header["detections"]["confidence"] = [0.5] * 1500
        header["detections"]["class_id"] = [0] * 1500
        header["embeddings"] = None
        value = bytearray(_with_header(header, b""))
    if rng.random() < 0.01:
        return key, None  # tombstone
    return key, bytes(value)


def _reason(key: bytes | None, value: bytes | None) -> str | None:
    """The decoder's verdict, computed here exactly as the job's driver does."""
    try:
        decode_frame(value, key, max_message_bytes=MAX_MESSAGE_BYTES)
    except WireFormatError as error:
        return error.reason
    return None


def test_fuzzed_messages_are_dead_lettered_and_valid_frames_tracked_once(
    broker: LocalBroker, ray_local: None, topics: Topics, tmp_path: Path
) -> None:
    _, generator = synthetic_frames(
        2,
        FRAMES_PER_STREAM,
        objects=6,
        width=320,
        height=180,
        image_format="none",
        embeddings="identity",
        embedding_dim=16,
        start_time=1_732_500_000.0,
    )
    valid = list(generator)
    seeds = [encode_frame(frame) for frame in valid[:20]]
    seeds += [encode_frame(_small_image_frame("jpeg")), encode_frame(_small_image_frame("png"))]

    rng = random.Random(20261125)
    invalid: list[tuple[bytes | None, bytes | None, str]] = []
    while len(invalid) < NUM_INVALID:
        key, value = _mutant(rng, rng.choice(seeds))
        reason = _reason(key, value)
        if reason is not None:  # a mutant that still decodes would be a real frame: skip it
            invalid.append((key, value, reason))
    codes = collections.Counter(reason.split(":")[0] for _, _, reason in invalid)
    assert len(codes) >= 10 and codes["too_large"] > 0, codes  # the mix covers many checks

    # Interleave: the valid frames keep their order per stream; the rest go anywhere.
    messages: list[tuple[bytes | None, bytes | None, int, str | None]] = [
        (f.stream_id.encode(), encode_frame(f), STREAM_PARTITIONS[f.stream_id], None) for f in valid
    ]
    for key, value, reason in invalid:
        messages.insert(rng.randrange(len(messages) + 1), (key, value, rng.randrange(3), reason))
    valid_order = [(m[0], m[1]) for m in messages if m[3] is None]
    assert valid_order == [(f.stream_id.encode(), encode_frame(f)) for f in valid]

    started = time.monotonic()
    sent: dict[tuple[int, int], tuple[bytes | None, bytes | None, str | None]] = {}
    with FramePublisher(broker.bootstrap_servers, topics.frames) as publisher:
        futures = [publisher.send_raw(k, v, partition=p) for k, v, p, _ in messages]  # type: ignore[arg-type]
        publisher.flush()
        for future, (key, value, _, reason) in zip(futures, messages, strict=True):
            metadata = future.get(timeout=30)
            sent[(metadata.partition, metadata.offset)] = (key, value, reason)

    config = job_config(
        broker,
        topics,
        tmp_path / "out",
        f"kafka.max_message_bytes={MAX_MESSAGE_BYTES}",
        "batch.max_frames=64",
        "job.max_idle_s=2",
    )
    summary = StreamJob(config).run()
    elapsed = time.monotonic() - started

    assert summary.stop_reason.startswith("idle"), summary.stop_reason  # not a crash
    assert summary.frames == len(valid)
    assert summary.dead_letters == NUM_INVALID
    assert sum(summary.committed.values()) == len(messages)

    # Every invalid message is in the dead-letter topic once, byte for byte (oversized ones up to
    # the size limit), with its reason.
    letters = read_topic(broker.bootstrap_servers, topics.dead_letters, NUM_INVALID)
    assert len(letters) == NUM_INVALID
    seen: set[tuple[int, int]] = set()
    for letter in letters:
        headers = {name: raw.decode() for name, raw in letter.headers}
        assert headers["source_topic"] == topics.frames
        position = (int(headers["source_partition"]), int(headers["source_offset"]))
        assert position not in seen
        seen.add(position)
        key, value, reason = sent[position]
        assert reason is not None, f"valid frame at {position} was dead-lettered"
        assert headers["reason"] == reason
        if value is not None and len(value) > MAX_MESSAGE_BYTES:  # kept whole up to the limit
            assert headers["value_truncated"] == str(len(value))
            value = value[:MAX_MESSAGE_BYTES]
        assert (letter.key, letter.value) == (key, value)
    assert len(seen) == NUM_INVALID

    # Every valid frame is in Parquet exactly once (and nothing else is).
    frames = ParquetResultWriter(tmp_path / "out").read("frames")
    counts = collections.Counter(
        zip(frames["stream_id"].to_pylist(), frames["frame_index"].to_pylist(), strict=True)
    )
    assert counts == collections.Counter((f.stream_id, f.frame_index) for f in valid)
    tracks = ParquetResultWriter(tmp_path / "out").read("tracks")
    assert tracks.num_rows > 0 and set(tracks["stream_id"].to_pylist()) == {"cam0", "cam1"}
    print(
        f"fuzz: {len(messages)} messages ({NUM_INVALID} invalid, codes {dict(codes)}) "
        f"published and processed in {elapsed:.1f}s"
    )


def test_message_far_over_the_limit_is_dead_lettered_without_crashing(
    broker: LocalBroker, ray_local: None, topics: Topics, tmp_path: Path
) -> None:
    value = MAGIC + bytes([VERSION]) + b"\0" * (200 * 1024)  # > max_message_bytes + 64 KiB
    with FramePublisher(broker.bootstrap_servers, topics.frames) as publisher:
        publisher.send_raw(b"cam0", value, partition=0).get(timeout=10)
    config = job_config(
        broker, topics, tmp_path / "out", f"kafka.max_message_bytes={MAX_MESSAGE_BYTES}"
    )
    summary = StreamJob(config).run()
    assert summary.dead_letters == 1 and summary.stop_reason.startswith("idle")
    letters = read_topic(broker.bootstrap_servers, topics.dead_letters, 1, timeout_s=5)
    assert len(letters) == 1
    headers = {name: raw.decode() for name, raw in letters[0].headers}
    assert headers["reason"].startswith("too_large: message is ")
    assert headers["value_truncated"] == str(len(value))
    assert letters[0].value == value[:MAX_MESSAGE_BYTES]
