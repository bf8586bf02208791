"""Ray metrics of the stream job (exported by every Ray node's metrics agent, Prometheus format).

Registered as `deepsort_*`; Ray adds its `ray_` prefix on export, so Prometheus sees
`ray_deepsort_frames_total`, ... Names: `frames_total`, `dead_letters_total{code}`,
`batches_total`, `frames_per_second`, `consumer_lag{topic,partition}`,
`stage_latency_seconds{stage}` (decode, embed, track, sink, batch), `batch_frames`,
`inflight_batches`, `capture_age_seconds`, `end_to_end_latency_seconds` (capture timestamp to
result produced, per frame); embedder actors add `embed_batch_size`.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

_LATENCY_BOUNDARIES = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
_BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
_END_TO_END_BOUNDARIES = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]


class JobMetrics:
    """Thin wrapper so the driver never fails because metrics are unavailable."""

    def __init__(self, enabled: bool = True, job_tags: dict[str, str] | None = None) -> None:
        self.enabled = False
        if not enabled:
            return
        try:
            from ray.util.metrics import Counter, Gauge, Histogram
        except ImportError:  # pragma: no cover - ray is a dependency
            return
        tags = dict(job_tags or {})
        keys = tuple(tags)
        try:
            self.frames = Counter(
                "deepsort_frames_total", "Frames tracked and written", tag_keys=keys
            )
            self.dead_letters = Counter(
                "deepsort_dead_letters_total",
                "Messages sent to the dead-letter topic",
                tag_keys=(*keys, "code"),
            )
            self.batches = Counter("deepsort_batches_total", "Micro-batches done", tag_keys=keys)
            self.fps = Gauge(
                "deepsort_frames_per_second", "Frames/s over the last interval", tag_keys=keys
            )
            self.lag = Gauge(
                "deepsort_consumer_lag",
                "High watermark minus next offset to process",
                tag_keys=(*keys, "topic", "partition"),
            )
            self.latency = Histogram(
                "deepsort_stage_latency_seconds",
                "Seconds per micro-batch and stage",
                boundaries=_LATENCY_BOUNDARIES,
                tag_keys=(*keys, "stage"),
            )
            self.batch_frames = Histogram(
                "deepsort_batch_frames",
                "Frames per micro-batch",
                boundaries=_BATCH_BOUNDARIES,
                tag_keys=keys,
            )
            self.inflight = Gauge(
                "deepsort_inflight_batches", "Micro-batches in flight", tag_keys=keys
            )
            self.capture_age = Gauge(
                "deepsort_capture_age_seconds",
                "Now minus the newest capture timestamp written",
                tag_keys=keys,
            )
            self.end_to_end_latency = Histogram(
                "deepsort_end_to_end_latency_seconds",
                "Seconds from a frame's capture timestamp to its result produced",
                boundaries=_END_TO_END_BOUNDARIES,
                tag_keys=keys,
            )
            for metric in (
                self.end_to_end_latency,
                self.frames,
                self.dead_letters,
                self.batches,
                self.fps,
                self.lag,
                self.latency,
                self.batch_frames,
                self.inflight,
                self.capture_age,
            ):
                metric.set_default_tags(tags)
            self.enabled = True
        except Exception as error:  # metrics must never stop the job
            logger.warning("Ray metrics disabled: %s", error)

    def _safe(
        self, metric: str, method: str, value: float, tags: dict[str, str] | None = None
    ) -> None:
        if not self.enabled:
            return
        try:
            getattr(getattr(self, metric), method)(value, tags=tags)
        except Exception as error:  # pragma: no cover - defensive
            logger.debug("metric %s failed: %s", metric, error)

    def batch_done(self, frames: int, stage_seconds: dict[str, float]) -> None:
        self._safe("batches", "inc", 1)
        if frames:
            self._safe("frames", "inc", frames)
        self._safe("batch_frames", "observe", frames)
        for stage, seconds in stage_seconds.items():
            self._safe("latency", "observe", seconds, {"stage": stage})

    def observe_end_to_end(self, seconds: list[float]) -> None:
        """One observation per frame produced."""
        for value in seconds:
            self._safe("end_to_end_latency", "observe", value)

    def dead_letter(self, code: str) -> None:
        self._safe("dead_letters", "inc", 1, {"code": code})

    def gauge(self, metric: str, value: float, tags: dict[str, Any] | None = None) -> None:
        self._safe(
            metric, "set", value, None if tags is None else {k: str(v) for k, v in tags.items()}
        )
