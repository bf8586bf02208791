"""Stable stream -> tracker shard mapping.

Python's `hash()` of a str changes between processes (PYTHONHASHSEED), so it would send a stream
to a different shard after a restart; CRC-32 of the UTF-8 id is the same everywhere and in any
language (Java's `java.util.zip.CRC32`, Go's `hash/crc32.ChecksumIEEE`).
"""

from __future__ import annotations

import zlib


def shard_of(stream_id: str, num_shards: int) -> int:
    """Index in [0, num_shards) of the tracker shard that owns `stream_id`."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    return zlib.crc32(stream_id.encode("utf-8")) % num_shards
