"""Frame sources: a video file through OpenCV, or a MOTChallenge sequence.

Frames are numbered from 0 in decoding order. When no pixels are needed (motion-only tracking
from a detections file) video frames are only grabbed (demuxed and decoded, not converted), so
the frame count is exact and a broken file is still noticed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ray_deepsort.io.errors import InputError

DEFAULT_FPS = 30.0


@dataclass
class FrameSource:
    """An opened input: its geometry and a one-pass iterator of (frame index, image or None)."""

    fps: float
    width: int
    height: int
    frame_count: int  # declared by the container / seqinfo (0 = unknown)
    frames: Iterator[tuple[int, np.ndarray | None]]
    warnings: list[str] = field(default_factory=list)
    closer: list[object] = field(default_factory=list)

    def close(self) -> None:
        for resource in self.closer:
            release = getattr(resource, "release", None) or getattr(resource, "close", None)
            if release is not None:
                release()
        self.closer.clear()


def _sane_fps(value: float, warnings: list[str], where: str) -> float:
    if math.isfinite(value) and 0.1 <= value <= 1000.0:
        return float(value)
    warnings.append(f"{where}: frame rate {value!r} unusable, assuming {DEFAULT_FPS:g}")
    return DEFAULT_FPS


def open_video(path: str, need_pixels: bool) -> FrameSource:
    """Open a video with OpenCV; `InputError` when it cannot be opened or has no frame."""
    import cv2

    if not Path(path).is_file():
        raise InputError(f"video not found: {path}")
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        capture.release()
        raise InputError(f"cannot open video {path}: not a format OpenCV reads, or corrupt")
    warnings: list[str] = []
    fps = _sane_fps(float(capture.get(cv2.CAP_PROP_FPS)), warnings, path)
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    declared = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
    first_ok, first = capture.read()
    if not first_ok or first is None:
        capture.release()
        raise InputError(f"cannot decode any frame of {path}: corrupt or empty video")
    height, width = first.shape[:2]

    def frames() -> Iterator[tuple[int, np.ndarray | None]]:
        yield 0, first if need_pixels else None
        index = 1
        while True:
            if need_pixels:
                ok, image = capture.read()
                if not ok or image is None:
                    break
                yield index, image
            else:
                if not capture.grab():
                    break
                yield index, None
            index += 1

    return FrameSource(fps, width, height, declared, frames(), warnings, [capture])


def open_sequence(path: str, need_pixels: bool) -> FrameSource:
    """Open a MOTChallenge sequence; frames from `img1/` or `SEQ.mp4` when pixels are needed."""
    from ray_deepsort.io.mot import MotSequence

    try:
        sequence = MotSequence(Path(path))  # seqinfo.ini checked: InputError names the line
    except OSError as error:
        raise InputError(f"not a readable MOTChallenge sequence {path}: {error}") from None
    info = sequence.info
    warnings: list[str] = []
    fps = _sane_fps(info.frame_rate, warnings, f"{path}/seqinfo.ini")
    use_pixels = need_pixels and sequence.has_frames
    if need_pixels and not use_pixels:
        warnings.append(f"{path}: no img1/ images and no video; tracked by motion only")

    def frames() -> Iterator[tuple[int, np.ndarray | None]]:
        if not use_pixels:
            for number in range(1, info.seq_length + 1):
                yield number - 1, None
            return
        for number, image in sequence.frames():
            if image is None:
                warnings.append(f"{path}: frame {number} unreadable; tracked by motion only")
            yield number - 1, image

    return FrameSource(fps, info.im_width, info.im_height, info.seq_length, frames(), warnings)
