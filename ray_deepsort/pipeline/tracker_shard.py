"""One tracker shard: the streams that hash to it, tracked in arrival order (actor body)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ray_deepsort.core import Detections, InvalidTrackerState
from ray_deepsort.pipeline.registry import OutOfOrderFrameError, TrackerRegistry
from ray_deepsort.pipeline.sharding import shard_of
from ray_deepsort.pipeline.state_store import CheckpointError, CheckpointStore, StreamCheckpoint
from ray_deepsort.pipeline.types import (
    EmbedBatchResult,
    FrameFailure,
    FrameResult,
    ShardOutput,
    TrackRequest,
)

logger = logging.getLogger("ray_deepsort.pipeline")

# `checkpoint.on_invalid`: what a shard does with a stream checkpoint it cannot restore.
ON_INVALID_POLICIES = ("fail", "fresh")


class CheckpointRestoreError(RuntimeError):
    """A stream's checkpoint is missing, torn or fails validation, and the policy is "fail".

    Fatal for the job (never retried: the file would fail again): the message names the file,
    the stream, its topic and partition, the problem, and how to recover.
    """


def checkpoint_restore_error(error: BaseException) -> CheckpointRestoreError | None:
    """`error` itself or the `CheckpointRestoreError` it wraps (Ray's `RayTaskError` of a shard
    call carries it as `cause`), else None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        cause = getattr(current, "cause", None)  # Ray's wrapper is an instance too: unwrap it
        if isinstance(cause, BaseException):
            current = cause
        elif isinstance(current, CheckpointRestoreError):
            return current
        else:
            current = current.__cause__
    return None


