"""`JobSummary`: what one stream job run did, counted by every piece of the driver as it goes.

Returned by `StreamJob.run` and printed by the CLI as JSON; tests and benchmarks read it while
the job runs (frames, batches, recoveries, committed offsets), so the pieces update it in place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


def job_version() -> str:
    """The installed ray-deepsort version (stamped on every results-topic message)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ray-deepsort")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass
class JobSummary:
    """What one run did; returned by `StreamJob.run` and printed by the CLI as JSON."""

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
    checkpoints: int = 0  # partition checkpoints (manifests) written
    actor_recoveries: int = 0  # rebuilds after a tracker shard died (or an embed failed for good)
    streams_evicted: int = 0  # idle streams moved out of memory (checkpoint.evict_idle_s)
    handoffs: int = 0  # rebalances that finished and committed the batches in flight first
    produce_retries: int = 0  # produce attempts repeated after a failure (broker outage)
    commit_failures: int = 0  # offset commits that failed (retried later)
    broker_resets: int = 0  # partitions whose committed offset the broker lost (see docs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
