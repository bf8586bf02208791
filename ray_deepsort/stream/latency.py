"""End-to-end latency: capture timestamp to result produced, as a mergeable histogram.

Each ingest worker counts its frames' latencies into log-spaced buckets (20 per decade, so a
percentile is within 12 % of the true value, from 1 ms to 3 hours). Counts add up, so the
driver merges workers exactly and reads percentiles of the whole job, or of the last interval
as the difference of two merges. Sparse `{bucket: count}` dicts keep the summary small.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

BUCKETS_PER_DECADE = 20
_LOW_S = 1e-3
# Upper edges of the buckets; bucket 0 holds everything <= 1 ms, the last everything above.
EDGES_S = _LOW_S * 10.0 ** (np.arange(0, 7 * BUCKETS_PER_DECADE + 1) / BUCKETS_PER_DECADE)


def count_latencies(into: dict[str, int], seconds: np.ndarray) -> None:
    """Add `seconds` (one latency per frame; negative clock skew counts as 0) to `into`."""
    if seconds.size == 0:
        return
    buckets = np.searchsorted(EDGES_S, np.maximum(seconds, 0.0), side="left")
    indices, counts = np.unique(buckets, return_counts=True)
    for index, count in zip(indices.tolist(), counts.tolist(), strict=True):
        key = str(index)
        into[key] = into.get(key, 0) + count


def merged(histograms: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for histogram in histograms:
        for key, count in histogram.items():
            total[key] = total.get(key, 0) + count
    return total


def difference(now: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    """The counts added between two merges (`before` taken earlier)."""
    return {k: c - before.get(k, 0) for k, c in now.items() if c > before.get(k, 0)}


def percentile(histogram: Mapping[str, int], q: float) -> float | None:
    """The `q`-th percentile (0-100) in seconds, as the upper edge of its bucket; None if
    empty."""
    if not histogram:
        return None
    indices = np.array(sorted(int(k) for k in histogram))
    counts = np.array([histogram[str(i)] for i in indices])
    rank = q / 100.0 * counts.sum()
    position = int(np.searchsorted(np.cumsum(counts), max(rank, 1), side="left"))
    bucket = int(indices[min(position, len(indices) - 1)])
    return float(EDGES_S[min(bucket, len(EDGES_S) - 1)])


def describe(histogram: Mapping[str, int]) -> str:
    """Like "p50=0.12s p99=0.48s" ("p50=- p99=-" without frames)."""
    parts = []
    for q in (50, 99):
        value = percentile(histogram, q)
        parts.append(f"p{q}={'-' if value is None else f'{value:.3g}s'}")
    return " ".join(parts)
