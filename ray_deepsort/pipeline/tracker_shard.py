"""One tracker shard: the streams that hash to it, tracked in arrival order (actor body)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ray_deepsort.core import Detections
from ray_deepsort.pipeline.registry import OutOfOrderFrameError, TrackerRegistry
from ray_deepsort.pipeline.sharding import shard_of
from ray_deepsort.pipeline.types import (
    EmbedBatchResult,
    FrameFailure,
    FrameResult,
    ShardOutput,
    TrackRequest,
)


class TrackerShard:
    """Owns a `TrackerRegistry` for streams with `shard_of(stream_id, num_shards) == shard_index`.

    `process` takes the frames of one micro-batch in order plus the embedder results they refer
    to; a frame whose embedding failed or whose index goes backwards is reported as a
    `FrameFailure` (and not tracked) so the driver can dead-letter it.
    """

    def __init__(
        self,
        tracker_params: Mapping[str, Any] | None = None,
        shard_index: int = 0,
        num_shards: int = 1,
    ) -> None:
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"shard_index {shard_index} outside [0, {num_shards})")
        self.shard_index = shard_index
        self.num_shards = num_shards
        self.registry = TrackerRegistry(tracker_params)
        self.frames_tracked = 0

    def process(
        self, requests: Sequence[TrackRequest], embed_results: Sequence[EmbedBatchResult] = ()
    ) -> ShardOutput:
        started = time.perf_counter()
        output = ShardOutput(
            embed_seconds=float(sum(r.decode_seconds + r.embed_seconds for r in embed_results)),
            num_crops=int(sum(r.num_crops for r in embed_results)),
        )
        for request in requests:
            owner = shard_of(request.stream_id, self.num_shards)
            if owner != self.shard_index:
                raise ValueError(
                    f"stream {request.stream_id!r} belongs to shard {owner}, not {self.shard_index}"
                )
            embeddings = request.embeddings
            if request.embed_slot is not None:
                result_index, position = request.embed_slot
                outcome = embed_results[result_index].outcomes[position]
                if outcome.error is not None:
                    output.failures.append(self._failure(request, outcome.error))
                    continue
                embeddings = outcome.embeddings
            detections = Detections(
                xyxy=request.xyxy, confidence=request.confidence, class_id=request.class_id
            )
            try:
                tracker_id = self.registry.update(
                    request.stream_id,
                    request.frame_index,
                    detections,
                    embeddings=embeddings,
                    frame_shape=request.frame_shape,
                )
            except OutOfOrderFrameError as error:
                output.failures.append(self._failure(request, f"out_of_order: {error}"))
                continue
            output.results.append(
                FrameResult(
                    stream_id=request.stream_id,
                    frame_index=request.frame_index,
                    timestamp=request.timestamp,
                    xyxy=np.asarray(request.xyxy, np.float32),
                    confidence=np.asarray(request.confidence, np.float32),
                    class_id=np.asarray(request.class_id, np.int64),
                    tracker_id=tracker_id,
                    position=request.position,
                )
            )
        self.frames_tracked += len(output.results)
        output.track_seconds = time.perf_counter() - started
        return output

    @staticmethod
    def _failure(request: TrackRequest, reason: str) -> FrameFailure:
        return FrameFailure(
            stream_id=request.stream_id,
            frame_index=request.frame_index,
            position=request.position,
            reason=reason,
        )

    def drop_streams(self, stream_ids: Sequence[str]) -> int:
        """Forget streams whose input moved elsewhere; returns how many were known."""
        known = [sid for sid in stream_ids if sid in self.registry]
        self.registry.drop(known)
        return len(known)

    def state_dict(self) -> dict[str, dict[str, np.ndarray]]:
        return self.registry.state_dict()

    def load_state_dict(self, state: Mapping[str, Mapping[str, Any]]) -> None:
        self.registry.load_state_dict(state)
