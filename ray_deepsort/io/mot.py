"""MOTChallenge files: detections, ground truth, tracker results, `seqinfo.ini`, sequence frames.

Box rows are `frame,id,x,y,w,h,conf,...` with 1-based frames and top-left/size boxes; this module
converts to and from the `xyxy` boxes the tracker works with.

Ground truth comes in two layouts, told apart by their column count:
- MOT15 (10 columns): `...,consider,wx,wy,wz` (world coordinates). No classes: every row with
  `consider != 0` is scored (as TrackEval does for MOT15).
- MOT16/17/20 (9 columns): `...,consider,class,visibility`. Rows are scored when
  `consider != 0` and class is pedestrian (1); distractor classes (person on vehicle, static
  person, distractor, reflection) are kept so the metrics can forgive boxes on them.
"""

from __future__ import annotations

import configparser
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ray_deepsort.core.detections import Detections

# Where a MOTChallenge sequence folder keeps its files.
SEQINFO_FILE = "seqinfo.ini"
DETECTIONS_FILE = Path("det") / "det.txt"
GROUND_TRUTH_FILE = Path("gt") / "gt.txt"

PEDESTRIAN_CLASS = 1
DISTRACTOR_CLASSES = (2, 7, 8, 12)  # TrackEval's MOT17 distractors


def _load_rows(path: str | Path, min_columns: int = 6) -> np.ndarray:
    """All comma-separated numeric rows of a MOT text file as float64 [M, C] (C >= min_columns)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"MOT file not found: {path}")
    text = path.read_text().strip()
    if not text:
        return np.zeros((0, min_columns))
    rows = np.loadtxt(text.splitlines(), delimiter=",", ndmin=2, dtype=np.float64)
    if rows.shape[1] < min_columns:
        raise ValueError(f"{path}: expected at least {min_columns} columns, got {rows.shape[1]}")
    return rows


def _xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:4]], axis=1)


def _split_by_frame(frames: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(frame, row indices) for each distinct frame, in increasing frame order."""
    if len(frames) == 0:
        return []
    order = np.argsort(frames, kind="stable")
    unique, starts = np.unique(frames[order], return_index=True)
    return [(int(f), idx) for f, idx in zip(unique, np.split(order, starts[1:]), strict=True)]


def read_detections(
    det_txt: str | Path, min_confidence: float | None = None
) -> dict[int, Detections]:
    """Frame (1-based) -> detections; confidence from column 7, class 0. Empty frames are absent."""
    rows = _load_rows(det_txt)
    if min_confidence is not None:
        rows = rows[rows[:, 6] >= min_confidence] if rows.shape[1] > 6 else rows
    confidence = rows[:, 6] if rows.shape[1] > 6 else np.ones(len(rows))
    xyxy = _xywh_to_xyxy(rows[:, 2:6])
    return {
        frame: Detections(
            xyxy=xyxy[idx],
            confidence=confidence[idx],
            class_id=np.zeros(len(idx), np.int64),
        )
        for frame, idx in _split_by_frame(rows[:, 0].astype(np.int64))
    }


@dataclass
class GroundTruth:
    """All ground-truth rows of one sequence (flat arrays, one entry per row)."""

    frame: np.ndarray  # int64 [M], 1-based
    track_id: np.ndarray  # int64 [M]
    xywh: np.ndarray  # float64 [M, 4]
    considered: np.ndarray  # bool [M]: column 7 != 0
    class_id: np.ndarray  # int64 [M]; PEDESTRIAN_CLASS everywhere for MOT15 files
    visibility: np.ndarray  # float64 [M]; 1 where the file has no visibility column
    has_classes: bool  # True for the MOT16/17/20 layout

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def scored(self) -> np.ndarray:
        """Rows the metrics count: considered, and pedestrians when the file has classes."""
        if not self.has_classes:
            return self.considered.copy()
        return self.considered & (self.class_id == PEDESTRIAN_CLASS)

    @property
    def distractor(self) -> np.ndarray:
        """Rows whose region forgives tracker boxes (MOT16+ distractor classes only)."""
        if not self.has_classes:
            return np.zeros(len(self), bool)
        return np.isin(self.class_id, DISTRACTOR_CLASSES)

    @property
    def xyxy(self) -> np.ndarray:
        return _xywh_to_xyxy(self.xywh)

    @property
    def num_frames(self) -> int:
        return int(self.frame.max()) if len(self) else 0

    @classmethod
    def from_rows(cls, rows: np.ndarray) -> GroundTruth:
        """From MOT rows [M, C]; 9 columns = MOT16+ (class, visibility), otherwise MOT15."""
        rows = np.asarray(rows, np.float64).reshape(len(rows), -1)
        m, columns = rows.shape
        has_classes = columns == 9
        return cls(
            frame=rows[:, 0].astype(np.int64),
            track_id=rows[:, 1].astype(np.int64),
            xywh=rows[:, 2:6].copy(),
            considered=(rows[:, 6] != 0) if columns > 6 else np.ones(m, bool),
            class_id=(rows[:, 7].astype(np.int64) if has_classes else np.full(m, PEDESTRIAN_CLASS)),
            visibility=rows[:, 8].copy() if has_classes else np.ones(m),
            has_classes=has_classes,
        )


