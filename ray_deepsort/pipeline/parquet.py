"""Parquet sink: hive-partitioned (date/hour) datasets, atomic files with deterministic names.

Two datasets under the output root:

- `tracks/date=YYYY-MM-DD/hour=HH/<stem>.parquet`: one row per tracked box.
- `frames/date=YYYY-MM-DD/hour=HH/<stem>.parquet`: one row per processed frame (also frames with
  no boxes), with its source position: the audit trail that every input frame was handled.

A driver writes each micro-batch of one source partition under one `stem` (for Kafka: topic,
partition and the batch's first offset), so replaying the same input rewrites the same files
instead of adding duplicates, and files at or past the committed offset can be recognised and
removed when a consumer takes over a partition. Date and hour come from the frame's capture
timestamp (UTC), so they do not depend on when the job ran.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ray_deepsort.pipeline.types import FrameResult

TRACKS_SCHEMA = pa.schema(
    [
        pa.field("stream_id", pa.string(), nullable=False),
        pa.field("frame_index", pa.int64(), nullable=False),
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("tracker_id", pa.int64(), nullable=False),
        pa.field("detection_index", pa.int32(), nullable=False),
        pa.field("x1", pa.float32(), nullable=False),
        pa.field("y1", pa.float32(), nullable=False),
        pa.field("x2", pa.float32(), nullable=False),
        pa.field("y2", pa.float32(), nullable=False),
        pa.field("confidence", pa.float32(), nullable=False),
        pa.field("class_id", pa.int64(), nullable=False),
    ]
)

FRAMES_SCHEMA = pa.schema(
    [
        pa.field("stream_id", pa.string(), nullable=False),
        pa.field("frame_index", pa.int64(), nullable=False),
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("num_detections", pa.int32(), nullable=False),
        pa.field("num_tracks", pa.int32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_partition", pa.int32(), nullable=False),
        pa.field("source_offset", pa.int64(), nullable=False),
    ]
)

DATASETS = ("tracks", "frames")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_STEM = re.compile(r"^(?P<source>.+)-(?P<partition>\d{5})-(?P<offset>\d{20})$")
_TMP_SUFFIX = ".parquet.tmp"


def batch_file_stem(source: str, partition: int, first_offset: int) -> str:
    """Deterministic file name (without extension) of one batch of one source partition."""
    if partition < 0 or first_offset < 0:
        raise ValueError("partition and offset must be >= 0")
    return f"{_UNSAFE.sub('_', source)}-{partition:05d}-{first_offset:020d}"


def parse_batch_file_stem(stem: str) -> tuple[str, int, int] | None:
    """(source, partition, first offset) of a `batch_file_stem`, or None for other names."""
    match = _STEM.match(stem)
    if match is None:
        return None
    return match["source"], int(match["partition"]), int(match["offset"])


def _timestamps_us(seconds: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(seconds, np.float64) * 1e6).astype(np.int64)


def tracks_table(results: Sequence[FrameResult], include_unconfirmed: bool = False) -> pa.Table:
    """Rows of every box with a tracker id (all boxes when `include_unconfirmed`)."""
    counts = np.array([r.num_detections for r in results], np.int64)
    total = int(counts.sum())
    xyxy = np.concatenate([r.xyxy for r in results]).reshape(-1, 4) if total else np.zeros((0, 4))
    tracker_id = np.concatenate([r.tracker_id for r in results]) if total else np.zeros(0)
    confidence = np.concatenate([r.confidence for r in results]) if total else np.zeros(0)
    class_id = np.concatenate([r.class_id for r in results]) if total else np.zeros(0)
    stream_id = np.repeat(np.array([r.stream_id for r in results], dtype=object), counts)
    frame_index = np.repeat(np.array([r.frame_index for r in results], np.int64), counts)
    timestamp = np.repeat(_timestamps_us(np.array([r.timestamp for r in results])), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    detection_index = (np.arange(total) - starts).astype(np.int32)
    keep = np.ones(total, bool) if include_unconfirmed else np.asarray(tracker_id) >= 0
    xyxy = np.asarray(xyxy, np.float32)[keep]
    columns = [
        pa.array(stream_id[keep], pa.string()),
        pa.array(frame_index[keep], pa.int64()),
        pa.array(timestamp[keep], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        pa.array(np.asarray(tracker_id, np.int64)[keep], pa.int64()),
        pa.array(detection_index[keep], pa.int32()),
        *(pa.array(xyxy[:, k], pa.float32()) for k in range(4)),
        pa.array(np.asarray(confidence, np.float32)[keep], pa.float32()),
        pa.array(np.asarray(class_id, np.int64)[keep], pa.int64()),
    ]
    return pa.Table.from_arrays(columns, schema=TRACKS_SCHEMA)


def frames_table(results: Sequence[FrameResult]) -> pa.Table:
    """One row per frame, including frames without any box."""
    return pa.Table.from_arrays(
        [
            pa.array([r.stream_id for r in results], pa.string()),
            pa.array([r.frame_index for r in results], pa.int64()),
            pa.array(_timestamps_us(np.array([r.timestamp for r in results])), pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            pa.array([r.num_detections for r in results], pa.int32()),
            pa.array([int((r.tracker_id >= 0).sum()) for r in results], pa.int32()),
            pa.array([r.position.source for r in results], pa.string()),
            pa.array([r.position.partition for r in results], pa.int32()),
            pa.array([r.position.offset for r in results], pa.int64()),
        ],
        schema=FRAMES_SCHEMA,
    )


def _hour_of_rows(table: pa.Table) -> np.ndarray:
    """Hours since the Unix epoch (UTC) of each row's stored timestamp."""
    micros = table.column("timestamp").cast(pa.int64()).to_numpy()
    return np.floor_divide(micros, 3_600_000_000)


