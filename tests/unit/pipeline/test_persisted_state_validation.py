"""Checkpoint and archive manifests refuse malformed content by file and field (issue 16, 3).

Never a bare KeyError, TypeError or AttributeError: a clear ValueError subclass that names the
file and the field, so the job can apply its policy (log, fall back, redo) on it.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from ray_deepsort.archive.output import ArchiveStore, Manifest, ManifestEntry, ManifestError
from ray_deepsort.core import DeepSORTTracker, Detections
from ray_deepsort.pipeline.state_store import (
    CheckpointError,
    CheckpointStore,
    PartitionManifest,
    StreamCheckpoint,
    decode_stream,
    encode_stream,
    stream_file_name,
)

GOOD_MANIFEST = {
    "format_version": 1,
    "topic": "frames",
    "partition": 0,
    "offset": 7,
    "streams": {"cam0": stream_file_name("cam0")},
}


@pytest.mark.parametrize(
    "change,field",
    [
        ({"topic": None}, "'topic'"),
        ({"partition": "0"}, "'partition'"),
        ({"partition": -1}, "'partition'"),
        ({"offset": 1.5}, "'offset'"),
        ({"offset": True}, "'offset'"),
        ({"streams": ["cam0"]}, "'streams'"),
        ({"streams": {"cam0": "../x.npz"}}, "'streams'"),
        ({"format_version": 2}, "'format_version'"),
    ],
)
def test_partition_manifest_names_the_field(change: dict, field: str) -> None:
    data = json.dumps({**GOOD_MANIFEST, **change}).encode()
    with pytest.raises(CheckpointError, match=f"m.json: malformed manifest: field {field}"):
        PartitionManifest.from_json(data, source="m.json")


@pytest.mark.parametrize("key", sorted(GOOD_MANIFEST))
def test_partition_manifest_missing_field(key: str) -> None:
    data = json.dumps({k: v for k, v in GOOD_MANIFEST.items() if k != key}).encode()
    with pytest.raises(CheckpointError, match=f"field '{key}' is missing"):
        PartitionManifest.from_json(data, source="m.json")


@pytest.mark.parametrize("data", [b"[1, 2]", b"null", b"\xff\xfe", b'{"topic": '])
def test_partition_manifest_that_is_not_an_object(data: bytes) -> None:
    with pytest.raises(CheckpointError, match=r"m\.json: malformed manifest"):
        PartitionManifest.from_json(data, source="m.json")


def test_manifest_read_from_disk_names_the_file(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, fsync=False)
    path = Path(store.manifest_path("frames", 0))
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({**GOOD_MANIFEST, "offset": "seven"}))
    with pytest.raises(
        CheckpointError, match=re.escape(f"{path}: malformed manifest: field 'offset'")
    ):
        store.read_manifest("frames", 0)
    assert PartitionManifest.from_json(json.dumps(GOOD_MANIFEST).encode()).offset == 7


def _stream_bytes(**overrides: np.ndarray) -> bytes:
    data = encode_stream(StreamCheckpoint("cam0", "frames", 0, 5, {"x": np.zeros(2)}))
    with np.load(io.BytesIO(data)) as archive:
        arrays = {key: archive[key] for key in archive.files}
    for key, value in overrides.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"meta__offset": None}, "meta__offset"),
        ({"meta__offset": np.asarray(np.nan)}, "meta__offset"),
        ({"meta__offset": np.asarray([1, 2])}, "meta__offset"),
        ({"meta__partition": np.asarray(-1)}, "meta__partition"),
        ({"meta__stream_id": np.asarray([0xFF, 0xFE], np.uint8)}, "meta__stream_id"),
        ({"meta__topic": np.asarray(3.0)}, "meta__topic"),
        ({"meta__format_version": np.asarray(9)}, "unsupported"),
    ],
)
def test_stream_file_metadata_names_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(CheckpointError, match=f"s.npz: malformed checkpoint: .*{field}"):
        decode_stream(_stream_bytes(**overrides), source="s.npz")


def test_stream_file_garbage_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"s\.npz: not a checkpoint file"):
        decode_stream(b"PK\x03\x04 torn", source="s.npz")
    store = CheckpointStore(tmp_path, fsync=False)
    store.write_stream(StreamCheckpoint("cam0", "frames", 0, 5, {"x": np.zeros(2)}))
    path = Path(store.stream_path("frames", 0, "cam0"))
    path.write_bytes(path.read_bytes()[:40])  # a partial copy
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: not a checkpoint file")):
        store.read_stream("frames", 0, "cam0")


def test_a_flipped_bit_anywhere_in_a_stream_file_is_refused(tmp_path: Path) -> None:
    """A storage fault in a gallery's low mantissa bits changes no fingerprint beyond its
    rounding tolerance; the zip CRC-32 of the `.npz` member catches it when the file is read."""
    tracker = DeepSORTTracker(gallery_budget=4)
    for i in range(3):
        detections = Detections(
            xyxy=np.array([[10.0 + i, 10, 50, 90], [200, 10, 240, 90]]), confidence=np.ones(2)
        )
        features = np.random.default_rng(i).standard_normal((2, 16)).astype(np.float32)
        tracker.update(detections, embeddings=features, frame_index=i)
    store = CheckpointStore(tmp_path, fsync=False)
    store.write_stream(StreamCheckpoint("cam0", "frames", 0, 5, tracker.state_dict()))
    path = Path(store.stream_path("frames", 0, "cam0"))
    data = path.read_bytes()
    member = data.find(b"state__gallery_features.npy")
    assert member > 0
    at = data.index(b"\n", data.index(b"{", member)) + 9  # into the first feature's bytes
    for bit in (0, 7):
        flipped = bytearray(data)
        flipped[at] ^= 1 << bit
        path.write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError, match="not a checkpoint file: Bad CRC-32"):
            store.read_stream("frames", 0, "cam0")


GOOD_ENTRY = {"key": "cam0", "path": "/v/cam0.mp4", "kind": "video", "status": "done"}


@pytest.mark.parametrize(
    "change,field",
    [
        ({"key": 3}, "'key'"),
        ({"status": "maybe"}, "'status'"),
        ({"frames": "10"}, "'frames'"),
        ({"frames": -1}, "'frames'"),
        ({"rows": True}, "'rows'"),
        ({"files": "a.parquet"}, "'files'"),
        ({"files": [1]}, "'files'"),
        ({"fingerprint": []}, "'fingerprint'"),
        ({"elapsed_s": "1s"}, "'elapsed_s'"),
    ],
)
def test_archive_manifest_entry_names_the_field(change: dict, field: str) -> None:
    data = json.dumps({**GOOD_ENTRY, **change}).encode()
    with pytest.raises(ManifestError, match=f"e.json: field {field}"):
        ManifestEntry.from_json(data, source="e.json")


@pytest.mark.parametrize("missing", sorted(GOOD_ENTRY))
def test_archive_manifest_entry_missing_field(missing: str) -> None:
    data = json.dumps({k: v for k, v in GOOD_ENTRY.items() if k != missing}).encode()
    with pytest.raises(ManifestError, match=f"field '{missing}' is missing"):
        ManifestEntry.from_json(data, source="e.json")


def test_archive_manifest_keeps_good_entries_and_reports_bad_ones(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path)
    manifest = Manifest(store)
    good = ManifestEntry(**GOOD_ENTRY, frames=3, elapsed_s=1.5, files=["a.parquet"])
    manifest.record(good)
    store.write_bytes("_archive/manifest/list.json", b"[1, 2]")
    store.write_bytes(
        "_archive/manifest/typed.json", json.dumps({**GOOD_ENTRY, "rows": "x"}).encode()
    )
    entries, problems = manifest.load()
    assert entries == {good.path: good}
    assert sorted(p.split(":")[0].rsplit("/", 1)[-1] for p in problems) == [
        "list.json",
        "typed.json",
    ]
    assert any("field 'rows'" in p for p in problems)
