"""Fuzzing the RDSF decoder: whatever arrives, `decode_frame` returns a valid frame or raises
`WireFormatError` with a documented code and a reason; never another exception, never a hang.

Also: stream ids from the wire never become unsafe path components, and the configured
`max_message_bytes` is enforced before any parsing.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ray_deepsort.pipeline.parquet import ParquetResultWriter, batch_file_stem
from ray_deepsort.pipeline.state_store import path_component, stream_file_name
from ray_deepsort.pipeline.types import FrameResult, SourcePosition
from ray_deepsort.stream.config import load_config
from ray_deepsort.stream.wire import (
    MAGIC,
    MAX_STREAM_ID_LENGTH,
    PREAMBLE,
    VERSION,
    FrameMessage,
    WireFormatError,
    decode_frame,
    encode_frame,
)

DOCS = Path(__file__).resolve().parents[3] / "docs" / "wire-format.md"
# Codes `decode_frame` may raise: the documented table minus those found later by the actors.
DOCUMENTED_CODES = frozenset(re.findall(r"^\| `([a-z_]+)` \|", DOCS.read_text(), re.MULTILINE))
DECODER_CODES = DOCUMENTED_CODES - {"out_of_order"}
HANG_LIMIT_S = 2.0
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _image(fmt: str, width: int, height: int) -> bytes:
    pixels = np.random.default_rng(width).integers(0, 255, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", pixels)
    assert ok
    return data.tobytes()


def _frame(n: int, fmt: str, dim: int | None, stream_id: str = "cam-1") -> FrameMessage:
    rng = np.random.default_rng(n + (dim or 0))
    xy = rng.uniform(0, 10, (n, 2))
    xyxy = np.concatenate([xy, xy + rng.uniform(1, 5, (n, 2))], axis=1).astype(np.float32)
    return FrameMessage(
        stream_id=stream_id,
        frame_index=3,
        timestamp=1_700_000_000.5,
        xyxy=xyxy,
        confidence=rng.uniform(0, 1, n).astype(np.float32),
        class_id=np.arange(n, dtype=np.int64),
        image=None if fmt == "none" else _image(fmt, 16, 12),
        image_format=fmt,
        width=None if fmt == "none" else 16,
        height=None if fmt == "none" else 12,
        embeddings=None if dim is None else rng.normal(size=(n, dim)).astype(np.float32),
    )


# Seeds of every shape the decoder accepts: image or not, embeddings or not, zero detections.
SEEDS: list[bytes] = [
    encode_frame(_frame(2, "jpeg", 4)),
    encode_frame(_frame(3, "png", None)),
    encode_frame(_frame(1, "none", 8)),
    encode_frame(_frame(0, "none", None)),
]
KEY = b"cam-1"


def _split(value: bytes) -> tuple[dict[str, Any], bytes]:
    length = PREAMBLE.unpack_from(value, 0)[2]
    return json.loads(value[PREAMBLE.size : PREAMBLE.size + length]), value[
        PREAMBLE.size + length :
    ]


def _build(header: dict[str, Any] | bytes, payload: bytes) -> bytes:
    raw = (
        header if isinstance(header, bytes) else json.dumps(header).encode("utf-8", "surrogatepass")
    )
    return PREAMBLE.pack(MAGIC, VERSION, len(raw)) + raw + payload


@contextlib.contextmanager
def _hang_guard(seconds: float = HANG_LIMIT_S) -> Iterator[None]:
    """Fail (instead of hanging the suite) when one decode takes longer than `seconds`."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"decode_frame took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _assert_valid(frame: FrameMessage, key: bytes | None) -> None:
    """Everything downstream relies on for a decoded frame."""
    assert isinstance(frame.stream_id, str)
    assert 1 <= len(frame.stream_id) <= MAX_STREAM_ID_LENGTH
    assert key is None or frame.stream_id.encode("utf-8") == key
    assert isinstance(frame.frame_index, int) and frame.frame_index >= 0
    assert math.isfinite(frame.timestamp)
    n = frame.num_detections
    assert frame.xyxy.dtype == np.float32 and frame.xyxy.shape == (n, 4)
    assert np.isfinite(frame.xyxy).all()
    assert (frame.xyxy[:, 2] > frame.xyxy[:, 0]).all()
    assert (frame.xyxy[:, 3] > frame.xyxy[:, 1]).all()
    assert frame.confidence.dtype == np.float32 and frame.confidence.shape == (n,)
    assert np.isfinite(frame.confidence).all()
    assert frame.class_id.dtype == np.int64 and frame.class_id.shape == (n,)
    if frame.embeddings is not None:
        assert frame.embeddings.dtype == np.float32 and frame.embeddings.shape[0] == n
        assert np.isfinite(frame.embeddings).all()
    assert (frame.image is None) == (frame.image_format == "none")
    # A decoded frame re-encodes to a message that decodes to the same frame.
    again = decode_frame(encode_frame(frame), key, require_key=key is not None)
    assert again.stream_id == frame.stream_id and again.frame_index == frame.frame_index
    np.testing.assert_array_equal(again.xyxy, frame.xyxy)
    np.testing.assert_array_equal(again.class_id, frame.class_id)


