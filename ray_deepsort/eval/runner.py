"""Run DeepSORT over a MOTChallenge sequence: its public detections, and its frames if any."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ray_deepsort.core.detections import Detections
from ray_deepsort.io.errors import InputError
from ray_deepsort.io.mot import MotSequence


@dataclass
class SequenceRun:
    """Tracker output of one sequence: frame (1-based) -> detections with `tracker_id`."""

    name: str
    results: dict[int, Detections]
    num_frames: int
    seconds: float  # tracking time, including embedding, excluding frame decoding
    used_frames: bool  # whether frames were to be decoded and given to the tracker
    frames_with_image: int = 0  # frames whose image reached the tracker (0 when motion-only)
    frame_error: str | None = None  # why the frame source could not be opened at all

    @property
    def ms_per_frame(self) -> float:
        return 1000.0 * self.seconds / max(self.num_frames, 1)

    @property
    def appearance(self) -> str:
        """Whether the ReID model saw the frames: "yes", "no" or "partial (N of M frames)".

        A short or broken video leaves the model without images for some frames, which are then
        tracked by motion alone; a table that said "reid" for them would overstate what ran.
        """
        if self.frames_with_image == 0:
            return "no"
        if self.frames_with_image == self.num_frames:
            return "yes"
        return f"partial ({self.frames_with_image} of {self.num_frames} frames)"


def track_sequence(
    seq: MotSequence | str | Path,
    tracker: Any | None = None,
    reid_model: Any | None = None,
    *,
    tracker_kwargs: Mapping[str, Any] | None = None,
    min_confidence: float | None = None,
) -> SequenceRun:
    """Track every frame of `seq` and return the per-frame results.

    Without `tracker`, a fresh `DeepSORTTracker(reid_model, **tracker_kwargs)` is built, at the
    seqinfo frameRate unless `tracker_kwargs` sets `frame_rate`, so track lifetimes are in the
    sequence's own time base. A given tracker is reset first and used as is. Frames are decoded
    (images or `SEQ.mp4`) only when the tracker has a ReID model and the sequence has frames;
    otherwise tracking is motion-only. Frames without an image (a short or unreadable video, a
    missing JPEG) are tracked by motion and counted in `frames_with_image`.
    """
    sequence = seq if isinstance(seq, MotSequence) else MotSequence(Path(seq))
    if tracker is None:
        from ray_deepsort.core import DeepSORTTracker

        kwargs = {"frame_rate": sequence.info.frame_rate, **dict(tracker_kwargs or {})}
        tracker = DeepSORTTracker(reid_model=reid_model, **kwargs)
    else:
        tracker.reset()
    embedder = reid_model if reid_model is not None else getattr(tracker, "reid_model", None)
    use_frames = embedder is not None and sequence.has_frames

    detections = sequence.detections()
    empty = Detections.empty()
    results: dict[int, Detections] = {}
    elapsed = 0.0
    frame_error = None
    frame_iter: Iterator[tuple[int, np.ndarray | None]]
    frame_iter = ((f, None) for f in range(1, sequence.num_frames + 1))
    if use_frames:
        try:
            frame_iter = sequence.frames()
        except InputError as error:
            frame_error = str(error)
    with_image = 0
    for frame_number, image in frame_iter:
        if image is not None:
            with_image += 1
        frame_detections = detections.get(frame_number, empty)
        if min_confidence is not None and len(frame_detections):
            frame_detections = frame_detections[
                frame_detections.confidence_or_ones() >= min_confidence
            ]
        start = time.perf_counter()
        tracked = tracker.update(frame_detections, frame=image, frame_index=frame_number)
        elapsed += time.perf_counter() - start
        if tracked.tracker_id is not None and (tracked.tracker_id >= 0).any():
            results[frame_number] = tracked[tracked.tracker_id >= 0]
    return SequenceRun(
        name=sequence.name,
        results=results,
        num_frames=sequence.num_frames,
        seconds=elapsed,
        used_frames=use_frames,
        frames_with_image=with_image,
        frame_error=frame_error,
    )
