"""How the stream job is doing: progress lines and metrics (`JobProgress`), idling (`IdleWatch`),
stalls (`StallWatch`).

- `JobProgress` keeps per-stage batch latencies, logs a progress line every
  `job.progress_interval_s`, feeds the Ray metrics, counts actor recoveries that made no
  progress, and fills the summary's timings at the end.
- `IdleWatch` decides when `job.max_idle_s` without input stops the job. Waiting for a broker
  that does not answer, a rebalance or an actor recovery is not idling.
- `StallWatch` writes every thread's stack to stderr when the main loop has not come back for
  a while: a worker that went silent in a blocking call says where it waits.

Neither talks to Kafka itself: the driver passes the consumer (for the lag) and a probe of the
broker.
"""

from __future__ import annotations

import collections
import faulthandler
import logging
import resource
import sys
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from ray_deepsort.pipeline.types import FrameResult, ShardOutput
from ray_deepsort.stream.config import StreamConfig
from ray_deepsort.stream.latency import count_latencies, describe
from ray_deepsort.stream.ledger import PartitionLedger
from ray_deepsort.stream.metrics import JobMetrics
from ray_deepsort.stream.summary import JobSummary

if TYPE_CHECKING:
    from ray_deepsort.stream.batches import Batch
    from ray_deepsort.stream.sink import SinkReport

logger = logging.getLogger("ray_deepsort.stream")


class JobProgress:
    """Progress log, stage latencies and gauges of one run (see the module docstring)."""

    def __init__(self, config: StreamConfig, summary: JobSummary, metrics: JobMetrics) -> None:
        self.config = config
        self.summary = summary
        self.metrics = metrics
        self.stage_sums: collections.Counter[str] = collections.Counter()
        self.logged_at = time.monotonic()
        self.logged_frames = 0
        self.first_submit_at: float | None = None
        self.last_finish_at: float | None = None
        self.done_at_recovery = -1  # frames + dead letters at the last actor recovery
        self.cpu_at_start = time.process_time()
        self.stalled_recoveries = 0  # recoveries in a row without a new frame written
        self.stall = StallWatch()  # the main loop away for 30 s: its stacks to stderr

    def submitting(self) -> None:
        """A batch is about to be submitted (processing time starts at the first)."""
        if self.first_submit_at is None:
            self.first_submit_at = time.monotonic()

    def inflight(self, batches: int) -> None:
        self.metrics.gauge("inflight", batches)

    def batch_finished(
        self,
        batch: Batch,
        outputs: list[ShardOutput],
        written: SinkReport,
        results: list[FrameResult],
        inflight: int,
    ) -> None:
        """A batch is written and its commit is due: record its latency per stage (embedding
        and tracking run in parallel over the shards, so the slowest shard counts)."""
        self.last_finish_at = time.monotonic()
        stages = {
            "decode": batch.decode_s,
            "embed": max((o.embed_seconds for o in outputs), default=0.0),
            "track": max((o.track_seconds for o in outputs), default=0.0),
            "parquet": written.parquet_s,
            "sink": written.sink_s,
            "batch": time.perf_counter() - batch.started,
        }
        self.stage_sums.update(stages)
        self.metrics.batch_done(len(results), stages)
        if results:
            newest = max(r.timestamp for r in results)
            self.metrics.gauge("capture_age", max(0.0, time.time() - newest))
            end_to_end = written.produced_at - np.array([r.timestamp for r in results])
            count_latencies(self.summary.latency, end_to_end)
            self.metrics.observe_end_to_end(end_to_end.tolist())
        self.inflight(inflight)

    def line(self, inflight: int, lag: int | None, crops_per_request: float) -> str:
        """One progress line: counts, window, lag and mean latency per stage."""
        batches = max(self.summary.batches, 1)
        latency = " ".join(
            f"{stage}={1000 * self.stage_sums[stage] / batches:.1f}"
            for stage in ("decode", "embed", "track", "sink", "batch")
        )
        return (
            f"frames={self.summary.frames} dead_letters={self.summary.dead_letters} "
            f"batches={self.summary.batches} inflight={inflight}/"
            f"{self.config.batch.max_inflight_batches} lag={lag} "
            f"crops/embed_request={crops_per_request:.1f} mean_ms[{latency}] "
            f"end_to_end[{describe(self.summary.latency)}]"
        )

    def maybe_log(self, line: Callable[[], str]) -> None:
        """Log `line()` and the frame rate every `job.progress_interval_s`."""
        interval = self.config.job.progress_interval_s
        now = time.monotonic()
        if not interval or now - self.logged_at < interval:
            return
        fps = (self.summary.frames - self.logged_frames) / (now - self.logged_at)
        self.metrics.gauge("fps", fps)
        logger.info("progress: %.1f fps %s", fps, line())
        self.logged_at, self.logged_frames = now, self.summary.frames

    def recovery(self) -> int:
        """Count an actor recovery; returns how many in a row wrote no new frame (or dead
        letter) in between (a frame that kills its shard every time would replay forever)."""
        done = self.summary.frames + self.summary.dead_letters
        self.stalled_recoveries = (
            self.stalled_recoveries + 1 if done == self.done_at_recovery else 1
        )
        self.done_at_recovery = done
        return self.stalled_recoveries

    def measure_process(self, summary: JobSummary) -> None:
        """Into `summary`: this process's CPU seconds since the run began (all its threads:
        the ingest cost) and its peak RSS."""
        summary.ingest_cpu_s = round(time.process_time() - self.cpu_at_start, 3)
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        summary.ingest_peak_rss_mb = round(peak_kib / 1024, 1)

    def summarize(self, elapsed: float) -> None:
        """Fill the summary's timings at the end of the run (`elapsed` seconds in all)."""
        summary = self.summary
        self.measure_process(summary)
        summary.elapsed_s = round(elapsed, 3)
        summary.frames_per_second = round(summary.frames / max(elapsed, 1e-9), 2)
        if self.first_submit_at is not None and self.last_finish_at is not None:
            busy = max(self.last_finish_at - self.first_submit_at, 1e-9)
            summary.processing_s = round(busy, 3)
            summary.processing_frames_per_second = round(summary.frames / busy, 2)


