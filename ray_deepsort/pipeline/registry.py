"""Per-stream DeepSORT trackers of one shard, with state snapshots for checkpoints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ray_deepsort.core import DeepSORTTracker, Detections


class OutOfOrderFrameError(ValueError):
    """A frame whose index does not follow the last frame tracked for its stream."""


class TrackerRegistry:
    """One `DeepSORTTracker` per stream id, created on first sight with shared parameters.

    Frames of a stream must arrive with increasing `frame_index`; gaps are fine (the Kalman
    filter predicts across them), repeats and reversals raise `OutOfOrderFrameError` before any
    state changes.
    """

    def __init__(self, tracker_params: Mapping[str, Any] | None = None) -> None:
        self.tracker_params = dict(tracker_params or {})
        self._trackers: dict[str, DeepSORTTracker] = {}
        DeepSORTTracker(**self.tracker_params)  # fail fast on bad parameters

    def __len__(self) -> int:
        return len(self._trackers)

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._trackers

    def stream_ids(self) -> list[str]:
        return sorted(self._trackers)

    def tracker(self, stream_id: str) -> DeepSORTTracker:
        tracker = self._trackers.get(stream_id)
        if tracker is None:
            tracker = DeepSORTTracker(**self.tracker_params)
            self._trackers[stream_id] = tracker
        return tracker

    def last_frame_index(self, stream_id: str) -> int | None:
        tracker = self._trackers.get(stream_id)
        return None if tracker is None else tracker.last_frame_index

    def update(
        self,
        stream_id: str,
        frame_index: int,
        detections: Detections,
        embeddings: np.ndarray | None = None,
        frame_shape: tuple[int, int] | None = None,
        timestamp: float | None = None,
    ) -> np.ndarray:
        """Track one frame of `stream_id`; returns tracker ids int64 [N] (-1 = no confirmed track).

        `frame_shape` (height, width) lets the tracker ignore boxes wholly outside the picture
        exactly as it does when given the image itself.
        """
        last = self.last_frame_index(stream_id)
        if last is not None and frame_index <= last:
            raise OutOfOrderFrameError(
                f"frame_index {frame_index} of stream {stream_id!r} does not follow {last}"
            )
        out = self.tracker(stream_id).update(
            detections, embeddings=embeddings, frame_index=frame_index, frame_shape=frame_shape
        )
        return np.asarray(out.tracker_id, dtype=np.int64)

    def drop(self, stream_ids: list[str] | set[str]) -> None:
        """Forget streams (e.g. their partition moved to another consumer)."""
        for stream_id in stream_ids:
            self._trackers.pop(stream_id, None)

    # ----------------------------------------------------------------- snapshots
    def state_dict(self, stream_ids: list[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
        """{stream_id: tracker.state_dict()} of all (or the given) streams; numpy only."""
        chosen = self.stream_ids() if stream_ids is None else stream_ids
        return {sid: self._trackers[sid].state_dict() for sid in chosen if sid in self._trackers}

    def load_state_dict(self, state: Mapping[str, Mapping[str, Any]]) -> None:
        """Restore streams from `state_dict()`; streams not in `state` are left untouched."""
        for stream_id, tracker_state in state.items():
            tracker = DeepSORTTracker(**self.tracker_params)
            tracker.load_state_dict(dict(tracker_state))
            self._trackers[stream_id] = tracker
