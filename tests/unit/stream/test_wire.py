"""RDSF v1 frames: round trips, the documented byte layout, and every validation error."""

from __future__ import annotations

import contextlib
import json
import struct

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ray_deepsort.stream.wire import (
    MAGIC,
    FrameMessage,
    WireFormatError,
    dead_letter_headers,
    decode_frame,
    decode_result,
    encode_frame,
    encode_result,
    image_size,
)


def _image(fmt: str, width: int = 64, height: int = 48) -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", pixels)
    assert ok
    return data.tobytes()


def _frame(
    n: int = 3, fmt: str = "jpeg", embeddings: int | None = None, stream_id: str = "cam-1"
) -> FrameMessage:
    rng = np.random.default_rng(n)
    xy = rng.uniform(0, 30, (n, 2))
    xyxy = np.concatenate([xy, xy + rng.uniform(1, 15, (n, 2))], axis=1).astype(np.float32)
    return FrameMessage(
        stream_id=stream_id,
        frame_index=7,
        timestamp=1_700_000_000.25,
        xyxy=xyxy,
        confidence=rng.uniform(0, 1, n).astype(np.float32),
        class_id=np.arange(n, dtype=np.int64),
        image=None if fmt == "none" else _image(fmt),
        image_format=fmt,
        width=64,
        height=48,
        embeddings=None
        if embeddings is None
        else rng.normal(size=(n, embeddings)).astype(np.float32),
    )


def _split(value: bytes) -> tuple[dict, bytes]:
    length = struct.unpack_from(">I", value, 5)[0]
    return json.loads(value[9 : 9 + length]), value[9 + length :]


def _build(header: dict, payload: bytes = b"", version: int = 1, magic: bytes = MAGIC) -> bytes:
    raw = json.dumps(header).encode()
    return magic + struct.pack(">BI", version, len(raw)) + raw + payload


def _header_and_payload(**kwargs: object) -> tuple[dict, bytes]:
    return _split(encode_frame(_frame(**kwargs)))  # type: ignore[arg-type]


def _code(value: bytes, key: bytes | None = b"cam-1", **kwargs: object) -> str:
    with pytest.raises(WireFormatError) as info:
        decode_frame(value, key, **kwargs)  # type: ignore[arg-type]
    assert info.value.reason == str(info.value)
    return info.value.code


# ---------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("fmt", ["jpeg", "png", "none"])
@pytest.mark.parametrize("dim", [None, 5])
def test_round_trip_is_exact(fmt: str, dim: int | None) -> None:
    frame = _frame(fmt=fmt, embeddings=dim)
    decoded = decode_frame(encode_frame(frame), b"cam-1")
    assert decoded.stream_id == frame.stream_id
    assert decoded.frame_index == 7
    assert decoded.timestamp == frame.timestamp
    np.testing.assert_array_equal(decoded.xyxy, frame.xyxy)
    np.testing.assert_array_equal(decoded.confidence, frame.confidence)
    np.testing.assert_array_equal(decoded.class_id, frame.class_id)
    assert decoded.image == frame.image
    assert decoded.image_format == fmt
    assert (decoded.width, decoded.height) == (64, 48)
    if dim is None:
        assert decoded.embeddings is None
    else:
        np.testing.assert_array_equal(decoded.embeddings, frame.embeddings)
        assert decoded.embeddings.dtype == np.float32


