"""The frames wire format (RDSF v1): one Kafka message per frame, language-neutral, no pickle.

Layout of a message value (all integers big-endian unless noted)::

    offset  size  field
    0       4     magic b"RDSF"
    4       1     version (uint8) = 1
    5       4     header length H (uint32)
    9       H     header: UTF-8 JSON object (fields in docs/wire-format.md)
    9+H     I     image bytes (JPEG or PNG), I = header.image.length (0 when format is "none")
    9+H+I   E     embeddings, little-endian float32, row-major [N, D]; E = 4*N*D (0 when absent)

The message key is the stream id (UTF-8). `decode_frame` validates every field and raises
`WireFormatError` whose `reason` names the field and what is wrong, so that a bad message can go
to the dead-letter topic with a precise reason while the job goes on.

Results (`encode_result`) are one JSON object per frame; see docs/wire-format.md.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

MAGIC = b"RDSF"
VERSION = 1
SUPPORTED_VERSIONS = frozenset({VERSION})
PREAMBLE = struct.Struct(">4sBI")  # magic, version, header length
IMAGE_FORMATS = ("jpeg", "png", "none")
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_STREAM_ID_LENGTH = 255
MAX_EMBEDDING_DIM = 65536
MAX_IMAGE_SIDE = 65535
# Capture times must fit a calendar date (year 1970 to 9999) for the Parquet hour partition.
MAX_TIMESTAMP = 253_402_300_800.0

RESULT_SCHEMA = "ray-deepsort.tracks"
RESULT_VERSION = 1

_HEADER_FIELDS = frozenset(
    {"stream_id", "frame_index", "timestamp", "image", "detections", "embeddings"}
)
_IMAGE_FIELDS = frozenset({"format", "length", "width", "height"})
_DETECTION_FIELDS = frozenset({"xyxy", "confidence", "class_id"})
_EMBEDDING_FIELDS = frozenset({"dtype", "shape"})
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_SOI = b"\xff\xd8\xff"
_JPEG_EOI = b"\xff\xd9"
# Bytes after the JPEG end-of-image marker that some encoders append (padding); beyond that the
# file counts as truncated.
_JPEG_TRAILER_SLACK = 64


class WireFormatError(ValueError):
    """A message that is not a valid RDSF frame; `code` is stable, `reason` says exactly why."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.detail}"


@dataclass(frozen=True, eq=False)
class FrameMessage:
    """One decoded, validated frame.

    `xyxy` float32 [N, 4], `confidence` float32 [N], `class_id` int64 [N]; `embeddings` float32
    [N, D] or None; `image` the encoded bytes (None when `image_format == "none"`).
    """

    stream_id: str
    frame_index: int
    timestamp: float
    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    image: bytes | None = None
    image_format: str = "none"
    width: int | None = None
    height: int | None = None
    embeddings: np.ndarray | None = None

    @property
    def num_detections(self) -> int:
        return len(self.xyxy)


# --------------------------------------------------------------------------- encode
def encode_frame(frame: FrameMessage) -> bytes:
    """Serialise a frame (the inverse of `decode_frame`; validates what it writes)."""
    n = len(frame.xyxy)
    xyxy = np.asarray(frame.xyxy, dtype=np.float32).reshape(n, 4)
    image = frame.image if frame.image_format != "none" else None
    embeddings_bytes = b""
    embeddings_header: dict[str, Any] | None = None
    if frame.embeddings is not None:
        embeddings = np.asarray(frame.embeddings, dtype="<f4")
        if embeddings.ndim != 2 or len(embeddings) != n:
            raise ValueError(f"embeddings must be [{n}, D], got {embeddings.shape}")
        embeddings_bytes = np.ascontiguousarray(embeddings).tobytes()
        embeddings_header = {"dtype": "float32", "shape": [n, int(embeddings.shape[1])]}
    header = {
        "stream_id": frame.stream_id,
        "frame_index": int(frame.frame_index),
        "timestamp": float(frame.timestamp),
        "image": {
            "format": frame.image_format,
            "length": 0 if image is None else len(image),
            "width": None if frame.width is None else int(frame.width),
            "height": None if frame.height is None else int(frame.height),
        },
        "detections": {
            "xyxy": xyxy.tolist(),
            "confidence": np.asarray(frame.confidence, dtype=np.float32).reshape(n).tolist(),
            "class_id": np.asarray(frame.class_id, dtype=np.int64).reshape(n).tolist(),
        },
        "embeddings": embeddings_header,
    }
    header_bytes = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return b"".join(
        [
            PREAMBLE.pack(MAGIC, VERSION, len(header_bytes)),
            header_bytes,
            image or b"",
            embeddings_bytes,
        ]
    )


