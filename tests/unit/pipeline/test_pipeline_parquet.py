"""Parquet sink: deterministic names, hive layout by capture hour, atomic rewrite, cleanup."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ray_deepsort.pipeline import (
    FRAMES_SCHEMA,
    TRACKS_SCHEMA,
    FrameResult,
    ParquetResultWriter,
    SourcePosition,
    batch_file_stem,
    parse_batch_file_stem,
)
from ray_deepsort.pipeline.parquet import hive_directory

HOUR = 1_732_500_000 - 1_732_500_000 % 3600  # 2024-11-25T02:00:00Z


def _result(stream: str, frame: int, timestamp: float, offset: int, ids: list[int]) -> FrameResult:
    n = len(ids)
    xyxy = np.column_stack([np.arange(n), np.arange(n), np.arange(n) + 10, np.arange(n) + 20])
    return FrameResult(
        stream_id=stream,
        frame_index=frame,
        timestamp=timestamp,
        xyxy=xyxy.astype(np.float32),
        confidence=np.linspace(0.5, 0.9, n).astype(np.float32),
        class_id=np.zeros(n, np.int64),
        tracker_id=np.array(ids, np.int64),
        position=SourcePosition("frames", 2, offset),
    )


def test_stem_round_trip_and_sanitising() -> None:
    stem = batch_file_stem("frames.v1_a-b", 3, 1234)
    assert stem == "frames.v1_a-b-00003-00000000000000001234"
    assert parse_batch_file_stem(stem) == ("frames.v1_a-b", 3, 1234)
    assert parse_batch_file_stem(batch_file_stem("videos/cam 1.mp4", 0, 5)) == (
        "videos_cam_1.mp4",
        0,
        5,
    )
    assert parse_batch_file_stem("part-0.parquet") is None
    with pytest.raises(ValueError):
        batch_file_stem("t", -1, 0)


def test_hive_directory_is_utc() -> None:
    assert hive_directory(HOUR // 3600) == "date=2024-11-25/hour=02"


def test_write_splits_by_capture_hour_and_reads_back(tmp_path: Path) -> None:
    writer = ParquetResultWriter(tmp_path)
    results = [
        _result("cam0", 0, HOUR + 3599.5, 10, [1, -1, 2]),
        _result("cam0", 1, HOUR + 3600.0, 11, [1, 2]),
        _result("cam1", 0, HOUR + 3600.2, 12, []),
        _result("cam1", 1, HOUR + 3601.0, 13, [-1]),
    ]
    stem = batch_file_stem("frames", 2, 10)
    written = writer.write(stem, results)
    relative = sorted(str(Path(p).relative_to(tmp_path)) for p in written)
    assert relative == [
        f"frames/date=2024-11-25/hour=02/{stem}.parquet",
        f"frames/date=2024-11-25/hour=03/{stem}.parquet",
        f"tracks/date=2024-11-25/hour=02/{stem}.parquet",
        f"tracks/date=2024-11-25/hour=03/{stem}.parquet",
    ]
    tracks = writer.read("tracks")
    assert tracks.schema.field("hour") is not None
    assert tracks.select(TRACKS_SCHEMA.names).schema == TRACKS_SCHEMA
    rows = sorted(
        zip(
            tracks["frame_index"].to_pylist(),
            tracks["tracker_id"].to_pylist(),
            tracks["detection_index"].to_pylist(),
            strict=True,
        )
    )
    assert rows == [(0, 1, 0), (0, 2, 2), (1, 1, 0), (1, 2, 1)]  # unconfirmed boxes left out
    frames = writer.read("frames")
    assert frames.select(FRAMES_SCHEMA.names).schema == FRAMES_SCHEMA
    assert frames.num_rows == 4  # frames without tracks are still recorded
    by_offset = {
        o: (d, t)
        for o, d, t in zip(
            frames["source_offset"].to_pylist(),
            frames["num_detections"].to_pylist(),
            frames["num_tracks"].to_pylist(),
            strict=True,
        )
    }
    assert by_offset == {10: (3, 2), 11: (2, 2), 12: (0, 0), 13: (1, 0)}
    micros = writer.read("frames").sort_by("source_offset")["timestamp"].cast("int64").to_pylist()
    assert micros[0] == (HOUR + 3599.5) * 1_000_000


def test_include_unconfirmed(tmp_path: Path) -> None:
    writer = ParquetResultWriter(tmp_path, include_unconfirmed=True)
    writer.write("x-00000-00000000000000000000", [_result("c", 0, HOUR, 0, [1, -1, 2])])
    assert sorted(writer.read("tracks")["tracker_id"].to_pylist()) == [-1, 1, 2]


def test_rewrite_replaces_atomically_without_temp_files(tmp_path: Path) -> None:
    writer = ParquetResultWriter(tmp_path)
    stem = batch_file_stem("frames", 0, 0)
    writer.write(stem, [_result("c", 0, HOUR, 0, [1, 2, 3])])
    writer.write(stem, [_result("c", 0, HOUR, 0, [1, 2, 3])])  # a replay of the same batch
    assert writer.read("tracks").num_rows == 3
    assert writer.files(include_temporary=True) == writer.files()
    assert not list(tmp_path.rglob(".*"))
    file = Path(writer.files()[0])
    assert pq.read_metadata(file).num_rows > 0


def test_remove_uncommitted_keeps_committed_and_other_partitions(tmp_path: Path) -> None:
    writer = ParquetResultWriter(tmp_path)
    for partition, first in [(0, 0), (0, 50), (0, 100), (1, 70)]:
        writer.write(
            batch_file_stem("frames", partition, first), [_result("c", first, HOUR, first, [1])]
        )
    writer.write(batch_file_stem("other", 0, 100), [_result("c", 0, HOUR, 100, [1])])
    leftover = (
        tmp_path
        / "tracks"
        / "date=2024-11-25"
        / "hour=02"
        / ("." + batch_file_stem("frames", 0, 150) + ".parquet.tmp")
    )
    leftover.write_bytes(b"partial")
    removed = writer.remove_uncommitted("frames", 0, 50)
    stems = sorted({writer.stem_of(p) for p in removed})
    assert stems == [
        batch_file_stem("frames", 0, 50),
        batch_file_stem("frames", 0, 100),
        batch_file_stem("frames", 0, 150),
    ]
    remaining = sorted({writer.stem_of(p) for p in writer.files(include_temporary=True)})
    assert remaining == [
        batch_file_stem("frames", 0, 0),
        batch_file_stem("frames", 1, 70),
        batch_file_stem("other", 0, 100),
    ]


def test_read_of_missing_dataset_is_empty(tmp_path: Path) -> None:
    assert ParquetResultWriter(tmp_path / "nothing").read("frames").num_rows == 0
    assert ParquetResultWriter(tmp_path).write("s-00000-00000000000000000000", []) == []


def test_pyarrow_filesystem_uri(tmp_path: Path) -> None:
    writer = ParquetResultWriter(f"file://{tmp_path}/uri")
    writer.write(batch_file_stem("frames", 0, 0), [_result("c", 0, HOUR, 0, [4])])
    assert writer.read("tracks")["tracker_id"].to_pylist() == [4]
    assert writer.remove_uncommitted("frames", 0, 0)
    assert writer.files() == []