def test_empty_frame_and_motion_only_without_size() -> None:
    frame = FrameMessage("s", 0, 0.0, np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
    decoded = decode_frame(encode_frame(frame), b"s")
    assert decoded.num_detections == 0 and decoded.image is None and decoded.width is None


def test_documented_layout_hand_built() -> None:
    """A producer in another language following docs/wire-format.md produces decodable bytes."""
    embeddings = np.array([[1.0, 0.0], [0.5, -0.5]], dtype="<f4")
    header = {
        "stream_id": "gate-3",
        "frame_index": 12,
        "timestamp": 1732500000.5,
        "image": {"format": "none", "length": 0, "width": 1920, "height": 1080},
        "detections": {
            "xyxy": [[10, 20, 110, 220], [300.5, 40, 350, 160.25]],
            "confidence": [0.9, 0.55],
            "class_id": [0, 2],
        },
        "embeddings": {"dtype": "float32", "shape": [2, 2]},
    }
    raw = json.dumps(header).encode("utf-8")
    value = b"RDSF" + bytes([1]) + len(raw).to_bytes(4, "big") + raw + embeddings.tobytes()
    frame = decode_frame(value, b"gate-3")
    assert frame.frame_index == 12 and frame.height == 1080
    np.testing.assert_array_equal(frame.xyxy[1], np.float32([300.5, 40, 350, 160.25]))
    np.testing.assert_array_equal(frame.embeddings, embeddings)
    assert frame.class_id.tolist() == [0, 2]


def test_image_size_reads_jpeg_and_png_headers() -> None:
    assert image_size(_image("jpeg", 77, 33), "jpeg") == (77, 33)
    assert image_size(_image("png", 5, 9), "png") == (5, 9)


# ---------------------------------------------------------------------------- errors
def test_preamble_errors() -> None:
    good = encode_frame(_frame())
    assert _code(b"") == "truncated"
    assert _code(None) == "empty"  # type: ignore[arg-type]
    assert _code(b"XXXX" + good[4:]) == "bad_magic"
    assert _code(good[:4] + bytes([2]) + good[5:]) == "unsupported_version"
    assert _code(good[:4] + bytes([0]) + good[5:]) == "unsupported_version"
    assert _code(good[:5] + struct.pack(">I", len(good)) + good[9:]) == "truncated"
    assert _code(good, max_message_bytes=len(good) - 1) == "too_large"


def test_payload_length_errors() -> None:
    good = encode_frame(_frame(embeddings=4))
    assert _code(good[:-1]) == "truncated"
    assert _code(good + b"\x00") == "length_mismatch"


def test_key_must_match_stream_id() -> None:
    good = encode_frame(_frame())
    assert _code(good, key=b"cam-2") == "key_mismatch"
    assert _code(good, key=None) == "key_mismatch"
    assert decode_frame(good, None, require_key=False).stream_id == "cam-1"


def test_header_not_json_or_not_object() -> None:
    assert _code(b"RDSF\x01" + struct.pack(">I", 3) + b"{x}") == "bad_header"
    assert _code(b"RDSF\x01" + struct.pack(">I", 2) + b"\xff\xfe") == "bad_header"
    assert _code(_build([1, 2])) == "bad_header"  # type: ignore[arg-type]
    nested = ("[" * 100_000).encode()
    assert _code(b"RDSF\x01" + struct.pack(">I", len(nested)) + nested) == "bad_header"


@pytest.mark.parametrize(
    "field", ["stream_id", "frame_index", "timestamp", "image", "detections", "embeddings"]
)
def test_missing_top_level_field(field: str) -> None:
    header, payload = _header_and_payload()
    del header[field]
    assert _code(_build(header, payload)) == "missing_field"


@pytest.mark.parametrize(
    ("path", "value", "code"),
    [
        (("stream_id",), 5, "wrong_type"),
        (("stream_id",), "", "bad_value"),
        (("stream_id",), "a\nb", "bad_value"),
        (("stream_id",), "cam\ud800", "bad_value"),  # lone surrogate: not encodable as UTF-8
        (("frame_index",), 1.5, "wrong_type"),
        (("frame_index",), True, "wrong_type"),
        (("frame_index",), -1, "bad_value"),
        (("frame_index",), 2**64, "bad_value"),
        (("timestamp",), "now", "wrong_type"),
        (("timestamp",), 1e400, "bad_number"),
        (("timestamp",), 10**400, "bad_number"),  # an integer literal beyond float64
        (("timestamp",), -1.0, "bad_value"),
        (("timestamp",), 1e39, "bad_value"),  # no calendar hour for the Parquet partition
        (("image",), [], "wrong_type"),
        (("image", "format"), "gif", "bad_value"),
        (("image", "width"), 0, "bad_value"),
        (("image", "width"), None, "missing_field"),
        (("image", "height"), "48", "wrong_type"),
        (("image", "extra"), 1, "unknown_field"),
        (("detections",), None, "wrong_type"),
        (("detections", "xyxy"), "boxes", "wrong_type"),
        (("detections", "confidence"), [0.1, 0.2], "length_mismatch"),
        (("detections", "class_id"), [0, 1, 2.5], "wrong_type"),
        (("detections", "class_id"), [0, 1, True], "wrong_type"),
        (("detections", "confidence"), [0.1, None, 0.3], "wrong_type"),
        (("detections", "confidence"), [0.1, 1e39, 0.3], "bad_number"),  # inf as float32
        (("detections", "confidence"), [0.1, 10**400, 0.3], "bad_value"),
        (("detections", "scores"), [1], "unknown_field"),
        (("embeddings",), 3, "wrong_type"),
        (("extra",), 1, "unknown_field"),
    ],
)
def test_field_errors(path: tuple[str, ...], value: object, code: str) -> None:
    header, payload = _header_and_payload()
    target = header
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    assert _code(_build(header, payload)) == code


def test_integer_literal_past_the_digit_limit_is_a_header_error() -> None:
    """Python refuses int literals over 4300 digits with a plain ValueError: still a wire error."""
    header, payload = _header_and_payload()
    header["frame_index"] = 1
    raw = json.dumps(header).replace('"frame_index": 1', '"frame_index": ' + "9" * 5000)
    value = MAGIC + b"\x01" + struct.pack(">I", len(raw)) + raw.encode() + payload
    with pytest.raises(WireFormatError, match=r"bad_header: .*digits"):
        decode_frame(value, b"cam-1")


@pytest.mark.parametrize(
    "box",
    [
        [10, 10, 5, 20],  # x2 < x1
        [10, 10, 20, 10],  # empty height
        [0, 0, 1],  # three values
        [0, 0, 1, "2"],
        "0,0,1,1",
    ],
)
def test_bad_boxes(box: object) -> None:
    header, payload = _header_and_payload()
    header["detections"]["xyxy"][1] = box
    code = _code(_build(header, payload))
    assert code in ("bad_box", "wrong_type")


def test_non_finite_and_huge_boxes() -> None:
    header, payload = _header_and_payload()
    # Python's json writes a bare NaN token here; the decoder must refuse it.
    header_nan = json.loads(json.dumps(header))
    header_nan["detections"]["xyxy"][0][0] = float("nan")
    assert _code(_build(header_nan, payload)) == "bad_number"
    header_huge = json.loads(json.dumps(header))
    header_huge["detections"]["xyxy"][0] = [0, 0, 1e39, 1e39]
    assert _code(_build(header_huge, payload)) == "bad_box"


def test_embedding_errors() -> None:
    header, payload = _header_and_payload(embeddings=4)
    for shape, code in (([2, 4], "length_mismatch"), ([3, 0], "bad_value"), ([3], "wrong_type")):
        bad = json.loads(json.dumps(header))
        bad["embeddings"]["shape"] = shape
        assert _code(_build(bad, payload)) == code
    bad = json.loads(json.dumps(header))
    bad["embeddings"]["dtype"] = "float16"
    assert _code(_build(bad, payload)) == "bad_value"
    image_length = header["image"]["length"]
    poisoned = bytearray(payload)
    poisoned[image_length : image_length + 4] = np.float32(np.inf).tobytes()
    assert _code(_build(header, bytes(poisoned))) == "bad_embeddings"


def test_image_length_and_format_consistency() -> None:
    header, payload = _header_and_payload(fmt="none")
    header["image"]["length"] = 5
    assert _code(_build(header, payload + b"12345")) == "length_mismatch"
    header, payload = _header_and_payload(fmt="jpeg")
    header["image"]["length"] = 0
    assert _code(_build(header, b"")) == "length_mismatch"


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_truncated_or_wrong_images(fmt: str) -> None:
    header, payload = _header_and_payload(fmt=fmt)
    truncated = payload[: len(payload) // 2]
    header["image"]["length"] = len(truncated)
    assert _code(_build(header, truncated)) == "bad_image"
    other = _image("png" if fmt == "jpeg" else "jpeg")
    header["image"]["length"] = len(other)
    assert _code(_build(header, other)) == "bad_image"
    header, payload = _header_and_payload(fmt=fmt)
    header["image"]["width"] = 65
    assert _code(_build(header, payload)) == "bad_image"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_wire_errors(data: bytes) -> None:
    for value in (data, MAGIC + b"\x01" + data):
        with contextlib.suppress(WireFormatError):
            decode_frame(value, b"cam-1")


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2000), st.integers(min_value=0, max_value=255))
def test_single_byte_corruption_never_escapes(position: int, byte: int) -> None:
    value = bytearray(encode_frame(_frame(embeddings=3)))
    value[position % len(value)] = byte
    try:
        frame = decode_frame(bytes(value), b"cam-1")
    except WireFormatError:
        return
    assert np.isfinite(frame.xyxy).all()
    assert (frame.xyxy[:, 2] > frame.xyxy[:, 0]).all()


