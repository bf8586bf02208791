"""Checkpoint store: exact round trips, atomic files, safe names, no pickle."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest

from ray_deepsort.core import DeepSORTTracker, Detections
from ray_deepsort.pipeline.state_store import (
    CheckpointError,
    CheckpointStore,
    PartitionManifest,
    StreamCheckpoint,
    decode_stream,
    encode_stream,
    partition_folder,
    stream_file_name,
)
from ray_deepsort.synthetic import SceneConfig, camera_scenes


def _scene_frames(frames: int = 40) -> list[Detections]:
    scene = camera_scenes(1, SceneConfig(seed=3, num_objects=6, num_frames=frames))["cam0"]
    return [scene.detections(k) for k in range(frames)]


def _tracked(frames: list[Detections]) -> DeepSORTTracker:
    tracker = DeepSORTTracker(minimum_consecutive_frames=2)
    for index, detections in enumerate(frames):
        tracker.update(detections, frame_index=index)
    return tracker


def test_round_trip_restores_a_tracker_exactly(tmp_path: Path) -> None:
    frames = _scene_frames(60)
    original = _tracked(frames[:30])
    store = CheckpointStore(tmp_path, fsync=False)
    name = store.write_stream(StreamCheckpoint("cam/0", "frames", 2, 117, original.state_dict()))
    assert name == stream_file_name("cam/0")

    loaded = store.read_stream("frames", 2, "cam/0")
    assert (loaded.stream_id, loaded.topic, loaded.partition, loaded.offset) == (
        "cam/0",
        "frames",
        2,
        117,
    )
    state = original.state_dict()
    assert set(loaded.state) == set(state)
    for key, value in state.items():
        assert loaded.state[key].dtype == np.asarray(value).dtype, key
        np.testing.assert_array_equal(loaded.state[key], value, err_msg=key)

    restored = DeepSORTTracker(minimum_consecutive_frames=2)
    restored.load_state_dict(loaded.state)
    confirmed = 0
    for index in range(30, 60):
        expected = original.update(frames[index], frame_index=index).tracker_id
        np.testing.assert_array_equal(
            restored.update(frames[index], frame_index=index).tracker_id, expected
        )
        confirmed += int((expected >= 0).sum())
    assert confirmed > 50 and int(loaded.state["next_track_id"]) > 1


def test_manifest_round_trip_and_overwrite_is_atomic(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, fsync=True)
    assert store.read_manifest("frames", 0) is None
    manifest = PartitionManifest("frames", 0, 42, {"cam0": stream_file_name("cam0")})
    store.write_manifest(manifest)
    manifest.offset = 99
    store.write_manifest(manifest)
    assert store.read_manifest("frames", 0) == manifest
    folder = Path(store.partition_path("frames", 0))
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json"]  # no temp left


def test_crash_during_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CheckpointStore(tmp_path, fsync=False)
    store.write_manifest(PartitionManifest("frames", 1, 10))

    def crash(*_: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        store.write_manifest(PartitionManifest("frames", 1, 20))
    monkeypatch.undo()
    manifest = store.read_manifest("frames", 1)
    assert manifest is not None and manifest.offset == 10


@pytest.mark.parametrize(
    "stream_id", ["../../etc/passwd", "/abs/path", "..", ".", "a\x00b", "cam 1", "é/ü", "x" * 300]
)
def test_stream_ids_cannot_escape_the_folder(tmp_path: Path, stream_id: str) -> None:
    name = stream_file_name(stream_id)
    stem = name[: -len(".npz")]
    assert name.endswith(".npz") and "/" not in name and ".." not in name
    assert all(c.isascii() and (c.isalnum() or c in "-_") for c in stem)
    assert len(name) <= 64
    store = CheckpointStore(tmp_path / "out", fsync=False)
    store.write_stream(StreamCheckpoint(stream_id, "frames", 0, 5, {"x": np.arange(3)}))
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(written) == 1
    assert written[0].parent == Path(store.partition_path("frames", 0)) / "streams"
    assert store.read_stream("frames", 0, stream_id).stream_id == stream_id


def test_similar_ids_get_different_files() -> None:
    assert stream_file_name("cam/1") != stream_file_name("cam_1")
    assert stream_file_name("a" * 40) != stream_file_name("a" * 41)
    assert partition_folder("t/x", 0) != partition_folder("t_x", 0)
    assert partition_folder("frames", 1) != partition_folder("frames", 2)


def test_refuses_pickled_content(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.savez(
        buffer,
        meta__format_version=np.asarray(1),
        meta__stream_id=np.frombuffer(b"cam0", np.uint8),
        meta__topic=np.frombuffer(b"frames", np.uint8),
        meta__partition=np.asarray(0),
        meta__offset=np.asarray(3),
        state__evil=np.array([{"run": "code"}], dtype=object),
    )
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        decode_stream(buffer.getvalue())
    with pytest.raises(CheckpointError, match="Python objects"):
        encode_stream(StreamCheckpoint("cam0", "frames", 0, 0, {"evil": np.array([None])}))


def test_rejects_another_streams_file_and_garbage(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, fsync=False)
    store.write_stream(StreamCheckpoint("cam0", "frames", 0, 5, {"x": np.zeros(2)}))
    path = Path(store.stream_path("frames", 0, "cam0"))
    os.replace(path, store.stream_path("frames", 0, "cam1"))
    with pytest.raises(CheckpointError, match="holds stream 'cam0'"):
        store.read_stream("frames", 0, "cam1")
    with pytest.raises(CheckpointError, match="missing"):
        store.read_stream("frames", 0, "cam0")
    with pytest.raises(CheckpointError):
        decode_stream(b"not a zip")
    Path(store.manifest_path("frames", 0)).write_text('{"format_version": 1, "topic": "frames"}')
    with pytest.raises(CheckpointError, match="malformed"):
        store.read_manifest("frames", 0)
    bad = PartitionManifest("frames", 0, 1, {"cam0": "../../x.npz"})
    Path(store.manifest_path("frames", 0)).write_bytes(bad.to_json())
    with pytest.raises(CheckpointError, match="file name"):
        store.read_manifest("frames", 0)


def test_checkpoint_config_keys() -> None:
    from ray_deepsort.stream.config import ConfigError, load_config

    config = load_config("jobs/stream.toml", ["checkpoint.every_batches=5"])
    assert config.checkpoint.enabled and config.checkpoint.every_batches == 5
    assert not load_config(None, ["checkpoint.enabled=false"]).checkpoint.enabled
    with pytest.raises(ConfigError, match=r"checkpoint\.every_batches must be > 0"):
        load_config(None, ["checkpoint.every_batches=0"])


def test_checkpoints_on_a_filesystem_uri_that_is_not_local() -> None:
    """A pyarrow URI root (here pyarrow's in-memory mock filesystem, standing in for s3://):
    streams and manifests are written without temp files or renames and read back exactly."""
    store = CheckpointStore("mock:///bucket/job-output", fsync=True)
    assert not store.local
    tracker = _tracked(_scene_frames(20))
    store.write_stream(StreamCheckpoint("cam0", "frames", 1, 19, tracker.state_dict()))
    store.write_manifest(PartitionManifest("frames", 1, 20, {"cam0": stream_file_name("cam0")}))
    loaded = store.read_stream("frames", 1, "cam0")
    for key, value in tracker.state_dict().items():
        np.testing.assert_array_equal(loaded.state[key], value, err_msg=key)
    manifest = store.read_manifest("frames", 1)
    assert manifest is not None and manifest.offset == 20
    names = [
        info.base_name
        for info in store.filesystem.get_file_info(pafs.FileSelector(store.root, recursive=True))
    ]
    assert not [name for name in names if name.endswith(".tmp")]