# --------------------------------------------------------------------------- decode
def decode_frame(
    value: bytes | None,
    key: bytes | None = None,
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    require_key: bool = True,
) -> FrameMessage:
    """Parse and validate one message value; raise `WireFormatError` naming the first problem."""
    if value is None:
        raise WireFormatError("empty", "message has no value (tombstone)")
    if len(value) > max_message_bytes:
        raise WireFormatError(
            "too_large", f"message is {len(value)} bytes, limit is {max_message_bytes}"
        )
    if len(value) < PREAMBLE.size:
        raise WireFormatError(
            "truncated",
            f"message is {len(value)} bytes, shorter than the {PREAMBLE.size}-byte preamble",
        )
    magic, version, header_length = PREAMBLE.unpack_from(value, 0)
    if magic != MAGIC:
        raise WireFormatError("bad_magic", f"expected magic {MAGIC!r}, got {bytes(magic)!r}")
    if version not in SUPPORTED_VERSIONS:
        raise WireFormatError(
            "unsupported_version",
            f"version {version} is not supported (supported: {sorted(SUPPORTED_VERSIONS)})",
        )
    body_start = PREAMBLE.size + header_length
    if body_start > len(value):
        raise WireFormatError(
            "truncated",
            f"header length {header_length} runs past the end of the {len(value)}-byte message",
        )
    header = _parse_header(value[PREAMBLE.size : body_start])

    stream_id = _stream_id(header)
    if key is None:
        if require_key:
            raise WireFormatError(
                "key_mismatch", "message key is missing; it must be the stream_id"
            )
    elif key != stream_id.encode("utf-8"):
        raise WireFormatError(
            "key_mismatch",
            f"message key {key[:80]!r} differs from stream_id {stream_id!r}",
        )
    frame_index = _integer(header, "frame_index", low=0)
    timestamp = _number(header, "timestamp")
    if not 0.0 <= timestamp < MAX_TIMESTAMP:
        raise WireFormatError(
            "bad_value",
            f"header.timestamp {timestamp!r} is not UTC epoch seconds in [0, {MAX_TIMESTAMP:.0f})",
        )
    image_format, image_length, width, height = _image_header(header)
    xyxy, confidence, class_id = _detections(header)
    embedding_shape = _embedding_header(header, len(xyxy))

    embedding_length = 0 if embedding_shape is None else 4 * embedding_shape[0] * embedding_shape[1]
    expected = body_start + image_length + embedding_length
    if len(value) != expected:
        what = "truncated" if len(value) < expected else "length_mismatch"
        raise WireFormatError(
            what,
            f"header declares {image_length} image bytes and {embedding_length} embedding bytes "
            f"after a {header_length}-byte header ({expected} bytes in all), message has "
            f"{len(value)}",
        )
    image: bytes | None = None
    if image_format != "none":
        image = bytes(value[body_start : body_start + image_length])
        _check_image(image, image_format, width, height)
    embeddings: np.ndarray | None = None
    if embedding_shape is not None:
        start = body_start + image_length
        embeddings = (
            np.frombuffer(
                value, dtype="<f4", count=embedding_shape[0] * embedding_shape[1], offset=start
            )
            .reshape(embedding_shape)
            .astype(np.float32)
        )
        bad = ~np.isfinite(embeddings).all(axis=1)
        if bad.any():
            raise WireFormatError(
                "bad_embeddings",
                f"embeddings rows {np.flatnonzero(bad)[:10].tolist()} are not finite",
            )
    return FrameMessage(
        stream_id=stream_id,
        frame_index=frame_index,
        timestamp=timestamp,
        xyxy=xyxy,
        confidence=confidence,
        class_id=class_id,
        image=image,
        image_format=image_format,
        width=width,
        height=height,
        embeddings=embeddings,
    )


def _reject_constant(name: str) -> Any:
    raise WireFormatError("bad_number", f"header contains {name}; numbers must be finite")


