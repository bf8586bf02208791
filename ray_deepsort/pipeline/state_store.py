"""Tracker state checkpoints next to the Parquet output, consistent with committed offsets.

Layout under `<output>/_checkpoints/<topic>-<partition>/`:

- `streams/<safe prefix>-<sha256[:16]>.npz`: one stream's `DeepSORTTracker.state_dict()` arrays
  (`state__*`) plus what they cover (`meta__stream_id`, `meta__topic` as UTF-8 bytes,
  `meta__partition`, `meta__offset` = offset of the last frame included). Written with
  `np.savez` and read with `allow_pickle=False`: a checkpoint can never run code.
- `manifest.json`: the partition's commit point, written after the stream files it names.
  `offset` is the next input offset it covers: every frame of the partition before it is
  reflected in the named stream files (a stream file may be newer than the manifest; its own
  `meta__offset` says how far it goes).

Stream ids are user data (Kafka keys): file names use a sanitised prefix plus a hash of the whole
id, so no id can escape the folder or collide with another by sanitising.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs

from ray_deepsort.pipeline.parquet import resolve_root, write_atomically

CHECKPOINT_DIR = "_checkpoints"
FORMAT_VERSION = 1
_STATE_PREFIX = "state__"
_META_PREFIX = "meta__"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")  # no dots: ".." can never appear
_PREFIX_CHARS = 32


class CheckpointError(ValueError):
    """A checkpoint file that is missing, malformed, pickled or for another stream."""


def path_component(text: str) -> str:
    """A file or folder name for any text (a stream id from the wire, a topic): never `/`, `..`,
    NUL or absolute. A readable prefix keeps [A-Za-z0-9_-] and a SHA-256 suffix of the exact
    text keeps distinct texts distinct (`cam/1` vs `cam_1`)."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    prefix = _UNSAFE.sub("_", text)[:_PREFIX_CHARS] or "_"
    return f"{prefix}-{digest}"


def stream_file_name(stream_id: str) -> str:
    return f"{path_component(stream_id)}.npz"


def partition_folder(topic: str, partition: int) -> str:
    if partition < 0:
        raise ValueError("partition must be >= 0")
    return f"{path_component(topic)}-{partition:05d}"


@dataclass(frozen=True, eq=False)
class StreamCheckpoint:
    """One stream's tracker state and the input position of the last frame it includes."""

    stream_id: str
    topic: str
    partition: int
    offset: int
    state: dict[str, np.ndarray]


