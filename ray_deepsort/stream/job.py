"""The stream job driver: plans and starts the actors, supervises the ingest workers, reports.

The driver touches no frame. It starts one shared pool of embedders (coalescing requests from
every ingest worker into shared batches) and tracker shards (keyed by stream), then
`actors.ingest_workers` ingest worker actors (`ingest.IngestWorkerActor`), each a consumer of
the job's group that owns the partitions assigned to it, from poll to commit (`worker.py`).

Supervising: every `STATUS_INTERVAL_S` the driver reads each worker's summary and merges them
(`summary.merge`). It stops every worker when one of them stops by itself (a
`job.stop_after_batches`), when a stop is requested (SIGTERM, `ray job stop`), when
`job.expected_frames` records are committed, or when every worker that had partitions is idle
for `job.max_idle_s`. A worker that dies (its process, its node) is replaced: the group gives
its partitions to the other workers meanwhile, and whoever takes a partition over restores it
from the checkpoint and the committed offset, as in any rebalance. A worker that fails (a
checkpoint it cannot restore, a simulated crash) stops the job with that error.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ray_deepsort.pipeline.embedder import forward_batch_size, tracker_params_with_gate
from ray_deepsort.pipeline.tracker_shard import CheckpointRestoreError, checkpoint_restore_error
from ray_deepsort.stream.config import StreamConfig
from ray_deepsort.stream.kafka_clients import (
    check_topic_limits,
    create_job_topics,
)
from ray_deepsort.stream.latency import describe, difference
from ray_deepsort.stream.summary import JobSummary, merge
from ray_deepsort.stream.worker import MAX_STALLED_RECOVERIES, SimulatedCrash

if TYPE_CHECKING:
    from ray_deepsort.pipeline.actors import JobActors

__all__ = ["SimulatedCrash", "StreamJob", "run_stream_job"]

logger = logging.getLogger("ray_deepsort.stream")

STATUS_INTERVAL_S = 0.25  # how often the driver reads the workers' summaries
STOP_TIMEOUT_S = 600.0  # how long stopping workers may take to drain and commit


@dataclass
class IngestWorker:
    """One started ingest worker actor: its handle, its `run` call and its last report."""

    index: int
    actor: Any
    run_ref: Any
    report: JobSummary
    idle: bool = False
    ended: bool = False


class StreamJob:
    """Runs the stream job on the Ray cluster this process is connected to (`ray.init` first).

    `consumer_factory` / `producer_factory` (tests that wrap the clients) travel to the ingest
    workers, so they must pickle.
    """

    def __init__(
        self,
        config: StreamConfig,
        *,
        consumer_factory: Callable[[StreamConfig], Any] | None = None,
        producer_factory: Callable[[StreamConfig], Any] | None = None,
    ) -> None:
        self.config = config.validate()
        # Passed on to each ingest worker's `PartitionWorker` as they are.
        self._clients = {
            name: factory
            for name, factory in (
                ("consumer_factory", consumer_factory),
                ("producer_factory", producer_factory),
            )
            if factory is not None
        }
        self._stop = threading.Event()
        self.summary = JobSummary(output_path=config.output.path)
        self.workers: list[IngestWorker] = []  # every start, dead and stopped ones included
        self.stopping = ""  # the stop reason once the workers were told to stop
        self._done_at_death = -1  # records done when the last worker died
        self._logged = (time.monotonic(), 0, dict[str, int]())  # at, frames, latency counts
        self._stalled_deaths = 0  # worker deaths in a row without a record committed

    def request_stop(self) -> None:
        """Stop every worker after its batches in flight (thread- and signal-safe)."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop gracefully (what `ray job stop` and Ctrl-C send)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.request_stop())

    @property
    def running(self) -> list[IngestWorker]:
        """The ingest workers whose `run` has not ended."""
        return [worker for worker in self.workers if not worker.ended]

    # ------------------------------------------------------------------ run
    def run(self) -> JobSummary:
        """Start the actors, supervise until stopped (or failed), kill the actors; the summary."""
        cfg = self.config
        started = time.monotonic()
        if cfg.kafka.create_topics:
            create_job_topics(cfg)
        check_topic_limits(cfg)
        self.pool = self._start_actors()
        try:
            for index in range(cfg.actors.ingest_workers):
                self._start_worker(index)
            self._supervise()
        finally:
            self._close()
            self._finish_summary(time.monotonic() - started)
        logger.info("stopped (%s): %s", self.summary.stop_reason, self._line())
        return self.summary

    def _start_actors(self) -> JobActors:
        """Plan the actors for this cluster and start the shared pool (failing fast when it
        cannot)."""
        import ray

        from ray_deepsort.pipeline.actors import PlacementError, plan_actors, start_actors
        from ray_deepsort.pipeline.coalesce import CoalescingEmbedderActor

        cfg = self.config
        plan = plan_actors(
            ray.cluster_resources(),
            reid_enabled=cfg.reid_enabled,
            num_shards=cfg.actors.num_shards,
            num_embedders=cfg.actors.num_embedders,
            embedder_num_cpus=cfg.actors.embedder_num_cpus,
            shard_num_cpus=cfg.actors.shard_num_cpus,
            use_gpu=cfg.use_gpu_setting(),
            ingest_workers=cfg.actors.ingest_workers,
            ingest_num_cpus=cfg.actors.ingest_num_cpus,
        )
        logger.info("starting actors: %s", plan.describe())
        if plan.num_embedders and not plan.use_gpu and cfg.model.device.startswith("cuda"):
            raise PlacementError(
                f"model.device is {cfg.model.device!r} but the embedders run on CPUs (the "
                "cluster has no GPU, or actors.use_gpu is false); set model.device = 'auto'"
            )
        batch_size = forward_batch_size(
            cfg.model.forward_batch_size, plan.use_gpu, cfg.batch.max_embed_crops
        )
        model = cfg.model_choice(batch_size)
        # Shards get precomputed embeddings, never the model: the gate is resolved here, once.
        tracker_params, gate = tracker_params_with_gate(
            cfg.tracker.params(), model if cfg.reid_enabled else None
        )
        logger.info("%s", gate.describe())
        pool = start_actors(
            plan,
            model,
            tracker_params,
            cfg.actors.start_timeout_s,
            # Requests of every ingest worker that arrive while the model is busy run together.
            embedder_class=CoalescingEmbedderActor,
            embedder_kwargs={
                "max_batch_crops": max(batch_size, cfg.batch.max_embed_crops),
                "max_wait_ms": 0.0,
            },
            checkpoint_root=cfg.output.path if cfg.checkpoint.enabled else None,
            fsync=cfg.output.fsync,
            on_invalid=cfg.checkpoint.on_invalid,
        )
        self.summary.actors = plan.describe()
        self.summary.ingest_workers = cfg.actors.ingest_workers
        return pool

    def _start_worker(self, index: int) -> IngestWorker:
        """Start ingest worker `index` (again, after one died) and its `run` on the pool."""
        import ray

        from ray_deepsort.stream.ingest import IngestWorkerActor, ingest_actor_options

        actor = (
            ray.remote(IngestWorkerActor)
            .options(**ingest_actor_options(self.config))
            .remote(self.config, index, logger.getEffectiveLevel(), self._clients)
        )
        worker = IngestWorker(index, actor, actor.run.remote(self.pool), JobSummary())
        self.workers.append(worker)
        return worker

    # ------------------------------------------------------------------ supervise
    def _supervise(self) -> None:
        """Wait for the workers, read their summaries, stop them when it is time, replace the
        dead ones; returns once every worker has stopped."""
        import ray

        while self.running:
            refs = {worker.run_ref: worker for worker in self.running}
            ended, _ = ray.wait(list(refs), num_returns=len(refs), timeout=STATUS_INTERVAL_S)
            for ref in ended:
                self._ended(refs[ref])
            self._refresh()
            self._maybe_log()
            if not self.stopping:
                reason = self._stop_reason()
                if reason:
                    self._stop_workers(reason)

    def _ended(self, worker: IngestWorker) -> None:
        """A worker's `run` returned (it stopped), failed, or its actor died."""
        import ray
        from ray.exceptions import RayActorError

        worker.ended = True
        worker.report.owned = []  # stopped or dead: the group takes its partitions back
        try:
            worker.report = JobSummary.from_dict(ray.get(worker.run_ref))
        except RayActorError as error:
            if self.stopping:
                return
            self._replace(worker, error)
            return
        except Exception as error:
            self._last_report(worker)
            self._fail(worker, error)
        if not self.stopping:  # it stopped by itself (job.stop_after_batches)
            self._stop_workers(worker.report.stop_reason or "an ingest worker stopped")

    def _replace(self, worker: IngestWorker, error: BaseException) -> None:
        """Start a new worker in place of a dead one (giving up when deaths make no progress)."""
        self.summary.ingest_restarts += 1
        done = self.summary.records_done()
        self._stalled_deaths = self._stalled_deaths + 1 if done == self._done_at_death else 1
        self._done_at_death = done
        logger.warning(
            "ingest worker %d died (%s); starting a new one (its partitions go to the other "
            "workers meanwhile)",
            worker.index,
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
        )
        if self._stalled_deaths > MAX_STALLED_RECOVERIES:
            raise RuntimeError(
                f"ingest workers died {self._stalled_deaths} times in a row without a record "
                "committed; giving up"
            ) from error
        self._start_worker(worker.index)

    def _fail(self, worker: IngestWorker, error: BaseException) -> None:
        """A worker failed: stop the others (their work in flight is committed) and raise."""
        self.summary.stop_reason = (
            "simulated crash" if isinstance(error, SimulatedCrash) else "ingest worker failed"
        )
        self._stop_workers(self.summary.stop_reason, wait=True)
        restore_error = checkpoint_restore_error(error)
        if restore_error is not None:
            self.summary.stop_reason = "checkpoint cannot be restored"
            raise CheckpointRestoreError(str(restore_error)) from None
        raise error

    @staticmethod
    def _last_report(worker: IngestWorker) -> None:
        """The summary of a worker whose `run` raised (its actor lives on)."""
        import ray

        try:
            report, _ = ray.get(worker.actor.status.remote({}), timeout=STATUS_INTERVAL_S * 20)
            worker.report = JobSummary.from_dict(report)
        except Exception as error:  # keep the last report
            logger.warning("no last summary from ingest worker %d: %s", worker.index, error)

    def _refresh(self) -> None:
        """Read every running worker's summary and merge all of them into `summary`."""
        import ray

        running = self.running
        committed = dict(self.summary.committed)
        refs = {worker.actor.status.remote(committed): worker for worker in running}
        answered, _ = ray.wait(list(refs), num_returns=len(refs), timeout=STATUS_INTERVAL_S)
        for ref in answered:
            try:
                report, idle = ray.get(ref)
            except Exception:  # dying: its `run` call tells the driver
                continue
            refs[ref].report, refs[ref].idle = JobSummary.from_dict(report), bool(idle)
        merge(self.summary, [worker.report for worker in self.workers])

    def _maybe_log(self) -> None:
        """The job's progress line every `job.progress_interval_s`: rates and latency
        percentiles over the last interval, counts since the start."""
        interval = self.config.job.progress_interval_s
        at, frames, counts = self._logged
        now = time.monotonic()
        if not interval or now - at < interval:
            return
        s = self.summary
        logger.info(
            "progress: %.1f fps frames=%d dead_letters=%d batches=%d inflight=%d lag=%d "
            "end_to_end[%s] ingest_workers=%d",
            (s.frames - frames) / (now - at),
            s.frames,
            s.dead_letters,
            s.batches,
            s.inflight,
            s.lag,
            describe(difference(s.latency, counts)),
            len(self.running),
        )
        self._logged = (now, s.frames, dict(s.latency))

    def _stop_reason(self) -> str:
        """Why the whole job should stop now, or ""."""
        cfg = self.config.job
        if self._stop.is_set():
            return "stop requested"
        if cfg.expected_frames and self.summary.records_done() >= cfg.expected_frames:
            return f"expected_frames={cfg.expected_frames}"
        with_partitions = [worker for worker in self.running if worker.report.started]
        if cfg.max_idle_s and with_partitions and all(w.idle for w in with_partitions):
            return f"idle for {cfg.max_idle_s:g}s"
        return ""

    def _stop_workers(self, reason: str, wait: bool = False) -> None:
        """Tell every running worker to finish its batches in flight, commit and return."""
        import ray

        if not self.stopping:
            self.stopping = reason
            self.summary.stop_reason = reason
            logger.info("stopping the ingest workers: %s", reason)
        for worker in self.running:
            worker.actor.request_stop.remote()
        if wait and self.running:
            ray.wait(
                [worker.run_ref for worker in self.running],
                num_returns=len(self.running),
                timeout=STOP_TIMEOUT_S,
            )

    def _close(self) -> None:
        """Kill the ingest workers and the pool (a stopped worker has committed its work)."""
        import ray

        for worker in self.workers:
            try:
                ray.kill(worker.actor)
            except Exception as error:  # keep closing the rest
                logger.warning("while closing: %s", error)
        if hasattr(self, "pool"):
            self.pool.kill()

    def _finish_summary(self, elapsed: float) -> None:
        summary = self.summary
        merge(summary, [worker.report for worker in self.workers])
        summary.inflight = 0
        summary.elapsed_s = round(elapsed, 3)
        summary.frames_per_second = round(summary.frames / max(elapsed, 1e-9), 2)
        busy = max((worker.report.processing_s for worker in self.workers), default=0.0)
        if busy:
            summary.processing_s = round(busy, 3)
            summary.processing_frames_per_second = round(summary.frames / busy, 2)

    def _line(self) -> str:
        s = self.summary
        return (
            f"frames={s.frames} dead_letters={s.dead_letters} batches={s.batches} "
            f"end_to_end[{describe(s.latency)}] ingest_workers={s.ingest_workers} "
            f"ingest_restarts={s.ingest_restarts} actor_recoveries={s.actor_recoveries}"
        )


def run_stream_job(config: StreamConfig, *, install_signal_handlers: bool = False) -> JobSummary:
    """Connect to Ray (per `ray.address`) unless already connected, and run the job."""
    from ray_deepsort.pipeline.cluster import connect_ray

    connect_ray(config.ray.address, namespace=config.ray.namespace, log_to_driver=True)
    job = StreamJob(config)
    if install_signal_handlers:
        job.install_signal_handlers()
    return job.run()