def _parse_header(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise WireFormatError(
            "bad_header", f"header is not UTF-8 ({error.reason} at byte {error.start})"
        ) from None
    try:
        header = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise WireFormatError(
            "bad_header", f"header is not JSON: {error.msg} at char {error.pos}"
        ) from None
    except RecursionError:
        raise WireFormatError("bad_header", "header JSON is nested too deeply") from None
    except WireFormatError:
        raise
    except ValueError as error:  # e.g. an integer literal past Python's digit limit
        raise WireFormatError("bad_header", f"header JSON holds a bad value: {error}") from None
    if not isinstance(header, dict):
        raise WireFormatError(
            "bad_header", f"header must be a JSON object, got {_json_type(header)}"
        )
    _check_fields(header, _HEADER_FIELDS, "header")
    return header


def _check_fields(obj: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise WireFormatError("unknown_field", f"{where} has unknown field(s) {unknown}")


def _require(obj: Mapping[str, Any], name: str, where: str = "header") -> Any:
    if name not in obj:
        raise WireFormatError("missing_field", f"{where}.{name} is missing")
    return obj[name]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _stream_id(header: Mapping[str, Any]) -> str:
    stream_id = _require(header, "stream_id")
    if not isinstance(stream_id, str):
        raise WireFormatError(
            "wrong_type", f"header.stream_id must be a string, got {_json_type(stream_id)}"
        )
    if not stream_id or len(stream_id) > MAX_STREAM_ID_LENGTH:
        raise WireFormatError(
            "bad_value",
            f"header.stream_id must have 1 to {MAX_STREAM_ID_LENGTH} characters, "
            f"got {len(stream_id)}",
        )
    if any(ord(char) < 0x20 for char in stream_id):
        raise WireFormatError("bad_value", "header.stream_id contains control characters")
    try:
        stream_id.encode("utf-8")
    except UnicodeEncodeError:  # JSON "\ud800" escapes decode to lone surrogates
        raise WireFormatError(
            "bad_value", "header.stream_id holds a lone surrogate (not valid Unicode)"
        ) from None
    return stream_id


def _integer(
    obj: Mapping[str, Any], name: str, low: int | None = None, where: str = "header"
) -> int:
    value = _require(obj, name, where)
    if isinstance(value, bool) or not isinstance(value, int):
        raise WireFormatError(
            "wrong_type", f"{where}.{name} must be an integer, got {_json_type(value)}"
        )
    if not _INT64_MIN <= value <= _INT64_MAX or (low is not None and value < low):
        bound = f">= {low}" if low is not None else "a 64-bit integer"
        raise WireFormatError("bad_value", f"{where}.{name} must be {bound}, got {value}")
    return value


def _number(obj: Mapping[str, Any], name: str, where: str = "header") -> float:
    value = _require(obj, name, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WireFormatError(
            "wrong_type", f"{where}.{name} must be a number, got {_json_type(value)}"
        )
    try:
        value = float(value)
    except OverflowError:  # an integer literal beyond float64
        raise WireFormatError("bad_number", f"{where}.{name} is outside float64 range") from None
    if not math.isfinite(value):
        raise WireFormatError("bad_number", f"{where}.{name} is not finite")
    return value


def _image_header(header: Mapping[str, Any]) -> tuple[str, int, int | None, int | None]:
    image = _require(header, "image")
    if not isinstance(image, dict):
        raise WireFormatError(
            "wrong_type", f"header.image must be an object, got {_json_type(image)}"
        )
    _check_fields(image, _IMAGE_FIELDS, "header.image")
    image_format = _require(image, "format", "header.image")
    if image_format not in IMAGE_FORMATS:
        raise WireFormatError(
            "bad_value",
            f"header.image.format must be one of {list(IMAGE_FORMATS)}, got {image_format!r}",
        )
    length = _integer(image, "length", low=0, where="header.image")
    sizes: list[int | None] = []
    for name in ("width", "height"):
        value = image.get(name)
        if value is None and image_format == "none":
            sizes.append(None)
            continue
        if value is None:
            raise WireFormatError("missing_field", f"header.image.{name} is required with an image")
        size = _integer(image, name, low=1, where="header.image")
        if size > MAX_IMAGE_SIDE:
            raise WireFormatError(
                "bad_value", f"header.image.{name} {size} exceeds {MAX_IMAGE_SIDE}"
            )
        sizes.append(size)
    if image_format == "none" and length != 0:
        raise WireFormatError(
            "length_mismatch", f"header.image.length is {length} with format 'none'"
        )
    if image_format != "none" and length == 0:
        raise WireFormatError(
            "length_mismatch", f"header.image.length is 0 with format {image_format!r}"
        )
    if (sizes[0] is None) != (sizes[1] is None):
        raise WireFormatError(
            "missing_field", "header.image.width and height must be given together"
        )
    return image_format, length, sizes[0], sizes[1]


def _number_array(values: Any, where: str, dtype: type) -> np.ndarray:
    """A JSON array of numbers -> numpy, rejecting booleans, nulls and strings by position."""
    if not isinstance(values, list):
        raise WireFormatError("wrong_type", f"{where} must be an array, got {_json_type(values)}")
    integral = dtype is np.int64
    for position, item in enumerate(values):
        ok = isinstance(item, int) if integral else isinstance(item, (int, float))
        if isinstance(item, bool) or not ok:
            kind = "an integer" if integral else "a number"
            raise WireFormatError(
                "wrong_type", f"{where}[{position}] must be {kind}, got {_json_type(item)}"
            )
    try:
        array = np.asarray(values, dtype=dtype)
    except OverflowError:
        limit = "int64" if integral else "float64 range"
        raise WireFormatError("bad_value", f"{where} holds an integer outside {limit}") from None
    if not integral:
        bad = ~np.isfinite(array)
        if bad.any():
            raise WireFormatError(
                "bad_number", f"{where}[{int(np.flatnonzero(bad)[0])}] is not finite"
            )
    return array


def _detections(header: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    detections = _require(header, "detections")
    if not isinstance(detections, dict):
        raise WireFormatError(
            "wrong_type", f"header.detections must be an object, got {_json_type(detections)}"
        )
    _check_fields(detections, _DETECTION_FIELDS, "header.detections")
    boxes = _require(detections, "xyxy", "header.detections")
    if not isinstance(boxes, list):
        raise WireFormatError(
            "wrong_type", f"header.detections.xyxy must be an array, got {_json_type(boxes)}"
        )
    for row, box in enumerate(boxes):
        if not isinstance(box, list) or len(box) != 4:
            got = f"{len(box)} values" if isinstance(box, list) else _json_type(box)
            raise WireFormatError(
                "bad_box", f"header.detections.xyxy[{row}] must be [x1, y1, x2, y2], got {got}"
            )
    flat = [value for box in boxes for value in box]
    xyxy = _number_array(flat, "header.detections.xyxy (flattened)", np.float64).reshape(-1, 4)
    if xyxy.size and (np.abs(xyxy) > np.finfo(np.float32).max).any():
        raise WireFormatError("bad_box", "header.detections.xyxy has values outside float32 range")
    inverted = (xyxy[:, 2] <= xyxy[:, 0]) | (xyxy[:, 3] <= xyxy[:, 1])
    if inverted.any():
        row = int(np.flatnonzero(inverted)[0])
        raise WireFormatError(
            "bad_box",
            f"header.detections.xyxy[{row}] = {xyxy[row].tolist()} is inverted or empty "
            "(needs x2 > x1 and y2 > y1)",
        )
    n = len(xyxy)
    confidence = _number_array(
        _require(detections, "confidence", "header.detections"),
        "header.detections.confidence",
        np.float64,
    )
    class_id = _number_array(
        _require(detections, "class_id", "header.detections"),
        "header.detections.class_id",
        np.int64,
    )
    for name, array in (("confidence", confidence), ("class_id", class_id)):
        if len(array) != n:
            raise WireFormatError(
                "length_mismatch",
                f"header.detections.{name} has {len(array)} entries for {n} boxes",
            )
    if confidence.size and (np.abs(confidence) > np.finfo(np.float32).max).any():
        row = int(np.flatnonzero(np.abs(confidence) > np.finfo(np.float32).max)[0])
        raise WireFormatError(
            "bad_number", f"header.detections.confidence[{row}] is outside float32 range"
        )
    return xyxy.astype(np.float32), confidence.astype(np.float32), class_id


def _embedding_header(header: Mapping[str, Any], num_detections: int) -> tuple[int, int] | None:
    embeddings = _require(header, "embeddings")
    if embeddings is None:
        return None
    if not isinstance(embeddings, dict):
        raise WireFormatError(
            "wrong_type",
            f"header.embeddings must be an object or null, got {_json_type(embeddings)}",
        )
    _check_fields(embeddings, _EMBEDDING_FIELDS, "header.embeddings")
    dtype = _require(embeddings, "dtype", "header.embeddings")
    if dtype != "float32":
        raise WireFormatError(
            "bad_value", f"header.embeddings.dtype must be 'float32', got {dtype!r}"
        )
    shape = _require(embeddings, "shape", "header.embeddings")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) for v in shape)
    ):
        raise WireFormatError(
            "wrong_type", f"header.embeddings.shape must be [N, D] integers, got {shape!r}"
        )
    rows, dim = shape
    if rows != num_detections:
        raise WireFormatError(
            "length_mismatch", f"header.embeddings.shape has {rows} rows for {num_detections} boxes"
        )
    if not 1 <= dim <= MAX_EMBEDDING_DIM:
        raise WireFormatError(
            "bad_value", f"header.embeddings.shape D must be in [1, {MAX_EMBEDDING_DIM}], got {dim}"
        )
    return rows, dim


# --------------------------------------------------------------------------- images
def image_size(data: bytes, image_format: str) -> tuple[int, int]:
    """(width, height) read from a JPEG SOF or PNG IHDR header; raises WireFormatError if absent."""
    if image_format == "png":
        if len(data) < 24 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
            raise WireFormatError("bad_image", "PNG signature or IHDR chunk missing")
        width, height = struct.unpack_from(">II", data, 16)
        return int(width), int(height)
    if image_format == "jpeg":
        position = 2
        end = len(data)
        while position + 4 <= end:
            if data[position] != 0xFF:
                raise WireFormatError("bad_image", f"JPEG marker expected at byte {position}")
            marker = data[position + 1]
            if marker == 0xFF:  # fill byte
                position += 1
                continue
            if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
                position += 2
                continue
            segment_length = int.from_bytes(data[position + 2 : position + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                if position + 9 > end:
                    break
                height, width = struct.unpack_from(">HH", data, position + 5)
                return int(width), int(height)
            if marker == 0xDA:  # start of scan before any frame header
                break
            position += 2 + segment_length
        raise WireFormatError("bad_image", "JPEG frame header (SOF) not found")
    raise WireFormatError("bad_value", f"no image size for format {image_format!r}")


def _check_image(image: bytes, image_format: str, width: int | None, height: int | None) -> None:
    """Cheap structural checks: signature, end marker (catches truncation), declared size."""
    if image_format == "jpeg":
        if not image.startswith(_JPEG_SOI):
            raise WireFormatError("bad_image", "image is not a JPEG (no start-of-image marker)")
        if image.rfind(_JPEG_EOI, max(0, len(image) - _JPEG_TRAILER_SLACK)) < 0:
            raise WireFormatError("bad_image", "JPEG is truncated (no end-of-image marker)")
    elif image_format == "png":
        if not image.startswith(_PNG_SIGNATURE):
            raise WireFormatError("bad_image", "image is not a PNG (bad signature)")
        if not image.endswith(_PNG_IEND):
            raise WireFormatError("bad_image", "PNG is truncated (no IEND chunk at the end)")
    actual = image_size(image, image_format)
    if (width, height) != actual:
        raise WireFormatError(
            "bad_image",
            f"header says {width}x{height} but the {image_format.upper()} is "
            f"{actual[0]}x{actual[1]}",
        )


# --------------------------------------------------------------------------- results
def encode_result(
    stream_id: str,
    frame_index: int,
    timestamp: float,
    tracks: Mapping[str, np.ndarray],
    job_version: str,
    source: Mapping[str, Any] | None = None,
) -> bytes:
    """One results-topic message (UTF-8 JSON); `tracks` holds per-track arrays of equal length:
    tracker_id, detection_index, xyxy [K, 4], confidence, class_id."""
    tracker_id = np.asarray(tracks["tracker_id"], np.int64).tolist()
    detection_index = np.asarray(tracks["detection_index"], np.int64).tolist()
    xyxy = np.asarray(tracks["xyxy"], np.float32).reshape(-1, 4).tolist()
    confidence = np.asarray(tracks["confidence"], np.float32).tolist()
    class_id = np.asarray(tracks["class_id"], np.int64).tolist()
    message = {
        "schema": RESULT_SCHEMA,
        "version": RESULT_VERSION,
        "job_version": job_version,
        "stream_id": stream_id,
        "frame_index": int(frame_index),
        "timestamp": float(timestamp),
        "tracks": [
            {"tracker_id": t, "detection_index": d, "xyxy": b, "confidence": c, "class_id": k}
            for t, d, b, c, k in zip(
                tracker_id, detection_index, xyxy, confidence, class_id, strict=True
            )
        ],
        "source": dict(source) if source is not None else None,
    }
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode("utf-8")


def decode_result(value: bytes) -> dict[str, Any]:
    """Parse a results-topic message (for consumers and tests); checks schema and version."""
    message = json.loads(value.decode("utf-8"))
    if message.get("schema") != RESULT_SCHEMA or message.get("version") != RESULT_VERSION:
        raise ValueError(
            f"not a {RESULT_SCHEMA} v{RESULT_VERSION} message: "
            f"{message.get('schema')!r} v{message.get('version')!r}"
        )
    return message


def dead_letter_headers(
    reason: str, source_topic: str, source_partition: int, source_offset: int
) -> list[tuple[str, bytes]]:
    """Kafka headers of a dead letter (the value is the original message bytes)."""
    return [
        ("reason", reason.encode("utf-8")),
        ("source_topic", source_topic.encode("utf-8")),
        ("source_partition", str(int(source_partition)).encode("ascii")),
        ("source_offset", str(int(source_offset)).encode("ascii")),
    ]