# ---------------------------------------------------------------------------- results, DLQ
def test_result_round_trip() -> None:
    tracks = {
        "tracker_id": np.array([3, 9]),
        "detection_index": np.array([0, 2]),
        "xyxy": np.array([[1, 2, 3, 4], [5, 6, 7, 8.5]], np.float32),
        "confidence": np.array([0.5, 0.25], np.float32),
        "class_id": np.array([0, 1]),
    }
    value = encode_result(
        "cam", 4, 12.5, tracks, "1.2.3", {"topic": "t", "partition": 0, "offset": 8}
    )
    message = decode_result(value)
    assert message["stream_id"] == "cam" and message["frame_index"] == 4
    assert message["tracks"][1] == {
        "tracker_id": 9,
        "detection_index": 2,
        "xyxy": [5.0, 6.0, 7.0, 8.5],
        "confidence": 0.25,
        "class_id": 1,
    }
    assert message["source"]["offset"] == 8 and message["job_version"] == "1.2.3"
    with pytest.raises(ValueError):
        decode_result(json.dumps({"schema": "other", "version": 1}).encode())


def test_dead_letter_headers() -> None:
    headers = dict(dead_letter_headers("bad_magic: x", "frames", 2, 41))
    assert headers == {
        "reason": b"bad_magic: x",
        "source_topic": b"frames",
        "source_partition": b"2",
        "source_offset": b"41",
    }
