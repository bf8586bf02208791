"""Detection files: MOTChallenge det.txt, CSV or Parquet, as one columnar table.

Formats (chosen by extension):
- `.txt` (MOTChallenge `det.txt`): `frame,id,x,y,w,h,conf,...`, frames 1-based, class 0.
- `.csv` (with a header) and `.parquet`: a `frame` column (0-based unless told otherwise), a box
  as `x1,y1,x2,y2` or `x,y,w,h` (top-left and size; also `left,top,width,height`), a score
  (`confidence`, `score` or `conf`; 1 if absent), a class (`class_id`, `class` or `label`; 0 if
  absent) and optionally a stream (`stream`, `stream_id` or `camera`) when one video holds
  several camera streams: each stream gets its own tracker.

Rows keep their file order within a frame (the tracker's detection order), so the same file gives
the same detection indices here and in any in-process run that reads it in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ray_deepsort.io.errors import InputError

FRAME_COLUMNS = ("frame", "frame_index", "frame_id")
SCORE_COLUMNS = ("confidence", "score", "conf")
CLASS_COLUMNS = ("class_id", "class", "label")
STREAM_COLUMNS = ("stream", "stream_id", "camera")
XYXY_COLUMNS = (("x1", "y1", "x2", "y2"), ("xmin", "ymin", "xmax", "ymax"))
XYWH_COLUMNS = (
    ("x", "y", "w", "h"),
    ("left", "top", "width", "height"),
    ("bb_left", "bb_top", "bb_width", "bb_height"),
)


@dataclass(frozen=True, eq=False)
class FrameDetections:
    """Detections of one frame as plain arrays, plus the stream of each box (None = one stream)."""

    xyxy: np.ndarray  # float32 [N, 4]
    confidence: np.ndarray  # float32 [N]
    class_id: np.ndarray  # int64 [N]
    stream: np.ndarray | None = None  # [N] str, or None when the source names no streams


@dataclass
class DetectionTable:
    """All detections of one video, sorted by frame (stable): O(log n) lookup per frame."""

    frame: np.ndarray  # int64 [M], 0-based video frame index
    xyxy: np.ndarray  # float32 [M, 4]
    confidence: np.ndarray  # float32 [M]
    class_id: np.ndarray  # int64 [M]
    stream: np.ndarray | None = None  # str [M], or None for a single-stream video

    def __post_init__(self) -> None:
        order = np.argsort(self.frame, kind="stable")
        self.frame = np.asarray(self.frame, np.int64)[order]
        self.xyxy = np.asarray(self.xyxy, np.float32).reshape(-1, 4)[order]
        self.confidence = np.asarray(self.confidence, np.float32)[order]
        self.class_id = np.asarray(self.class_id, np.int64)[order]
        if self.stream is not None:
            self.stream = np.asarray(self.stream).astype(str)[order]

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def streams(self) -> list[str]:
        """Stream names in sorted order (empty for a single-stream video)."""
        return [] if self.stream is None else sorted(set(self.stream.tolist()))

    @property
    def last_frame(self) -> int:
        return int(self.frame[-1]) if len(self.frame) else -1

    def for_frame(self, index: int) -> FrameDetections:
        start, stop = np.searchsorted(self.frame, [index, index + 1])
        return FrameDetections(
            xyxy=self.xyxy[start:stop],
            confidence=self.confidence[start:stop],
            class_id=self.class_id[start:stop],
            stream=None if self.stream is None else self.stream[start:stop],
        )

    def filter_confidence(self, minimum: float | None) -> DetectionTable:
        if minimum is None:
            return self
        keep = self.confidence >= minimum
        return DetectionTable(
            self.frame[keep],
            self.xyxy[keep],
            self.confidence[keep],
            self.class_id[keep],
            None if self.stream is None else self.stream[keep],
        )


def _pick(columns: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray | None:
    for name in names:
        if name in columns:
            return columns[name]
    return None


def table_from_columns(
    columns: dict[str, np.ndarray], frame_base: int, where: str
) -> DetectionTable:
    """Build a table from named columns (lower-cased names), frames shifted to 0-based."""
    frame = _pick(columns, FRAME_COLUMNS)
    if frame is None:
        raise InputError(f"{where}: no frame column (one of {', '.join(FRAME_COLUMNS)})")
    xyxy = None
    for names in XYXY_COLUMNS:
        if all(n in columns for n in names):
            xyxy = np.column_stack([columns[n] for n in names]).astype(np.float64)
            break
    if xyxy is None:
        for names in XYWH_COLUMNS:
            if all(n in columns for n in names):
                xywh = np.column_stack([columns[n] for n in names]).astype(np.float64)
                xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
                break
    if xyxy is None:
        raise InputError(f"{where}: no box columns (x1,y1,x2,y2 or x,y,w,h)")
    n = len(frame)
    confidence = _pick(columns, SCORE_COLUMNS)
    class_id = _pick(columns, CLASS_COLUMNS)
    stream = _pick(columns, STREAM_COLUMNS)
    frames = np.asarray(frame, np.float64)
    if not np.isfinite(frames).all() or (frames != np.round(frames)).any():
        raise InputError(f"{where}: frame numbers must be whole numbers")
    frames = frames.astype(np.int64) - frame_base
    if n and frames.min() < 0:
        raise InputError(f"{where}: frame {frames.min() + frame_base} is before frame {frame_base}")
    return DetectionTable(
        frame=frames,
        xyxy=xyxy,
        confidence=np.ones(n) if confidence is None else np.asarray(confidence, np.float64),
        class_id=np.zeros(n, np.int64) if class_id is None else np.asarray(class_id, np.int64),
        stream=None if stream is None else np.asarray(stream).astype(str),
    )


def read_detection_table(
    path: str | Path,
    fmt: str,
    frame_base: int | None = None,
    min_confidence: float | None = None,
) -> DetectionTable:
    """Read a detections file; `frame_base` overrides the format's (MOT 1, CSV/Parquet 0)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"detections file not found: {path}")
    try:
        if fmt == "mot":
            from ray_deepsort.io.mot import read_detections

            per_frame = read_detections(path)
            frames = sorted(per_frame)
            base = 1 if frame_base is None else frame_base
            frame_numbers = np.repeat(
                np.asarray(frames, np.int64), [len(per_frame[f]) for f in frames]
            )
            if len(frame_numbers) and frame_numbers.min() < base:
                raise InputError(f"{path}: frame {frame_numbers.min()} is before frame {base}")
            parts = [per_frame[f] for f in frames]
            table = DetectionTable(
                frame=frame_numbers - base,
                xyxy=np.concatenate([p.xyxy for p in parts]) if parts else np.zeros((0, 4)),
                confidence=(
                    np.concatenate([p.confidence_or_ones() for p in parts])
                    if parts
                    else np.zeros(0)
                ),
                class_id=np.zeros(len(frame_numbers), np.int64),
            )
        elif fmt in ("csv", "parquet"):
            import pyarrow.csv as pacsv
            import pyarrow.parquet as pq

            arrow = pq.read_table(path) if fmt == "parquet" else pacsv.read_csv(path)
            columns = {
                name.strip().lower(): arrow.column(name).to_numpy(zero_copy_only=False)
                for name in arrow.column_names
            }
            table = table_from_columns(columns, 0 if frame_base is None else frame_base, str(path))
        else:
            raise ValueError(f"unknown detections format {fmt!r}")
    except InputError:
        raise
    except (OSError, ValueError) as error:  # unreadable, malformed rows, wrong types
        raise InputError(f"cannot read detections {path}: {error}") from None
    return table.filter_confidence(min_confidence)