def hive_directory(hour_bucket: int) -> str:
    """`date=YYYY-MM-DD/hour=HH` of an hour counted from the Unix epoch (UTC)."""
    moment = datetime.fromtimestamp(int(hour_bucket) * 3600, tz=timezone.utc)
    return f"date={moment:%Y-%m-%d}/hour={moment:%H}"


def write_atomically(
    filesystem: pafs.FileSystem,
    local: bool,
    path: str,
    write: Callable[[Any], None],
    *,
    temporary: str,
    fsync: bool,
) -> None:
    """Write a file whole or not at all: locally via a temp file and rename (plus fsync if asked),
    on object stores with one put (which is atomic there)."""
    if not local:
        filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with filesystem.open_output_stream(path) as stream:
            write(stream)
        return
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(temporary, "wb") as handle:
        write(handle)
        handle.flush()
        if fsync:
            os.fsync(handle.fileno())
    os.replace(temporary, final)
    if fsync:
        directory = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def resolve_root(root: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str, bool]:
    """(filesystem, path on it, is local) of a local folder or a URI such as s3://bucket/prefix."""
    root = str(root)
    if "://" in root:
        filesystem, path = pafs.FileSystem.from_uri(root)
        return filesystem, path, isinstance(filesystem, pafs.LocalFileSystem)
    return pafs.LocalFileSystem(), str(Path(root).resolve()), True


