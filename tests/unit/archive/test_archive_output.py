"""Archive output: source partitions, atomic publishing, manifest, configuration hash."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from ray_deepsort.archive.driver import ArchiveConfig, ArchiveConfigError
from ray_deepsort.archive.output import (
    ArchiveStore,
    Manifest,
    ManifestEntry,
    SourcePartitionedWriter,
    publish,
    read_dataset,
)
from ray_deepsort.pipeline.parquet import FRAMES_SCHEMA, TRACKS_SCHEMA
from ray_deepsort.pipeline.types import FrameResult, SourcePosition


def _result(stream: str, frame: int, ids: list[int]) -> FrameResult:
    n = len(ids)
    return FrameResult(
        stream_id=stream,
        frame_index=frame,
        timestamp=frame / 25.0,
        xyxy=np.arange(4 * n, dtype=np.float32).reshape(n, 4),
        confidence=np.full(n, 0.5, np.float32),
        class_id=np.zeros(n, np.int64),
        tracker_id=np.asarray(ids, np.int64),
        position=SourcePosition("/videos/x.mp4", 0, frame),
    )


def test_writer_partitions_by_source_with_the_stream_schema(tmp_path: Path) -> None:
    writer = SourcePartitionedWriter(str(tmp_path), "0001")
    written = writer.write("0001-00000-00000000000000000000", [_result("0001", 0, [1, -1])])
    assert [Path(p).relative_to(tmp_path).as_posix() for p in written] == [
        "tracks/source_key=0001/0001-00000-00000000000000000000.parquet",
        "frames/source_key=0001/0001-00000-00000000000000000000.parquet",
    ]
    # A frame without confirmed boxes gets a frames row but no tracks file (as the stream job).
    assert len(writer.write("0001-00000-00000000000000000005", [_result("0001", 5, [-1])])) == 1
    tracks = read_dataset(str(tmp_path), "tracks")
    assert tracks.schema.remove(tracks.schema.get_field_index("source_key")) == TRACKS_SCHEMA
    assert tracks.column("source_key").to_pylist() == ["0001"]  # stays a string, never 1
    frames = read_dataset(str(tmp_path), "frames")
    assert frames.schema.remove(frames.schema.get_field_index("source_key")) == FRAMES_SCHEMA
    assert sorted(frames.column("frame_index").to_pylist()) == [0, 5]
    assert read_dataset(str(tmp_path / "empty"), "tracks").num_rows == 0
    assert read_dataset(str(tmp_path), "tracks", keys=["other"]).num_rows == 0


def test_publish_replaces_files_and_removes_stale_ones(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path)
    old = ["tracks/source_key=k/k-00000-00000000000000000000.parquet", "mot/k.txt"]
    stale = "tracks/source_key=k/k-00000-00000000000000000100.parquet"
    other = "tracks/source_key=k2/k2-00000-00000000000000000000.parquet"
    for relative in [*old, stale, other]:
        store.write_bytes(relative, b"old")
    attempt = "_archive/staging/k/a1"
    new = ["tracks/source_key=k/k-00000-00000000000000000000.parquet", "mot/k.txt"]
    for relative in new:
        store.write_bytes(f"{attempt}/{relative}", b"new")
    published = publish(store, "k", attempt, new, previous_files=[*old, stale])
    assert published == new
    assert all(store.read_bytes(r) == b"new" for r in new)
    assert not store.exists(stale)
    assert store.read_bytes(other) == b"old"  # another key's partition is untouched
    assert store.list_files(attempt) == []


def test_manifest_round_trip_and_done_rules(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path)
    manifest = Manifest(store)
    entry = ManifestEntry(
        key="cam0",
        path="/v/cam0.mp4",
        kind="video",
        status="done",
        fingerprint={"video": {"size": 3, "mtime_ns": 7}},
        config_hash="abc",
        frames=10,
        files=["tracks/source_key=cam0/x.parquet"],
    )
    manifest.record(entry)
    store.write_bytes("_archive/manifest/torn.json", b'{"key": "to')  # a half-written file
    entries, problems = manifest.load()
    assert entries == {"/v/cam0.mp4": entry}
    assert len(problems) == 1 and "torn.json" in problems[0]
    assert manifest.is_done(entry, {"video": {"size": 3, "mtime_ns": 7}}, "abc")
    assert not manifest.is_done(entry, {"video": {"size": 3, "mtime_ns": 8}}, "abc")
    assert not manifest.is_done(entry, entry.fingerprint, "other-config")
    assert not manifest.is_done(
        dataclasses.replace(entry, status="failed"), entry.fingerprint, "abc"
    )
    assert not manifest.is_done(None, entry.fingerprint, "abc")


def test_config_hash_tracks_what_changes_results() -> None:
    base = ArchiveConfig(inputs=["x"], output="out").validate()
    same_results = dataclasses.replace(base, workers=7, frames_per_request=2, progress="none")
    assert same_results.config_hash() == base.config_hash()
    changed = [
        dataclasses.replace(base, tracker={**base.tracker, "lost_track_buffer": 60}),
        dataclasses.replace(base, model="resnet50"),
        dataclasses.replace(base, min_confidence=0.3),
        dataclasses.replace(base, detector="pkg.mod:Detector"),
        dataclasses.replace(base, chunk_frames=100),
    ]
    assert len({c.config_hash() for c in changed} | {base.config_hash()}) == len(changed) + 1
    motion_only = dataclasses.replace(base, model="none")
    # Without ReID, the model's other options do not matter.
    assert dataclasses.replace(motion_only, input_size=(128, 64)).config_hash() == (
        motion_only.config_hash()
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"inputs": []}, "at least one input"),
        ({"chunk_frames": 0}, "chunk_frames"),
        ({"workers": -1}, "workers"),
        ({"fingerprint": "md5"}, "fingerprint"),
        ({"detector": "no_colon"}, "module:callable"),
        ({"tracker": {"lost_track_buffer": -1}}, "tracker"),
        ({"tracker": {"no_such_option": 1}}, "tracker"),
    ],
)
def test_config_validation(change: dict, message: str) -> None:
    config = dataclasses.replace(ArchiveConfig(inputs=["x"], output="out"), **change)
    with pytest.raises(ArchiveConfigError, match=message):
        config.validate()


def test_store_write_is_atomic_rename(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path)
    store.write_bytes("a/b.json", b"1")
    store.write_bytes("a/b.json", b"2")
    assert store.read_bytes("a/b.json") == b"2"
    assert store.list_files("a") == ["a/b.json"]  # no temp files left behind
    store.delete_file("a/missing")  # deleting what is not there is fine
    store.delete_dir("a")
    assert not store.exists("a")
