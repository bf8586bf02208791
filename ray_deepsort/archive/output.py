"""The archive's output folder: Parquet datasets by source, MOT files, manifest and staging.

Layout under the output root (a local folder or a pyarrow filesystem URI such as s3://b/p):

    tracks/source_key=KEY/KEY-00000-<first frame>.parquet   same schema as the stream job
    frames/source_key=KEY/KEY-00000-<first frame>.parquet   one row per frame and stream
    mot/KEY.txt                                             optional MOTChallenge results
    _archive/manifest/KEY.json                              finished (or failed) inputs
    _archive/staging/KEY/<attempt>/...                      files of a video being processed

A video worker writes into its own attempt folder. Only when the video is complete does the
driver move the files into place (each move atomic), delete files of an earlier run of that
video that the new run did not write, and then record the video in the manifest. A worker that
dies leaves only an attempt folder behind, which is never published; its video is redone.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from ray_deepsort.pipeline.parquet import (
    DATASETS,
    FRAMES_SCHEMA,
    TRACKS_SCHEMA,
    ParquetResultWriter,
    resolve_root,
)

PARTITION = "source_key"
ARCHIVE_DIR = "_archive"
MANIFEST_VERSION = 1


class ArchiveStore:
    """Small file operations relative to the output root, for local folders and object stores.

    Local writes go to a hidden temp file and are renamed into place (whole or nothing).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.filesystem, self.root, self.local = resolve_root(root)
        self.uri = str(root) if "://" in str(root) else self.root

    def uri_of(self, relative: str) -> str:
        """What `ParquetResultWriter` takes for `relative`: a local path or a full URI."""
        if self.local and "://" not in self.uri:
            return self.path(relative)
        return f"{self.uri.rstrip('/')}/{relative.lstrip('/')}"

    def path(self, relative: str) -> str:
        return f"{self.root.rstrip('/')}/{relative.lstrip('/')}" if relative else self.root

    def exists(self, relative: str) -> bool:
        return self.filesystem.get_file_info(self.path(relative)).type != pafs.FileType.NotFound

    def write_bytes(self, relative: str, data: bytes) -> None:
        target = self.path(relative)
        if self.local:
            final = Path(target)
            final.parent.mkdir(parents=True, exist_ok=True)
            temporary = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
            return
        self.filesystem.create_dir(target.rsplit("/", 1)[0], recursive=True)
        with self.filesystem.open_output_stream(target) as stream:
            stream.write(data)

    def read_bytes(self, relative: str) -> bytes:
        with self.filesystem.open_input_stream(self.path(relative)) as stream:
            return stream.read()

    def list_files(self, relative: str) -> list[str]:
        """Paths (relative to the root) of the files below `relative`, sorted."""
        selector = pafs.FileSelector(self.path(relative), recursive=True, allow_not_found=True)
        prefix = self.root.rstrip("/") + "/"
        return sorted(
            info.path[len(prefix) :] if info.path.startswith(prefix) else info.path
            for info in self.filesystem.get_file_info(selector)
            if info.type == pafs.FileType.File
        )

    def list_dirs(self, relative: str) -> list[str]:
        """Names of the folders directly inside `relative` (none if it does not exist)."""
        selector = pafs.FileSelector(self.path(relative), recursive=False, allow_not_found=True)
        return sorted(
            info.base_name
            for info in self.filesystem.get_file_info(selector)
            if info.type == pafs.FileType.Directory
        )

    def move(self, source: str, target: str) -> None:
        """Move a file, replacing `target` (one rename on local disks)."""
        src, dst = self.path(source), self.path(target)
        if self.local:
            Path(dst).parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
            return
        self.filesystem.create_dir(dst.rsplit("/", 1)[0], recursive=True)
        self.filesystem.move(src, dst)

    def delete_file(self, relative: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.filesystem.delete_file(self.path(relative))

    def delete_dir(self, relative: str) -> None:
        if self.exists(relative):
            self.filesystem.delete_dir(self.path(relative))


class SourcePartitionedWriter(ParquetResultWriter):
    """The stream job's Parquet writer, with archive partitioning: `source_key=KEY` folders.

    Tables and files are the stream job's; only the folder differs (capture date/hour would put
    a whole archive video in one 1970 hour).
    """

    def __init__(self, root: str, source_key: str, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.source_key = source_key

    def partitions(self, tables: Mapping[str, pa.Table]) -> list[tuple[str, dict[str, pa.Table]]]:
        return [(f"{PARTITION}={self.source_key}", dict(tables))]


def partition_dir(name: str, key: str) -> str:
    return f"{name}/{PARTITION}={key}"


def staging_dir(key: str) -> str:
    return f"{ARCHIVE_DIR}/staging/{key}"


def new_attempt_dir(key: str) -> str:
    return f"{staging_dir(key)}/{uuid.uuid4().hex[:12]}"


def read_dataset(root: str, name: str = "tracks", keys: Sequence[str] | None = None) -> pa.Table:
    """The archive dataset `name` with its `source_key` column (optionally of some keys only)."""
    store = ArchiveStore(root)
    schema = TRACKS_SCHEMA if name == "tracks" else FRAMES_SCHEMA
    if not store.exists(name):
        return schema.append(pa.field(PARTITION, pa.string())).empty_table()
    partitioning = ds.partitioning(pa.schema([(PARTITION, pa.string())]), flavor="hive")
    dataset = ds.dataset(
        store.path(name),
        filesystem=store.filesystem,
        format="parquet",
        partitioning=partitioning,
        exclude_invalid_files=False,
        ignore_prefixes=[".", "_"],
    )
    expression = None if keys is None else ds.field(PARTITION).isin(list(keys))
    return dataset.to_table(filter=expression)


# ---------------------------------------------------------------------------- manifest


@dataclass
class ManifestEntry:
    """What the manifest says about one input (the newest attempt)."""

    key: str
    path: str
    kind: str
    status: str  # "done" or "failed"
    fingerprint: dict[str, Any] = field(default_factory=dict)
    config_hash: str = ""
    frames: int = 0
    rows: int = 0
    tracks: int = 0
    streams: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    finished_at: str = ""
    version: int = MANIFEST_VERSION

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, indent=1, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, source: str = "manifest entry") -> ManifestEntry:
        """Parse and type-check every field; `ManifestError` names `source` and the field."""
        try:
            raw = json.loads(data.decode("utf-8"))
        except ValueError as error:  # UnicodeDecodeError and JSONDecodeError alike
            raise ManifestError(f"{source}: not JSON ({error})") from None
        if not isinstance(raw, dict):
            raise ManifestError(f"{source}: must be a JSON object, got {type(raw).__name__}")
        for name, expected in _ENTRY_FIELDS.items():
            if name not in raw:
                if name in _ENTRY_REQUIRED:
                    raise ManifestError(f"{source}: field {name!r} is missing")
                continue
            value = raw[name]
            ok = isinstance(value, expected) and not isinstance(value, bool)
            if ok and expected is list:
                ok = all(isinstance(item, str) for item in value)
            if not ok or (isinstance(value, (int, float)) and value < 0):
                raise ManifestError(
                    f"{source}: field {name!r} must be {_ENTRY_TYPE_NAMES[expected]}, "
                    f"got {value!r:.60}"
                )
        if raw["status"] not in ("done", "failed"):
            raise ManifestError(f"{source}: field 'status' must be 'done' or 'failed'")
        return cls(**{k: v for k, v in raw.items() if k in _ENTRY_FIELDS})


class ManifestError(ValueError):
    """An archive manifest entry that is not valid JSON or has a missing or mistyped field."""


# Types of ManifestEntry's fields as read back from JSON (numbers must be >= 0).
_ENTRY_FIELDS: dict[str, Any] = {
    "key": str,
    "path": str,
    "kind": str,
    "status": str,
    "fingerprint": dict,
    "config_hash": str,
    "frames": int,
    "rows": int,
    "tracks": int,
    "streams": list,
    "files": list,
    "reason": str,
    "warnings": list,
    "elapsed_s": (int, float),
    "finished_at": str,
    "version": int,
}
_ENTRY_REQUIRED = ("key", "path", "kind", "status")
_ENTRY_TYPE_NAMES = {
    str: "a string",
    dict: "an object",
    int: "an integer >= 0",
    list: "a list of strings",
    (int, float): "a number >= 0",
}


class Manifest:
    """One JSON file per input key under `_archive/manifest/`, each written atomically."""

    def __init__(self, store: ArchiveStore) -> None:
        self.store = store
        self.folder = f"{ARCHIVE_DIR}/manifest"

    def load(self) -> tuple[dict[str, ManifestEntry], list[str]]:
        """(path -> entry, problems): unreadable entries are reported and ignored (redone)."""
        entries: dict[str, ManifestEntry] = {}
        problems: list[str] = []
        for relative in self.store.list_files(self.folder):
            name = relative.rsplit("/", 1)[-1]
            if not name.endswith(".json") or name.startswith("."):
                continue
            try:
                entry = ManifestEntry.from_json(self.store.read_bytes(relative), source=relative)
            except (ValueError, TypeError, OSError) as error:
                problems.append(f"{relative}: {error}")
                continue
            entries[entry.path] = entry
        return entries, problems

    def record(self, entry: ManifestEntry) -> None:
        self.store.write_bytes(f"{self.folder}/{entry.key}.json", entry.to_json())

    def is_done(
        self,
        entry: ManifestEntry | None,
        fingerprint: dict[str, Any],
        config_hash: str,
    ) -> bool:
        return (
            entry is not None
            and entry.status == "done"
            and entry.fingerprint == fingerprint
            and entry.config_hash == config_hash
        )


def publish(
    store: ArchiveStore,
    key: str,
    attempt_dir: str,
    staged: Sequence[str],
    previous_files: Sequence[str] = (),
) -> list[str]:
    """Move a finished attempt's files into place; remove this key's files it did not rewrite.

    `staged` are paths relative to `attempt_dir`; returns the published paths (relative to the
    root). New files replace old ones of the same name atomically; stale files of the key (its
    partition folders, and files listed for it in the previous manifest entry) go afterwards.
    """
    published = []
    for relative in staged:
        store.move(f"{attempt_dir}/{relative}", relative)
        published.append(relative)
    keep = set(published)
    stale = set(previous_files)
    for name in DATASETS:
        stale.update(store.list_files(partition_dir(name, key)))
    for relative in sorted(stale - keep):
        store.delete_file(relative)
    return published