def consumer_lag(consumer: Any, ledger: PartitionLedger, metrics: JobMetrics) -> int | None:
    """Sum over owned partitions of high watermark - next offset (None if unknown)."""
    total, known = 0, False
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        position = ledger.position(tp)
        if highwater is None or position is None:
            continue
        lag = max(0, int(highwater) - int(position))
        metrics.gauge("lag", lag, {"topic": tp.topic, "partition": tp.partition})
        total += lag
        known = True
    return total if known else None


class StallWatch:
    """Dumps every thread's stack (faulthandler: "Timeout (0:00:30)!", then the stacks) once
    the main loop has not called `tick` for `after_s`, and again after each further `after_s`
    while it stays away. One timer per process (an ingest worker's); re-armed at most every
    `after_s / 4`, so a tick costs a clock read."""

    def __init__(self, after_s: float = 30.0, file: IO[str] | None = None) -> None:
        self.after_s = after_s
        self.file = file
        self.armed_at: float | None = None

    def tick(self) -> None:
        now = time.monotonic()
        if self.armed_at is None or now - self.armed_at >= self.after_s / 4:
            faulthandler.dump_traceback_later(
                self.after_s, repeat=True, file=self.file or sys.stderr
            )
            self.armed_at = now

    def stop(self) -> None:
        if self.armed_at is not None:
            faulthandler.cancel_dump_traceback_later()
            self.armed_at = None


class IdleWatch:
    """Whether an ingest worker has had no input for `job.max_idle_s` (0 = never stops for that).

    Once reached, `idle` stays true until records arrive or idling starts over: the job driver
    stops the job when every ingest worker that ever had partitions is idle.
    """

    def __init__(
        self, limit_s: float, broker_answers: Callable[[], bool], summary: JobSummary
    ) -> None:
        self.limit_s = limit_s
        self.broker_answers = broker_answers
        self.summary = summary  # counts `broker_waits`
        self.assigned_at: float | None = None  # the first partition assignment
        self.last_record_at: float | None = None
        self.reset_at = 0.0  # rebalances, recoveries and unreachable brokers are not idling
        self.broker_was_away = False  # the last check found the broker unreachable
        self.idle = False  # reached the limit with no input since

    def assigned(self) -> None:
        """Partitions are assigned: idle time counts from the first assignment on."""
        if self.assigned_at is None:
            self.assigned_at = time.monotonic()

    def records_at(self, at: float) -> None:
        """Records were polled at monotonic time `at`."""
        self.last_record_at = at
        self.idle = False

    def reset(self) -> None:
        """Idle time starts over now (not idling: a rebalance, a recovery)."""
        self.reset_at = time.monotonic()
        self.idle = False

    def too_long(self, busy: bool) -> bool:
        """True once idle for the limit while the broker answers; `busy`: batches in flight."""
        if not self.limit_s or self.assigned_at is None or busy:
            return False
        if self.idle:
            return True
        since = max(self.assigned_at, self.last_record_at or 0.0, self.reset_at)
        if time.monotonic() - since < self.limit_s:
            return False
        answers = self.broker_answers()
        if answers and not self.broker_was_away:
            self.idle = True
            return True
        # No input because the broker is down (or the group rebalances) is not idling: wait.
        # Once it answers again, idling starts over: after a restart the consumer may not know
        # yet that it has to rejoin the group.
        if not answers:
            self.summary.broker_waits += 1
            logger.warning(
                "no input for %.0fs, but the broker does not answer (or the group is "
                "rebalancing): waiting for it",
                time.monotonic() - since,
            )
        self.broker_was_away = not answers
        self.reset_at = time.monotonic()
        return False