def _outcome(value: bytes | None, key: bytes | None = KEY, **kwargs: Any) -> str | None:
    """None for a valid frame, else the error code; any other exception fails the test."""
    try:
        with _hang_guard():
            frame = decode_frame(value, key, **kwargs)
    except WireFormatError as error:
        assert error.code in DECODER_CODES, error.reason
        assert error.reason == f"{error.code}: {error.detail}" and error.detail.strip()
        return error.code
    _assert_valid(frame, key)
    return None


def test_documented_codes_were_found() -> None:
    assert {"too_large", "truncated", "bad_magic", "bad_header", "bad_box"} <= DECODER_CODES


# ----------------------------------------------------------------------------- random bytes
@settings(FUZZ, max_examples=1000)
@given(
    data=st.binary(max_size=1500),
    prefix=st.sampled_from(["raw", "magic", "preamble"]),
    key=st.one_of(st.none(), st.just(KEY), st.binary(max_size=20)),
)
def test_random_bytes(data: bytes, prefix: str, key: bytes | None) -> None:
    if prefix == "magic":
        data = MAGIC + bytes([VERSION]) + data
    elif prefix == "preamble":  # a well-formed preamble whose header is the random bytes
        data = _build(data, b"")
    assert _outcome(data, key) is not None or data.startswith(MAGIC)


# ----------------------------------------------------------------------- byte-level mutations
def _flip(value: bytearray, position: int, bit: int) -> None:
    value[position % len(value)] ^= 1 << bit


MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.integers(1, 40)),
    st.tuples(st.just("overwrite"), st.integers(0, 10_000), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("header_length"), st.integers(0, 2**32 - 1)),
)


def _mutate(value: bytes, mutations: list[tuple[Any, ...]]) -> bytes:
    out = bytearray(value)
    for op, *args in mutations:
        if not out:
            break
        position = args[0] % (len(out) + 1) if op != "header_length" else 0
        if op == "flip":
            _flip(out, position, args[1])
        elif op == "truncate":
            del out[position:]
        elif op == "insert":
            out[position:position] = args[1]
        elif op == "delete":
            del out[position : position + args[1]]
        elif op == "overwrite":
            out[position : position + len(args[1])] = args[1]
        elif op == "header_length" and len(out) >= PREAMBLE.size:
            out[5:9] = struct.pack(">I", args[0])
    return bytes(out)


@settings(FUZZ, max_examples=1500)
@given(
    seed=st.sampled_from(SEEDS),
    mutations=st.lists(MUTATION, min_size=1, max_size=4),
)
def test_byte_mutations_of_valid_messages(seed: bytes, mutations: list[tuple[Any, ...]]) -> None:
    _outcome(_mutate(seed, mutations))


def test_every_single_bit_flip_of_a_header() -> None:
    """Exhaustive: each bit of the preamble and header of the smallest seed, flipped once."""
    seed = SEEDS[3]
    header_end = PREAMBLE.size + PREAMBLE.unpack_from(seed, 0)[2]
    codes = set()
    for position in range(header_end):
        for bit in range(8):
            value = bytearray(seed)
            _flip(value, position, bit)
            codes.add(_outcome(bytes(value)))
    # Flips hit the magic, version, length, JSON syntax, field names and values.
    assert {"bad_magic", "unsupported_version", "truncated", "bad_header"} <= codes


# ---------------------------------------------------------------------- header field mutations
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63, -(2**63) - 1, 10**400, -(10**400), 0, -1, 2**32, 65536, 65537]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["jpeg", "png", "none", "float32", "../", "\ud800", "\x00"]),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path inside a JSON document (containers included)."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, child in node.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _paths(child, (*prefix, index))
    return found