def read_ground_truth(gt_txt: str | Path) -> GroundTruth:
    """Ground truth with every row kept; `GroundTruth.scored` says which ones count."""
    return GroundTruth.from_rows(_load_rows(gt_txt))


def write_results(path: str | Path, per_frame_results: dict[int, Detections]) -> Path:
    """Tracker output as `frame,id,x,y,w,h,conf,-1,-1,-1`; boxes with tracker_id < 0 are dropped.

    `per_frame_results` maps 1-based frame numbers to detections carrying `tracker_id`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames, ids, boxes, confidences = [], [], [], []
    for frame in sorted(per_frame_results):
        detections = per_frame_results[frame]
        if detections.tracker_id is None or len(detections) == 0:
            continue
        confirmed = detections.tracker_id >= 0
        frames.append(np.full(int(confirmed.sum()), frame))
        ids.append(detections.tracker_id[confirmed])
        boxes.append(detections.xyxy[confirmed].astype(np.float64))
        confidences.append(detections.confidence_or_ones()[confirmed].astype(np.float64))
    if not frames:
        path.write_text("")
        return path
    xyxy = np.concatenate(boxes)
    rows = np.full((len(xyxy), 10), -1.0)
    rows[:, 0] = np.concatenate(frames)
    rows[:, 1] = np.concatenate(ids)
    rows[:, 2:4] = xyxy[:, :2]
    rows[:, 4:6] = xyxy[:, 2:] - xyxy[:, :2]
    rows[:, 6] = np.concatenate(confidences)
    np.savetxt(path, rows, fmt="%d,%d,%.3f,%.3f,%.3f,%.3f,%.4f,%d,%d,%d")
    return path


def read_results(path: str | Path) -> dict[int, Detections]:
    """Frame (1-based) -> detections with `tracker_id` from a MOT results file."""
    rows = _load_rows(path)
    confidence = rows[:, 6] if rows.shape[1] > 6 else np.ones(len(rows))
    xyxy = _xywh_to_xyxy(rows[:, 2:6])
    track_ids = rows[:, 1].astype(np.int64)
    return {
        frame: Detections(
            xyxy=xyxy[idx],
            confidence=confidence[idx],
            class_id=np.zeros(len(idx), np.int64),
            tracker_id=track_ids[idx],
        )
        for frame, idx in _split_by_frame(rows[:, 0].astype(np.int64))
    }


def results_to_rows(per_frame_results: dict[int, Detections]) -> np.ndarray:
    """[M, 7] rows frame, id, x, y, w, h, conf of confirmed boxes (the metrics' input)."""
    parts = []
    for frame in sorted(per_frame_results):
        detections = per_frame_results[frame]
        if detections.tracker_id is None or len(detections) == 0:
            continue
        keep = detections.tracker_id >= 0
        xyxy = detections.xyxy[keep].astype(np.float64)
        parts.append(
            np.column_stack(
                [
                    np.full(len(xyxy), frame),
                    detections.tracker_id[keep],
                    xyxy[:, :2],
                    xyxy[:, 2:] - xyxy[:, :2],
                    detections.confidence_or_ones()[keep],
                ]
            )
        )
    return np.concatenate(parts) if parts else np.zeros((0, 7))


@dataclass(frozen=True)
class SeqInfo:
    """The `[Sequence]` section of a MOTChallenge `seqinfo.ini`."""

    name: str
    frame_rate: float
    seq_length: int
    im_width: int
    im_height: int
    im_dir: str = "img1"
    im_ext: str = ".jpg"


def read_seqinfo(seq_dir: str | Path) -> SeqInfo:
    seq_dir = Path(seq_dir)
    path = seq_dir / SEQINFO_FILE
    if not path.exists():
        raise FileNotFoundError(f"no seqinfo.ini in {seq_dir}")
    parser = configparser.ConfigParser()
    parser.optionxform = str  # MOTChallenge keys are camelCase
    parser.read(path)
    section = parser["Sequence"]
    return SeqInfo(
        name=section.get("name", seq_dir.name),
        frame_rate=float(section["frameRate"]),
        seq_length=int(section["seqLength"]),
        im_width=int(section["imWidth"]),
        im_height=int(section["imHeight"]),
        im_dir=section.get("imDir", "img1"),
        im_ext=section.get("imExt", ".jpg"),
    )


def is_sequence_dir(path: str | Path) -> bool:
    return (Path(path) / SEQINFO_FILE).is_file()


def find_sequences(paths: list[str | Path]) -> list[Path]:
    """Sequence folders among `paths`: each is a sequence or a folder of sequences."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if is_sequence_dir(path):
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(child for child in path.iterdir() if is_sequence_dir(child)))
        else:
            raise FileNotFoundError(f"{path} is neither a MOTChallenge sequence nor a folder")
    return found


@dataclass
class MotSequence:
    """A MOTChallenge sequence folder: seqinfo, public detections, optional gt and frames.

    Frames come from `imDir/000001.jpg ...` when that folder exists, else from `SEQ.mp4` in the
    sequence folder (video frame N = text frame N); without either, tracking is motion-only.
    """

    path: Path
    info: SeqInfo = field(init=False)
    _detections: dict[int, Detections] | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.info = read_seqinfo(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def num_frames(self) -> int:
        return self.info.seq_length

    @property
    def det_path(self) -> Path:
        return self.path / DETECTIONS_FILE

    @property
    def gt_path(self) -> Path | None:
        path = self.path / GROUND_TRUTH_FILE
        return path if path.exists() else None

    @property
    def image_dir(self) -> Path | None:
        path = self.path / self.info.im_dir
        return path if path.is_dir() and any(path.iterdir()) else None

    @property
    def video_path(self) -> Path | None:
        for name in (self.path.name, self.info.name):
            candidate = self.path / f"{name}.mp4"
            if candidate.exists():
                return candidate
        return None

    @property
    def frame_source(self) -> str | None:
        """Where frames come from: "images", "video", or None (motion-only)."""
        if self.image_dir is not None:
            return "images"
        if self.video_path is not None:
            return "video"
        return None

    @property
    def has_frames(self) -> bool:
        return self.frame_source is not None

    def detections(self) -> dict[int, Detections]:
        if self._detections is None:
            self._detections = read_detections(self.det_path)
        return self._detections

    def ground_truth(self) -> GroundTruth:
        if self.gt_path is None:
            raise FileNotFoundError(f"{self.path} has no gt/gt.txt")
        return read_ground_truth(self.gt_path)

    def frames(self) -> Iterator[tuple[int, np.ndarray | None]]:
        """(frame number, BGR image or None) for frames 1..seqLength."""
        source = self.frame_source
        if source == "images":
            import cv2

            assert self.image_dir is not None
            for frame in range(1, self.num_frames + 1):
                image = cv2.imread(str(self.image_dir / f"{frame:06d}{self.info.im_ext}"))
                yield frame, image
        elif source == "video":
            from ray_deepsort.io.video import open_video

            video = open_video(str(self.video_path), need_pixels=True)
            try:
                decoded = video.frames
                for frame in range(1, self.num_frames + 1):
                    yield frame, next(decoded, (None, None))[1]
            finally:
                video.close()
        else:
            for frame in range(1, self.num_frames + 1):
                yield frame, None