class TrackerShard:
    """Owns a `TrackerRegistry` for streams with `shard_of(stream_id, num_shards) == shard_index`.

    `process` takes the frames of one micro-batch in order plus the embedder results they refer
    to; a frame whose embedding failed or whose index goes backwards is reported as a
    `FrameFailure` (and not tracked) so the driver can dead-letter it.

    With `checkpoint_root` (the job's output path), the shard reads and writes its streams'
    checkpoints itself, so tracker state never travels through the driver: a request marked
    `restore` loads its stream from storage first, and frames the loaded state already
    includes (replayed after a restart) are skipped, returning neither result nor failure.

    A checkpoint that cannot be restored (missing, torn, or a state that fails validation) is
    never tracked on. `on_invalid` says what happens instead: "fail" (default) raises
    `CheckpointRestoreError` from `process` so the job stops; "fresh" logs an ERROR and the
    stream starts over with a fresh tracker (new track ids), an explicit operator choice.
    """

    def __init__(
        self,
        tracker_params: Mapping[str, Any] | None = None,
        shard_index: int = 0,
        num_shards: int = 1,
        checkpoint_root: str | None = None,
        fsync: bool = True,
        on_invalid: str = "fail",
    ) -> None:
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"shard_index {shard_index} outside [0, {num_shards})")
        if on_invalid not in ON_INVALID_POLICIES:
            raise ValueError(f"on_invalid must be one of {ON_INVALID_POLICIES}, got {on_invalid!r}")
        self.on_invalid = on_invalid
        self.shard_index = shard_index
        self.num_shards = num_shards
        self.registry = TrackerRegistry(tracker_params)
        self.checkpoints = CheckpointStore(checkpoint_root, fsync) if checkpoint_root else None
        self.restored_through: dict[str, tuple[str, int, int]] = {}  # stream -> checkpoint pos
        self.partition_of: dict[str, tuple[str, int]] = {}  # stream -> (topic, partition) last
        self.owner_of: dict[str, str] = {}  # stream -> who sent its last frame
        self.frames_tracked = 0
        self.frames_skipped = 0

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
            self.partition_of[request.stream_id] = (
                request.position.source,
                request.position.partition,
            )
            self.owner_of[request.stream_id] = request.owner
            if request.restore:
                self._restore(request)
            if self._already_included(request):
                self.frames_skipped += 1
                continue
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

    def _restore(self, request: TrackRequest) -> None:
        """Load the stream's checkpoint (once: a stream already tracked here is kept)."""
        stream_id = request.stream_id
        if stream_id in self.registry:
            return
        if self.checkpoints is None:
            raise RuntimeError("a restore request reached a shard without checkpoint storage")
        topic, partition = request.position.source, request.position.partition
        try:
            checkpoint = self.checkpoints.read_stream(topic, partition, stream_id)
            # A state that fails validation (InvalidTrackerState) is never tracked on.
            self.registry.load_state_dict({stream_id: checkpoint.state})
        except (CheckpointError, InvalidTrackerState) as error:
            path = self.checkpoints.stream_path(topic, partition, stream_id)
            if self.on_invalid == "fresh":  # the operator accepts new ids for this stream
                logger.error(
                    "stream %r (%s[%d]) starts with a fresh tracker (checkpoint.on_invalid="
                    '"fresh"): checkpoint %s cannot be restored: %s',
                    stream_id,
                    topic,
                    partition,
                    path,
                    error,
                )
                return
            raise CheckpointRestoreError(
                f"checkpoint of stream {stream_id!r} ({topic}[{partition}]) cannot be restored: "
                f"{path}: {error}. Nothing of it was tracked, and offsets from this frame on "
                "are not committed. To recover, restore the file from a backup and run again; "
                "or, to accept new track ids for this stream (its other state is lost), run "
                'once with checkpoint.on_invalid="fresh" (--set checkpoint.on_invalid=fresh). '
                "Deleting the file alone does not help: a missing file is refused the same way."
            ) from None
        self.restored_through[stream_id] = (topic, partition, checkpoint.offset)

    def _already_included(self, request: TrackRequest) -> bool:
        through = self.restored_through.get(request.stream_id)
        position = request.position
        return (
            through is not None
            and through[:2] == (position.source, position.partition)
            and position.offset <= through[2]
        )

    def write_checkpoints(
        self,
        states: Mapping[str, Mapping[str, np.ndarray]],
        positions: Mapping[str, tuple[str, int, int]],
    ) -> dict[str, str]:
        """Write the streams of `positions` (stream -> topic, partition, offset of its last frame)
        from `states` (a `state_dict()` taken right after that frame); returns stream -> file.

        The driver calls this only once those offsets are committed, so a stream file never
        holds a frame whose output could still be replayed.
        """
        if self.checkpoints is None:
            raise RuntimeError("this shard has no checkpoint storage")
        written = {}
        for stream_id, (topic, partition, offset) in positions.items():
            state = states.get(stream_id)
            if state is not None:
                written[stream_id] = self.checkpoints.write_stream(
                    StreamCheckpoint(stream_id, topic, partition, offset, dict(state))
                )
        return written

    @staticmethod
    def _failure(request: TrackRequest, reason: str) -> FrameFailure:
        return FrameFailure(
            stream_id=request.stream_id,
            frame_index=request.frame_index,
            position=request.position,
            reason=reason,
        )

    def drop_streams(self, stream_ids: Sequence[str], owner: str | None = None) -> int:
        """Forget streams whose input moved elsewhere; returns how many were known.

        With `owner`, only streams whose last frame that owner sent: another owner may have
        taken one over (and restored it) before this drop arrived.
        """
        if owner is not None:
            stream_ids = [sid for sid in stream_ids if self.owner_of.get(sid, owner) == owner]
        known = [sid for sid in stream_ids if sid in self.registry]
        self.registry.drop(known)
        for stream_id in stream_ids:
            self.restored_through.pop(stream_id, None)
            self.partition_of.pop(stream_id, None)
            self.owner_of.pop(stream_id, None)
        return len(known)

    def drop_partitions(self, partitions: Sequence[tuple[str, int]]) -> int:
        """Forget every stream whose last frame came from one of `partitions` (topic,
        partition): a new owner takes them over. An owner that stopped cleanly dropped them
        already; one that died could not, and its state may be ahead of the committed offset
        the new owner replays from."""
        gone = set(partitions)
        return self.drop_streams(
            [stream_id for stream_id, source in self.partition_of.items() if source in gone]
        )

    def state_dict(self, stream_ids: list[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
        """States of all streams, or of `stream_ids` (those it holds)."""
        return self.registry.state_dict(stream_ids)
