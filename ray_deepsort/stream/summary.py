"""`JobSummary`: what a stream job run did, counted by every piece of an ingest worker as it goes.

Each ingest worker fills its own (the pieces update it in place); the job driver merges the
workers' summaries (`merge`) into the one `StreamJob.run` returns and the CLI prints as JSON.
Tests and benchmarks read the driver's copy while the job runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ray_deepsort.stream import latency


def job_version() -> str:
    """The installed ray-deepsort version (stamped on every results-topic message)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ray-deepsort")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass
class JobSummary:
    """What one run did; returned by `StreamJob.run` and printed by the CLI as JSON.

    The driver's copy sums each worker's last report: a worker killed between two reports
    (0.25 s apart) did some work nobody counted, though its output is exact (its commits are
    the broker's, and the new owner starts from them).
    """

    frames: int = 0
    dead_letters: int = 0
    dead_letter_codes: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    files_written: int = 0
    leftovers_removed: int = 0
    elapsed_s: float = 0.0
    frames_per_second: float = 0.0
    processing_s: float = 0.0  # first batch submitted -> last batch committed
    processing_frames_per_second: float = 0.0
    stop_reason: str = ""
    output_path: str = ""
    actors: str = ""
    committed: dict[str, int] = field(default_factory=dict)
    started: dict[str, int] = field(default_factory=dict)  # where the run took partitions over
    owned: list[str] = field(default_factory=list)  # partitions owned now ("topic:partition")
    checkpoints: int = 0  # partition checkpoints (manifests) written
    actor_recoveries: int = 0  # rebuilds after a tracker shard died (or an embed failed for good)
    streams_evicted: int = 0  # idle streams moved out of memory (checkpoint.evict_idle_s)
    streams_restored: int = 0  # streams of partitions taken over restored from checkpoints
    records_replayed: int = 0  # committed records read again to rebuild restored state
    handoffs: int = 0  # rebalances that took partitions away (written output committed first)
    batches_dropped: int = 0  # batches in flight at a rebalance: not written, replayed
    produce_retries: int = 0  # produce attempts repeated after a failure (broker outage)
    commit_failures: int = 0  # offset commits that failed (retried later)
    broker_resets: int = 0  # partitions whose committed offset the broker lost (see docs)
    broker_waits: int = 0  # idle checks that waited for a broker that did not answer
    ingest_workers: int = 0  # ingest worker actors the job runs
    ingest_restarts: int = 0  # ingest workers replaced after they died
    inflight: int = 0  # batches in flight now (over all ingest workers)
    ingest_cpu_s: float = 0.0  # CPU seconds of the ingest worker processes (all threads)
    ingest_peak_rss_mb: float = 0.0  # the largest ingest worker process's peak RSS
    lag: int = 0  # records behind the high watermarks, at the workers' last progress line
    # End-to-end latency (capture timestamp to result produced): `latency.py` histogram.
    latency: dict[str, int] = field(default_factory=dict)
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> JobSummary:
        return cls(**values)

    def records_done(self) -> int:
        """Records (frames and dead letters) committed since the run took their partitions
        over: each counts once, however often a replay wrote it."""
        return sum(
            offset - self.started[label]
            for label, offset in self.committed.items()
            if label in self.started
        )


# Counters that add up over ingest workers; the rest are the driver's own or merged below.
_SUMMED = (
    "frames",
    "dead_letters",
    "batches",
    "files_written",
    "leftovers_removed",
    "checkpoints",
    "actor_recoveries",
    "streams_evicted",
    "streams_restored",
    "records_replayed",
    "handoffs",
    "batches_dropped",
    "produce_retries",
    "commit_failures",
    "broker_resets",
    "broker_waits",
    "inflight",
    "ingest_cpu_s",
    "lag",
)


def merge(into: JobSummary, workers: list[JobSummary]) -> None:
    """Fold the ingest workers' summaries (every incarnation, dead ones by their last report)
    into the driver's: counters add up, a partition's committed offset is the highest any
    worker committed and its start the lowest, owned partitions are those any worker owns (a
    stopped or dead worker owns none). Frames a replay wrote again count again."""
    for name in _SUMMED:
        setattr(into, name, sum(getattr(worker, name) for worker in workers))
    into.processing_s = round(max((w.processing_s for w in workers), default=0.0), 3)
    into.ingest_cpu_s = round(into.ingest_cpu_s, 3)
    into.ingest_peak_rss_mb = max((w.ingest_peak_rss_mb for w in workers), default=0.0)
    into.owned = sorted({label for worker in workers for label in worker.owned})
    codes: dict[str, int] = {}
    committed: dict[str, int] = {}
    started: dict[str, int] = {}
    for worker in workers:
        for code, count in worker.dead_letter_codes.items():
            codes[code] = codes.get(code, 0) + count
        for label, offset in worker.committed.items():
            committed[label] = max(offset, committed.get(label, offset))
        for label, offset in worker.started.items():
            started[label] = min(offset, started.get(label, offset))
    into.dead_letter_codes, into.committed, into.started = codes, committed, started
    into.latency = latency.merged(worker.latency for worker in workers)
    into.latency_p50_s = latency.percentile(into.latency, 50)
    into.latency_p99_s = latency.percentile(into.latency, 99)