class ParquetResultWriter:
    """Writes `FrameResult` batches to the `tracks` and `frames` datasets under `root`.

    `root` is a local directory or a pyarrow filesystem URI (s3://bucket/prefix, gs://...).
    Local files are written to a hidden temp name, fsync'd and renamed into place, so readers see
    whole files or nothing; object stores publish an object atomically when it is closed.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        compression: str = "zstd",
        include_unconfirmed: bool = False,
        fsync: bool = True,
    ) -> None:
        self.filesystem, self.root, self.local = resolve_root(root)
        self.uri = str(root)
        self.compression = compression
        self.include_unconfirmed = include_unconfirmed
        self.fsync = fsync

    def dataset_path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    # ----------------------------------------------------------------- writing
    def write(self, stem: str, results: Sequence[FrameResult]) -> list[str]:
        """Write one batch (one source partition) under `stem`; returns the files written."""
        if not results:
            return []
        tables = {
            "tracks": tracks_table(results, self.include_unconfirmed),
            "frames": frames_table(results),
        }
        written = []
        for directory, parts in self.partitions(tables):
            for name, table in parts.items():
                if table.num_rows == 0:
                    continue  # no tracked box here: the frames file still records the frames
                path = f"{self.dataset_path(name)}/{directory}/{stem}.parquet"
                self.write_table(table, path)
                written.append(path)
        return written

    def partitions(self, tables: Mapping[str, pa.Table]) -> list[tuple[str, dict[str, pa.Table]]]:
        """Split one batch's tables into (partition folder, that folder's tables).

        The stream job's layout: `date=YYYY-MM-DD/hour=HH` of each row's capture time. Subclasses
        override this to partition otherwise (the archive writes one `source_key=KEY` folder).
        """
        row_hours = {name: _hour_of_rows(table) for name, table in tables.items()}
        return [
            (
                hive_directory(int(hour)),
                {
                    name: table.filter(pa.array(row_hours[name] == hour))
                    for name, table in tables.items()
                },
            )
            for hour in np.unique(row_hours["frames"])
        ]

    def write_table(self, table: pa.Table, path: str) -> None:
        """Write `table` to `path` whole or not at all (see the class docstring)."""
        final = Path(path)
        write_atomically(
            self.filesystem,
            self.local,
            path,
            lambda sink: pq.write_table(table, sink, compression=self.compression),
            temporary=str(final.with_name(f".{final.stem}{_TMP_SUFFIX}")),
            fsync=self.fsync,
        )

    # ----------------------------------------------------------------- listing, cleanup
    def files(self, include_temporary: bool = False) -> list[str]:
        """Paths of every batch file of both datasets (temp files too if asked)."""
        paths: list[str] = []
        for name in DATASETS:
            selector = pafs.FileSelector(
                self.dataset_path(name), recursive=True, allow_not_found=True
            )
            for info in self.filesystem.get_file_info(selector):
                if info.type != pafs.FileType.File:
                    continue
                base = info.base_name
                hidden = base.startswith(".")
                finished = base.endswith(".parquet") and not hidden
                temporary = include_temporary and hidden and base.endswith(_TMP_SUFFIX)
                if finished or temporary:
                    paths.append(info.path)
        return sorted(paths)

    @staticmethod
    def stem_of(path: str) -> str:
        base = path.rsplit("/", 1)[-1]
        if base.startswith(".") and base.endswith(_TMP_SUFFIX):
            return base[1 : -len(_TMP_SUFFIX)]
        return base[: -len(".parquet")] if base.endswith(".parquet") else base

    def remove_where(self, predicate: Callable[[str], bool]) -> list[str]:
        """Delete batch files (and leftover temp files) whose stem satisfies `predicate`."""
        removed = []
        for path in self.files(include_temporary=True):
            if predicate(self.stem_of(path)):
                self.filesystem.delete_file(path)
                removed.append(path)
        return removed

    def remove_uncommitted(self, source: str, partition: int, committed_offset: int) -> list[str]:
        """Delete files of (source, partition) starting at or after `committed_offset`.

        Such files hold results of input that was never committed: a replay from the committed
        offset writes those results again (possibly batched differently), so they must go.
        """
        safe_source = _UNSAFE.sub("_", source)

        def uncommitted(stem: str) -> bool:
            parsed = parse_batch_file_stem(stem)
            return (
                parsed is not None
                and parsed[0] == safe_source
                and parsed[1] == partition
                and parsed[2] >= committed_offset
            )

        return self.remove_where(uncommitted)

    # ----------------------------------------------------------------- reading
    def read(self, name: str = "tracks") -> pa.Table:
        """The whole dataset `name` ("tracks" or "frames") with its date/hour columns."""
        import pyarrow.dataset as ds

        schema = TRACKS_SCHEMA if name == "tracks" else FRAMES_SCHEMA
        path = self.dataset_path(name)
        if self.filesystem.get_file_info(path).type == pafs.FileType.NotFound:
            return schema.empty_table()
        dataset = ds.dataset(
            path, filesystem=self.filesystem, format="parquet", partitioning="hive"
        )
        return dataset.to_table()
