"""`IngestWorkerActor`: the Ray actor shell around one `PartitionWorker`, and how it is placed.

Each ingest worker is one consumer of the job's group: it owns the partitions the group assigns
it (poll, validate, dead letters, Parquet, results, commits, rebalance hand-offs, checkpoint
restores) and sends frames to the job's shared embedders and tracker shards. The actor is
threaded so that `status` and `request_stop` answer while `run` runs. Ray does not restart it:
its consumer's partitions go to the other members of the group, and the job driver starts a
replacement (`StreamJob`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ray_deepsort.stream.config import StreamConfig
from ray_deepsort.stream.worker import PartitionWorker

if TYPE_CHECKING:
    from ray_deepsort.pipeline.actors import JobActors

# `run` + `status` + `request_stop` at once, with room for a late status call.
INGEST_CONCURRENCY = 4


class IngestWorkerActor:
    """Ray actor body: `run(pool)` returns the worker's summary as a dict when it stops."""

    def __init__(
        self,
        config: StreamConfig,
        index: int,
        log_level: int = logging.INFO,
        clients: dict[str, Callable[[StreamConfig], Any]] | None = None,
    ) -> None:
        _log_to_stderr(f"ingest-{index}", log_level)
        self.index = index
        self.worker = PartitionWorker(config, **(clients or {}))

    def ready(self) -> int:
        return self.index

    def run(self, pool: JobActors) -> dict[str, Any]:
        return self.worker.run(pool).to_dict()

    def status(self, job_committed: dict[str, int]) -> tuple[dict[str, Any], bool]:
        """The summary so far and whether the worker is idle; learns what the job's workers
        committed."""
        summary, idle = self.worker.status(job_committed)
        return summary.to_dict(), idle

    def request_stop(self) -> None:
        self.worker.request_stop()


def ingest_actor_options(config: StreamConfig) -> dict[str, Any]:
    """Ray options of an ingest worker: `actors.ingest_num_cpus` each, spread over the nodes,
    never restarted by Ray."""
    return {
        "num_cpus": config.actors.ingest_num_cpus,
        "max_concurrency": INGEST_CONCURRENCY,
        "scheduling_strategy": "SPREAD",
        "max_restarts": 0,
    }


def _log_to_stderr(name: str, level: int) -> None:
    """Progress lines and warnings of this process reach the driver's console (Ray forwards
    actor output there), named after the worker."""
    package = logging.getLogger("ray_deepsort")
    package.setLevel(level)
    if not package.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {name} %(name)s: %(message)s")
        )
        package.addHandler(handler)
        package.propagate = False
    logging.getLogger("kafka").setLevel(logging.WARNING)