@dataclass
class PartitionManifest:
    """Commit point of one input partition: `offset` = next offset covered; stream -> file."""

    topic: str
    partition: int
    offset: int
    streams: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        data = {
            "format_version": FORMAT_VERSION,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "streams": dict(sorted(self.streams.items())),
        }
        return json.dumps(data, indent=1).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, source: str = "manifest") -> PartitionManifest:
        """Parse and check every field; `CheckpointError` names `source` and the field."""
        try:
            parsed = json.loads(data)
        except (UnicodeDecodeError, ValueError) as error:
            raise CheckpointError(f"{source}: malformed manifest: not JSON ({error})") from None
        if not isinstance(parsed, dict):
            raise CheckpointError(
                f"{source}: malformed manifest: must be a JSON object, got {type(parsed).__name__}"
            )
        missing = [k for k in ("format_version", "topic", "partition", "offset", "streams")
                   if k not in parsed]  # fmt: skip
        if missing:
            raise CheckpointError(f"{source}: malformed manifest: field {missing[0]!r} is missing")
        if parsed["format_version"] != FORMAT_VERSION:
            raise CheckpointError(
                f"{source}: malformed manifest: field 'format_version': unsupported format "
                f"{parsed['format_version']!r}"
            )
        if not isinstance(parsed["topic"], str):
            raise CheckpointError(f"{source}: malformed manifest: field 'topic' must be a string")
        for name in ("partition", "offset"):
            value = parsed[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise CheckpointError(
                    f"{source}: malformed manifest: field {name!r} must be an integer >= 0"
                )
        streams = parsed["streams"]
        if not isinstance(streams, dict) or not all(
            isinstance(k, str) and v == stream_file_name(k) for k, v in streams.items()
        ):
            raise CheckpointError(
                f"{source}: malformed manifest: field 'streams' must map stream id -> its file name"
            )
        return cls(
            topic=parsed["topic"],
            partition=parsed["partition"],
            offset=parsed["offset"],
            streams=dict(streams),
        )


def encode_stream(checkpoint: StreamCheckpoint) -> bytes:
    """npz bytes of one stream checkpoint (numeric arrays only)."""
    arrays: dict[str, np.ndarray] = {
        f"{_META_PREFIX}format_version": np.asarray(FORMAT_VERSION, np.int64),
        f"{_META_PREFIX}stream_id": np.frombuffer(checkpoint.stream_id.encode("utf-8"), np.uint8),
        f"{_META_PREFIX}topic": np.frombuffer(checkpoint.topic.encode("utf-8"), np.uint8),
        f"{_META_PREFIX}partition": np.asarray(checkpoint.partition, np.int64),
        f"{_META_PREFIX}offset": np.asarray(checkpoint.offset, np.int64),
    }
    for key, value in checkpoint.state.items():
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise CheckpointError(f"state array {key!r} holds Python objects")
        arrays[f"{_STATE_PREFIX}{key}"] = array
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def decode_stream(data: bytes, source: str = "checkpoint") -> StreamCheckpoint:
    """Inverse of `encode_stream`; refuses pickled (object) arrays and malformed metadata.

    The tracker state itself is validated by `DeepSORTTracker.load_state_dict`.
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:  # objects: ValueError
        raise CheckpointError(f"{source}: not a checkpoint file: {error}") from None

    def meta(name: str) -> np.ndarray:
        key = f"{_META_PREFIX}{name}"
        if key not in arrays:
            raise CheckpointError(f"{source}: malformed checkpoint: field {key!r} is missing")
        return arrays[key]

    def integer(name: str) -> int:
        value = meta(name)
        if value.dtype.kind not in "iu" or value.size != 1 or int(value.reshape(())) < 0:
            raise CheckpointError(
                f"{source}: malformed checkpoint: field '{_META_PREFIX}{name}' must be an int >= 0"
            )
        return int(value.reshape(()))

    def text(name: str) -> str:
        value = meta(name)
        if value.dtype != np.uint8 or value.ndim != 1:
            raise CheckpointError(
                f"{source}: malformed checkpoint: field '{_META_PREFIX}{name}' must be UTF-8 bytes"
            )
        try:
            return value.tobytes().decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(
                f"{source}: malformed checkpoint: field '{_META_PREFIX}{name}' is not UTF-8"
            ) from None

    if integer("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{source}: malformed checkpoint: unsupported checkpoint format")
    return StreamCheckpoint(
        stream_id=text("stream_id"),
        topic=text("topic"),
        partition=integer("partition"),
        offset=integer("offset"),
        state={
            key[len(_STATE_PREFIX) :]: value
            for key, value in arrays.items()
            if key.startswith(_STATE_PREFIX)
        },
    )


class CheckpointStore:
    """Reads and writes checkpoints under `<root>/_checkpoints` (local path or pyarrow URI).

    Local files go to a hidden temp name, are fsync'd (when `fsync`) and renamed into place;
    object stores publish an object atomically when its stream is closed.
    """

    def __init__(self, root: str | os.PathLike[str], fsync: bool = True) -> None:
        self.filesystem, base, self.local = resolve_root(root)
        self.root = f"{base.rstrip('/')}/{CHECKPOINT_DIR}"
        self.fsync = fsync

    def partition_path(self, topic: str, partition: int) -> str:
        return f"{self.root}/{partition_folder(topic, partition)}"

    def stream_path(self, topic: str, partition: int, stream_id: str) -> str:
        return f"{self.partition_path(topic, partition)}/streams/{stream_file_name(stream_id)}"

    def manifest_path(self, topic: str, partition: int) -> str:
        return f"{self.partition_path(topic, partition)}/manifest.json"

    # ----------------------------------------------------------------- streams
    def write_stream(self, checkpoint: StreamCheckpoint) -> str:
        """Write one stream checkpoint atomically; returns its file name."""
        path = self.stream_path(checkpoint.topic, checkpoint.partition, checkpoint.stream_id)
        self._write_atomic(path, encode_stream(checkpoint))
        return path.rsplit("/", 1)[-1]

    def read_stream(self, topic: str, partition: int, stream_id: str) -> StreamCheckpoint:
        """The checkpoint of `stream_id`; checks it really is that stream's and partition's."""
        path = self.stream_path(topic, partition, stream_id)
        checkpoint = decode_stream(self._read(path), source=path)
        if (checkpoint.stream_id, checkpoint.topic, checkpoint.partition) != (
            stream_id,
            topic,
            partition,
        ):
            raise CheckpointError(
                f"{path} holds stream {checkpoint.stream_id!r} of "
                f"{checkpoint.topic}[{checkpoint.partition}], expected {stream_id!r}"
            )
        return checkpoint

    # ----------------------------------------------------------------- manifests
    def write_manifest(self, manifest: PartitionManifest) -> None:
        self._write_atomic(
            self.manifest_path(manifest.topic, manifest.partition), manifest.to_json()
        )

    def read_manifest(self, topic: str, partition: int) -> PartitionManifest | None:
        """The partition's manifest, or None if it has none yet."""
        path = self.manifest_path(topic, partition)
        if self.filesystem.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        manifest = PartitionManifest.from_json(self._read(path), source=path)
        if (manifest.topic, manifest.partition) != (topic, partition):
            raise CheckpointError(f"{path} is the manifest of another partition")
        return manifest

    # ----------------------------------------------------------------- bytes
    def _read(self, path: str) -> bytes:
        try:
            with self.filesystem.open_input_stream(path) as stream:
                return stream.read()
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint file {path} is missing") from None

    def _write_atomic(self, path: str, data: bytes) -> None:
        final = Path(path)
        write_atomically(
            self.filesystem,
            self.local,
            path,
            lambda sink: sink.write(data),
            temporary=str(final.with_name(f".{final.name}.tmp")),
            fsync=self.fsync,
        )
