"""Stable stream -> tracker shard mapping.

Python's `hash()` of a str changes between processes (PYTHONHASHSEED), so it would send a stream
to a different shard after a restart; CRC-32 of the UTF-8 id is the same everywhere and in any
language (Java's `java.util.zip.CRC32`, Go's `hash/crc32.ChecksumIEEE`).
"""

from __future__ import annotations

import collections
import zlib
from collections.abc import Iterable, Sequence
from typing import Any


def shard_of(stream_id: str, num_shards: int) -> int:
    """Index in [0, num_shards) of the tracker shard that owns `stream_id`."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    return zlib.crc32(stream_id.encode("utf-8")) % num_shards


def drop_streams(shards: Sequence[Any], stream_ids: Iterable[str], owner: str | None = None) -> int:
    """Tell each tracker shard actor to forget the given streams it owns (with `owner`: those
    whose last frame that owner sent): one call per shard that owns any. Returns how many
    streams were named."""
    by_shard: dict[int, list[str]] = collections.defaultdict(list)
    for stream_id in sorted(stream_ids):
        by_shard[shard_of(stream_id, len(shards))].append(stream_id)
    for shard, owned in by_shard.items():
        if owner is None:
            shards[shard].drop_streams.remote(owned)
        else:
            shards[shard].drop_streams.remote(owned, owner)
    return sum(map(len, by_shard.values()))


def drop_partitions(shards: Sequence[Any], partitions: Iterable[tuple[str, int]]) -> None:
    """Tell every tracker shard actor to forget the streams last seen in `partitions`
    ((topic, partition) pairs). Calls from one caller run in order, so frames this caller sends
    afterwards meet no stale state."""
    named = sorted(partitions)
    if named:
        for shard in shards:
            shard.drop_partitions.remote(named)