def _set(document: Any, path: tuple[Any, ...], value: Any, delete: bool) -> None:
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value


@settings(FUZZ, max_examples=1000)
@given(
    seed=st.sampled_from(SEEDS),
    choice=st.integers(min_value=0),
    value=JSON_VALUES,
    action=st.sampled_from(["replace", "replace", "replace", "delete", "add"]),
)
def test_header_field_mutations(seed: bytes, choice: int, value: Any, action: str) -> None:
    header, payload = _split(seed)
    if action == "add":
        header.setdefault("detections", {})["extra"] = value
        raw = json.dumps(header, allow_nan=True).encode("utf-8", "surrogatepass")
        # Unless the added value is itself unparsable (NaN, lone surrogate), the field is named.
        assert _outcome(_build(raw, payload)) in {"unknown_field", "bad_number", "bad_header"}
        return
    paths = _paths(header)
    _set(header, paths[choice % len(paths)], value, delete=action == "delete")
    raw = json.dumps(header, allow_nan=True).encode("utf-8", "surrogatepass")
    _outcome(_build(raw, payload))


@settings(FUZZ, max_examples=200)
@given(
    seed=st.sampled_from(SEEDS[:3]),
    image_length=st.integers(min_value=0, max_value=2**64),
    rows=st.integers(min_value=0, max_value=2**40),
    dim=st.integers(min_value=0, max_value=2**40),
)
def test_huge_declared_lengths(seed: bytes, image_length: int, rows: int, dim: int) -> None:
    header, payload = _split(seed)
    original = json.dumps(header)
    header["image"]["length"] = image_length
    if header["embeddings"] is not None:
        header["embeddings"]["shape"] = [rows, dim]
    # Declared sizes are checked against the real byte count, never allocated.
    code = _outcome(_build(header, payload))
    if json.dumps(header) == original:
        assert code is None
    else:
        assert code in {"truncated", "length_mismatch", "bad_value"}


BAD_NUMBERS = [math.nan, math.inf, -math.inf, 1e39, -1e39, 10**400]


@settings(FUZZ, max_examples=150)
@given(
    row=st.integers(0, 1),
    column=st.integers(0, 3),
    bad=st.sampled_from(BAD_NUMBERS),
    where=st.sampled_from(["xyxy", "confidence", "timestamp", "embeddings"]),
)
def test_nan_inf_and_overflowing_numbers_are_rejected(
    row: int, column: int, bad: float, where: str
) -> None:
    header, payload = _split(SEEDS[0])  # 2 boxes, jpeg, embeddings [2, 4]
    if where == "xyxy":
        header["detections"]["xyxy"][row][column] = bad
        expected = {"bad_number", "bad_box", "bad_value"}
    elif where == "confidence":
        header["detections"]["confidence"][row] = bad
        expected = {"bad_number", "bad_value"}
    elif where == "timestamp":
        header["timestamp"] = bad
        expected = {"bad_number", "bad_value"}  # finite but past year 9999: bad_value
    else:  # the float32 payload itself
        image_length = header["image"]["length"]
        embeddings = np.frombuffer(payload[image_length:], "<f4").copy()
        with np.errstate(over="ignore"):  # 1e39 and 10**400 become inf in float32
            embeddings[row * 4 + column] = np.float32(bad if isinstance(bad, float) else math.inf)
        payload = payload[:image_length] + embeddings.tobytes()
        expected = {"bad_embeddings"}
    raw = json.dumps(header, allow_nan=True).encode()
    assert _outcome(_build(raw, payload)) in expected


# ------------------------------------------------------------------------------- stream ids
def _stream_id_is_valid(text: str) -> bool:
    """The documented rule, written independently of the decoder."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return 1 <= len(text) <= MAX_STREAM_ID_LENGTH and all(ord(c) >= 0x20 for c in text)


TRAVERSAL_IDS = ["../", "..", "../../etc/passwd", "/etc/passwd", "a/../../b", "C:\\x", "./.", "~"]
STREAM_IDS = st.one_of(
    st.text(max_size=300),
    st.sampled_from(TRAVERSAL_IDS),
    st.text(alphabet=st.sampled_from("./\\\x00~é"), min_size=1, max_size=12),
)


@settings(FUZZ, max_examples=500)
@given(stream_id=STREAM_IDS, key_from_id=st.booleans())
def test_unicode_and_traversal_stream_ids(stream_id: str, key_from_id: bool) -> None:
    header, payload = _split(SEEDS[3])
    header["stream_id"] = stream_id
    key = stream_id.encode("utf-8", "surrogatepass") if key_from_id else None
    code = _outcome(_build(header, payload), key, require_key=False)
    if _stream_id_is_valid(stream_id):
        assert code is None  # path-like ids are data, never rejected and never used as paths
    else:
        assert code == "bad_value"


@settings(FUZZ, max_examples=400)
@given(first=STREAM_IDS, second=STREAM_IDS)
def test_stream_file_names_are_safe_and_distinct(first: str, second: str) -> None:
    """Any stream id the wire accepts names one tracker-state file inside its folder."""
    root = Path("/srv/output").resolve()
    for stream_id in (first, second):
        name = path_component(stream_id)
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,32}-[0-9a-f]{16}", name), name
        assert (root / stream_file_name(stream_id)).resolve().parent == root
    if first != second:
        assert stream_file_name(first) != stream_file_name(second)


def test_parquet_paths_never_contain_stream_ids(tmp_path: Path) -> None:
    """The stream job's Parquet layout uses time and the Kafka topic, not the stream id."""
    root = tmp_path / "out"
    writer = ParquetResultWriter(root, fsync=False)
    hostile = [*TRAVERSAL_IDS[:6], "cam\x7f", "é/ü"]
    results = [
        FrameResult(
            stream_id=stream_id,
            frame_index=0,
            timestamp=1_700_000_000.0 + i,
            xyxy=np.array([[0, 0, 4, 4]], np.float32),
            confidence=np.ones(1, np.float32),
            class_id=np.zeros(1, np.int64),
            tracker_id=np.array([i + 1], np.int64),
            position=SourcePosition("frames", 0, i),
        )
        for i, stream_id in enumerate(hostile)
    ]
    written = writer.write(batch_file_stem("../frames/..", 0, 0), results)
    files = [Path(p) for p in written]
    assert files and all(p.resolve().is_relative_to(root.resolve()) for p in files)
    assert {p for p in tmp_path.rglob("*") if p.is_file()} == set(files)
    assert all(".." not in p.relative_to(root).parts for p in files)
    stored = [pq.read_table(str(p)).column("stream_id").to_pylist() for p in files]
    frames = [ids for p, ids in zip(files, stored, strict=True) if "frames" in p.parts]
    assert sorted(id for ids in frames for id in ids) == sorted(hostile)  # kept as data


# ----------------------------------------------------------------------------- message size
@settings(FUZZ, max_examples=200)
@given(seed=st.sampled_from(SEEDS), limit=st.integers(min_value=1, max_value=4000))
def test_max_message_bytes_is_enforced(seed: bytes, limit: int) -> None:
    code = _outcome(seed, max_message_bytes=limit)
    assert (code == "too_large") == (len(seed) > limit)
    assert code in (None, "too_large")


def test_oversized_garbage_is_rejected_before_parsing() -> None:
    """A 17 MB message over the default 16 MiB limit: rejected by size, quickly, with a reason."""
    value = MAGIC + bytes([VERSION]) + b"\xff" * (17 * 1024 * 1024)
    with pytest.raises(WireFormatError) as caught, _hang_guard(0.5):
        decode_frame(value, KEY)
    assert caught.value.code == "too_large"
    assert f"message is {len(value)} bytes, limit is {16 * 1024 * 1024}" in caught.value.reason


def test_configured_limit_reaches_the_decoder_setting() -> None:
    config = load_config(overrides=["kafka.max_message_bytes=4096"])
    big = encode_frame(_frame(200, "none", 8))
    assert len(big) > 4096
    with pytest.raises(WireFormatError, match=r"too_large: .* limit is 4096"):
        decode_frame(big, KEY, max_message_bytes=config.kafka.max_message_bytes)


def test_decoder_never_unpickles_or_evaluates() -> None:
    """A pickle and a Python expression in every string field are data, not code."""
    import pickle

    header, payload = _split(SEEDS[3])
    header["stream_id"] = "__import__('os').system('false')"
    value = _build(header, payload)
    frame = decode_frame(value, header["stream_id"].encode())
    assert frame.stream_id == header["stream_id"]
    pickled = pickle.dumps({"stream_id": "x"})
    assert _outcome(pickled) == "bad_magic"
    assert _outcome(MAGIC + bytes([VERSION]) + struct.pack(">I", len(pickled)) + pickled) in {
        "bad_header"
    }
