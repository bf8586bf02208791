"""MOTChallenge files: detections, ground truth, tracker results, `seqinfo.ini`, sequence frames.

Box rows are `frame,id,x,y,w,h,conf,...` with 1-based frames and top-left/size boxes; this module
converts to and from the `xyxy` boxes the tracker works with.

Every reader fails loudly: a file that cannot be used raises `MotFormatError` with a one-line
message starting `path:line:`, so the user can open the spot (a header line, spaces instead of
commas, too few columns, a frame outside 1..seqLength, an id twice in one frame, an unknown gt
class). Results are read as float64, as TrackEval reads them: boxes whose IoU is exactly 0.5 must
match here as they do there.

Ground truth comes in two layouts; which one a file has is the benchmark's business, and its
column count must agree (`GroundTruth.benchmark`):
- MOT15 (10 columns): `...,consider,wx,wy,wz` (world coordinates). No classes: every row with
  `consider != 0` is scored (as TrackEval does for MOT15).
- MOT16/17/20 (9 columns): `...,consider,class,visibility`. Rows are scored when
  `consider != 0` and class is pedestrian (1); tracker boxes on distractor classes (TrackEval's
  list, which for MOT20 adds non-MOT vehicles) are forgiven by the metrics.
"""

from __future__ import annotations

import configparser
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ray_deepsort.core.detections import Detections
from ray_deepsort.io.errors import InputError

if TYPE_CHECKING:
    from ray_deepsort.io.video import FrameSource

# Where a MOTChallenge sequence folder keeps its files.
SEQINFO_FILE = "seqinfo.ini"
DETECTIONS_FILE = Path("det") / "det.txt"
GROUND_TRUTH_FILE = Path("gt") / "gt.txt"

BENCHMARKS = ("MOT15", "MOT16", "MOT17", "MOT20")
GT_COLUMNS = {"MOT15": 10, "MOT16": 9, "MOT17": 9, "MOT20": 9}
PEDESTRIAN_CLASS = 1
MOT_CLASSES = range(1, 14)  # pedestrian .. crowd: TrackEval rejects any other gt class
# TrackEval's MotChallenge2DBox distractor classes: person on vehicle, static person, distractor,
# reflection, and for MOT20 also non-MOT vehicle (6).
DISTRACTOR_CLASSES = {
    "MOT16": (2, 7, 8, 12),
    "MOT17": (2, 7, 8, 12),
    "MOT20": (2, 6, 7, 8, 12),
}
_BOX_COLUMNS = "frame,id,x,y,w,h,..."
_GT_LAYOUTS = {
    "MOT15": "frame,id,x,y,w,h,consider,wx,wy,wz",
    "MOT16": "frame,id,x,y,w,h,consider,class,visibility",
}
_RESULT_FORMAT = "%d,%d,%.3f,%.3f,%.3f,%.3f,%.4f,%d,%d,%d"


class MotFormatError(InputError):
    """A MOTChallenge file that is there but cannot be used; the message names file and line."""


@dataclass(frozen=True)
class _Table:
    """The numeric rows of a MOT text file and the line each came from (for messages)."""

    path: Path
    rows: np.ndarray  # float64 [M, C]
    lines: np.ndarray  # int64 [M], 1-based

    def error(self, row: int, message: str) -> MotFormatError:
        return MotFormatError(f"{self.path}:{self.lines[row]}: {message}")

    @property
    def frames(self) -> np.ndarray:
        return self.rows[:, 0].astype(np.int64)


def _values(count: int) -> str:
    return f"{count} value" if count == 1 else f"{count} values"


def _bad_line(path: Path, numbered: list[tuple[int, str]], reason: str) -> MotFormatError:
    """The error of the first line that `np.loadtxt` refused: not a number, or a ragged row."""
    width = len(numbered[0][1].split(","))
    for number, line in numbered:
        fields = line.split(",")
        for column, value in enumerate(fields, start=1):
            try:
                float(value)
            except ValueError:
                if len(fields) == 1 and re.search(r"[\s;]", line.strip()):
                    hint = "values separated by spaces, tabs or semicolons; MOT files use commas"
                elif not value.strip():
                    hint = f"column {column} is empty"
                elif number == numbered[0][0]:
                    hint = f"{value.strip()!r} is not a number (a header line? MOT files have none)"
                else:
                    hint = f"column {column}: {value.strip()!r} is not a number"
                return MotFormatError(f"{path}:{number}: {hint}")
        if len(fields) != width:
            return MotFormatError(
                f"{path}:{number}: {_values(len(fields))}, but line {numbered[0][0]} has {width}"
            )
    return MotFormatError(f"{path}: not comma-separated numbers ({reason})")


def _read_table(path: str | Path, min_columns: int = 6) -> _Table:
    """All rows of a MOT text file (blank lines skipped) as float64, checked to be usable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise MotFormatError(f"{path}: cannot read: {error}") from None
    numbered = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not numbered:
        return _Table(path, np.zeros((0, min_columns)), np.zeros(0, np.int64))
    try:
        rows = np.loadtxt(
            [line for _, line in numbered], delimiter=",", ndmin=2, dtype=np.float64, comments=None
        )
    except ValueError as error:
        raise _bad_line(path, numbered, str(error)) from None
    table = _Table(path, rows, np.array([n for n, _ in numbered], np.int64))
    if rows.shape[1] < min_columns:
        raise table.error(
            0, f"{_values(rows.shape[1])}, expected at least {min_columns} ({_BOX_COLUMNS})"
        )
    not_finite = ~np.isfinite(rows).all(axis=1)
    if not_finite.any():
        raise table.error(int(np.argmax(not_finite)), "a value is not a finite number")
    fractional = (rows[:, :2] != np.round(rows[:, :2])).any(axis=1)
    if fractional.any():
        raise table.error(int(np.argmax(fractional)), "frame and id must be whole numbers")
    return table


def _check_frames(table: _Table, num_frames: int | None) -> None:
    """Frames outside 1..seqLength would be dropped (TrackEval refuses them): refuse them too."""
    if num_frames is None or not len(table.rows):
        return
    outside = (table.frames < 1) | (table.frames > num_frames)
    if outside.any():
        row = int(np.argmax(outside))
        raise table.error(
            row,
            f"frame {table.frames[row]} is outside 1..{num_frames} (seqLength in {SEQINFO_FILE})",
        )


def _check_unique_ids(table: _Table, among: np.ndarray) -> None:
    """An id twice in one frame (among the rows of mask `among`) makes matching ambiguous."""
    index = np.flatnonzero(among)
    frames, ids = table.frames[index], table.rows[index, 1].astype(np.int64)
    order = np.lexsort((table.lines[index], ids, frames))
    frames, ids, index = frames[order], ids[order], index[order]
    repeated = np.flatnonzero((frames[1:] == frames[:-1]) & (ids[1:] == ids[:-1]))
    if len(repeated):
        first = repeated[np.argmin(table.lines[index[repeated + 1]])]
        raise table.error(
            int(index[first + 1]),
            f"id {ids[first]} appears twice in frame {frames[first]} "
            f"(also on line {table.lines[index[first]]})",
        )


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
    det_txt: str | Path, min_confidence: float | None = None, num_frames: int | None = None
) -> dict[int, Detections]:
    """Frame (1-based) -> detections; confidence from column 7, class 0. Empty frames are absent.

    With `num_frames` (seqLength), a frame outside 1..num_frames is a `MotFormatError`.
    """
    table = _read_table(det_txt)
    _check_frames(table, num_frames)
    rows = table.rows
    if min_confidence is not None and rows.shape[1] > 6:
        rows = rows[rows[:, 6] >= min_confidence]
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


def benchmark_from_name(name: str) -> str | None:
    """The benchmark a sequence name starts with (`MOT17-09-FRCNN` -> MOT17), if any."""
    match = re.match(r"(MOT1[5-7]|MOT20)(-|$)", name)
    return match.group(1) if match else None


def gt_benchmark(columns: int, benchmark: str | None) -> str:
    """The benchmark of a ground-truth file with `columns` columns: `benchmark` when given (its
    layout must have that many columns), else MOT15 for 10 columns and MOT17 for 9.

    `ValueError` on a mismatch: an 8-column MOT16 file would lose its classes, a 6-column file
    its distractor rules, and both would be scored wrongly without a word.
    """
    if benchmark is not None:
        if benchmark not in GT_COLUMNS:
            raise ValueError(f"unknown benchmark {benchmark!r} (one of {', '.join(BENCHMARKS)})")
        if columns != GT_COLUMNS[benchmark]:
            layout = _GT_LAYOUTS["MOT15" if benchmark == "MOT15" else "MOT16"]
            raise ValueError(
                f"{columns} columns, but {benchmark} ground truth has "
                f"{GT_COLUMNS[benchmark]} ({layout})"
            )
        return benchmark
    for name in ("MOT15", "MOT17"):
        if columns == GT_COLUMNS[name]:
            return name
    raise ValueError(
        f"{columns} columns: not MOTChallenge ground truth (MOT15 has 10 columns, "
        "MOT16/17/20 have 9)"
    )


@dataclass
class GroundTruth:
    """All ground-truth rows of one sequence (flat arrays, one entry per row)."""

    frame: np.ndarray  # int64 [M], 1-based
    track_id: np.ndarray  # int64 [M]
    xywh: np.ndarray  # float64 [M, 4]
    considered: np.ndarray  # bool [M]: int(column 7) != 0, as TrackEval reads it
    class_id: np.ndarray  # int64 [M]; PEDESTRIAN_CLASS everywhere for MOT15 files
    visibility: np.ndarray  # float64 [M]; 1 where the file has no visibility column
    benchmark: str  # MOT15, MOT16, MOT17 or MOT20: decides classes and distractors

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def has_classes(self) -> bool:
        """False for MOT15, whose columns 8-10 are world coordinates."""
        return self.benchmark != "MOT15"

    @property
    def scored(self) -> np.ndarray:
        """Rows the metrics count: considered, and pedestrians when the file has classes."""
        if not self.has_classes:
            return self.considered.copy()
        return self.considered & (self.class_id == PEDESTRIAN_CLASS)

    @property
    def distractor(self) -> np.ndarray:
        """Rows whose region forgives tracker boxes (the benchmark's distractor classes)."""
        if not self.has_classes:
            return np.zeros(len(self), bool)
        return np.isin(self.class_id, DISTRACTOR_CLASSES[self.benchmark])

    @property
    def xyxy(self) -> np.ndarray:
        return _xywh_to_xyxy(self.xywh)

    @property
    def num_frames(self) -> int:
        return int(self.frame.max()) if len(self) else 0

    @classmethod
    def from_rows(cls, rows: np.ndarray, benchmark: str | None = None) -> GroundTruth:
        """From MOT rows [M, C] of `benchmark`'s layout (None: MOT15 if 10 columns, MOT17 if 9)."""
        rows = np.asarray(rows, np.float64)
        if rows.ndim != 2:
            raise ValueError(f"ground-truth rows must be 2-D, got shape {rows.shape}")
        benchmark = gt_benchmark(rows.shape[1], benchmark)
        m = len(rows)
        has_classes = benchmark != "MOT15"
        return cls(
            frame=rows[:, 0].astype(np.int64),
            track_id=rows[:, 1].astype(np.int64),
            xywh=rows[:, 2:6].copy(),
            considered=rows[:, 6].astype(np.int64) != 0,
            class_id=(rows[:, 7].astype(np.int64) if has_classes else np.full(m, PEDESTRIAN_CLASS)),
            visibility=rows[:, 8].copy() if has_classes else np.ones(m),
            benchmark=benchmark,
        )


def read_ground_truth(
    gt_txt: str | Path, benchmark: str | None = None, num_frames: int | None = None
) -> GroundTruth:
    """Ground truth with every row kept; `GroundTruth.scored` says which ones count.

    `benchmark` (from the sequence name or the user) fixes the layout and the column count must
    fit it; None takes the layout from the column count. With `num_frames` (seqLength), frames
    outside 1..num_frames are refused. An empty file is ground truth without boxes.
    """
    table = _read_table(gt_txt)
    if not len(table.rows):
        return GroundTruth.from_rows(np.zeros((0, GT_COLUMNS[benchmark or "MOT17"])), benchmark)
    try:
        benchmark = gt_benchmark(table.rows.shape[1], benchmark)
    except ValueError as error:
        raise table.error(0, str(error)) from None
    _check_frames(table, num_frames)
    _check_unique_ids(table, np.ones(len(table.rows), bool))
    if benchmark != "MOT15":
        unknown = ~np.isin(table.rows[:, 7], MOT_CLASSES)
        if unknown.any():
            row = int(np.argmax(unknown))
            raise table.error(
                row,
                f"class {table.rows[row, 7]:g} is not a MOTChallenge class "
                f"({MOT_CLASSES.start}-{MOT_CLASSES.stop - 1})",
            )
    return GroundTruth.from_rows(table.rows, benchmark)


def results_to_rows(per_frame_results: Mapping[int, Detections]) -> np.ndarray:
    """[M, 7] float64 rows frame, id, x, y, w, h, conf of confirmed boxes (the metrics' input)."""
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
                    detections.confidence_or_ones()[keep].astype(np.float64),
                ]
            )
        )
    return np.concatenate(parts) if parts else np.zeros((0, 7))


def _results_text(per_frame_results: Mapping[int, Detections]) -> str:
    rows = results_to_rows(per_frame_results)
    if not len(rows):
        return ""
    full = np.full((len(rows), 10), -1.0)
    full[:, :7] = rows
    buffer = StringIO()
    np.savetxt(buffer, full, fmt=_RESULT_FORMAT)
    return buffer.getvalue()


def write_results(path: str | Path, per_frame_results: Mapping[int, Detections]) -> Path:
    """Tracker output as `frame,id,x,y,w,h,conf,-1,-1,-1`; boxes with tracker_id < 0 are dropped.

    `per_frame_results` maps 1-based frame numbers to detections carrying `tracker_id`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_results_text(per_frame_results))
    return path


def stored_result_rows(per_frame_results: Mapping[int, Detections]) -> np.ndarray:
    """[M, 10] float64 rows exactly as `write_results` stores them (boxes to 3 decimals).

    Scoring these rather than the tracker's float32 boxes makes our numbers those that TrackEval
    computes from the written file, even for a match whose IoU is exactly 0.5.
    """
    text = _results_text(per_frame_results)
    if not text:
        return np.zeros((0, 10))
    return np.loadtxt(StringIO(text), delimiter=",", ndmin=2, dtype=np.float64)


def read_result_rows(path: str | Path, num_frames: int | None = None) -> np.ndarray:
    """The rows of a results file as float64 [M, >=6], as TrackEval reads them.

    Refused (`MotFormatError`): frames outside 1..num_frames (when given) and a confirmed id
    (>= 0) twice in one frame.
    """
    table = _read_table(path)
    _check_frames(table, num_frames)
    _check_unique_ids(table, table.rows[:, 1] >= 0)
    return table.rows


def read_results(path: str | Path) -> dict[int, Detections]:
    """Frame (1-based) -> detections with `tracker_id` from a MOT results file."""
    rows = read_result_rows(path)
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
    """The sequence's `seqinfo.ini`; a missing section, key or number is a `MotFormatError`."""
    seq_dir = Path(seq_dir)
    path = seq_dir / SEQINFO_FILE
    if not path.is_file():
        raise InputError(f"{seq_dir}: not a MOTChallenge sequence (no {SEQINFO_FILE})")
    parser = configparser.ConfigParser()
    parser.optionxform = str  # MOTChallenge keys are camelCase
    try:
        parser.read(path)
    except configparser.MissingSectionHeaderError as error:
        raise MotFormatError(f"{path}:{error.lineno}: no [Sequence] header before it") from None
    except configparser.ParsingError as error:
        line, text = error.errors[0]
        raise MotFormatError(f"{path}:{line}: not a key=value line: {text}") from None
    except configparser.Error as error:
        raise MotFormatError(f"{path}: {error.message.splitlines()[0]}") from None
    if not parser.has_section("Sequence"):
        raise MotFormatError(f"{path}: no [Sequence] section")
    section = parser["Sequence"]

    def number(key: str, kind: type[int] | type[float]) -> int | float:
        if key not in section:
            raise MotFormatError(f"{path}: [Sequence] has no {key}")
        try:
            value = kind(section[key])
        except ValueError:
            raise MotFormatError(f"{path}: {key}={section[key]!r} is not a number") from None
        if not math.isfinite(value) or value <= 0:
            raise MotFormatError(f"{path}: {key}={section[key]!r} must be positive")
        return value

    return SeqInfo(
        name=section.get("name", seq_dir.name),
        frame_rate=float(number("frameRate", float)),
        seq_length=int(number("seqLength", int)),
        im_width=int(number("imWidth", int)),
        im_height=int(number("imHeight", int)),
        im_dir=section.get("imDir", "img1"),
        im_ext=section.get("imExt", ".jpg"),
    )


def is_sequence_dir(path: str | Path) -> bool:
    return (Path(path) / SEQINFO_FILE).is_file()


def find_sequences(paths: list[str | Path]) -> tuple[list[Path], list[str]]:
    """Sequence folders among `paths`, and why subfolders of a folder of sequences were skipped.

    Each path is a sequence (it has seqinfo.ini) or a folder holding sequences; anything else is
    an `InputError`, so a typo or a sequence without seqinfo.ini never vanishes without a word.
    """
    found: list[Path] = []
    skipped: list[str] = []
    for raw in paths:
        path = Path(raw)
        if is_sequence_dir(path):
            found.append(path)
            continue
        if not path.is_dir():
            problem = "not a folder" if path.exists() else "no such folder"
            raise InputError(f"{path}: {problem}")
        children = sorted(c for c in path.iterdir() if c.is_dir() and not c.name.startswith("."))
        inside = [child for child in children if is_sequence_dir(child)]
        if not inside:
            raise InputError(
                f"{path}: not a MOTChallenge sequence (no {SEQINFO_FILE}) "
                "and no folder in it is one"
            )
        found.extend(inside)
        skipped.extend(f"{child}: no {SEQINFO_FILE}" for child in children if child not in inside)
    return found, skipped


@dataclass
class MotSequence:
    """A MOTChallenge sequence folder: seqinfo, public detections, optional gt and frames.

    `det_name` picks `det/NAME.txt` (MOT16 ships `det` and others, such as DPM's). `benchmark`
    overrides the one the folder name starts with (MOT15/16/17/20); it decides the gt layout.
    Frames come from `imDir/000001.jpg ...` when that folder exists, else from `SEQ.mp4` in the
    sequence folder (video frame N = text frame N); without either, tracking is motion-only.
    """

    path: Path
    det_name: str = "det"
    benchmark: str | None = None
    info: SeqInfo = field(init=False)
    _detections: dict[int, Detections] | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.info = read_seqinfo(self.path)
        named = benchmark_from_name(self.name) or benchmark_from_name(self.info.name)
        if self.benchmark is not None and named is not None and named != self.benchmark:
            raise InputError(
                f"{self.path}: benchmark {self.benchmark} asked for, but the sequence is {named}"
            )

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def num_frames(self) -> int:
        return self.info.seq_length

    @property
    def named_benchmark(self) -> str | None:
        """The benchmark asked for, else the one the name starts with; None: from the gt file."""
        return (
            self.benchmark or benchmark_from_name(self.name) or benchmark_from_name(self.info.name)
        )

    @property
    def det_path(self) -> Path:
        return self.path / DETECTIONS_FILE.with_name(f"{self.det_name}.txt")

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
        """`det/NAME.txt`; a missing file names the detection files the folder does have."""
        if self._detections is None:
            if not self.det_path.is_file():
                have = sorted(p.stem for p in self.det_path.parent.glob("*.txt"))
                listing = f" ({self.det_path.parent.name}/ has {', '.join(have)})" if have else ""
                raise InputError(f"{self.det_path}: no such file{listing}")
            self._detections = read_detections(self.det_path, num_frames=self.num_frames)
        return self._detections

    def ground_truth(self) -> GroundTruth:
        if self.gt_path is None:
            raise InputError(f"{self.path} has no {GROUND_TRUTH_FILE}")
        return read_ground_truth(self.gt_path, self.named_benchmark, self.num_frames)

    def frames(self) -> Iterator[tuple[int, np.ndarray | None]]:
        """(frame number, BGR image or None) for frames 1..seqLength.

        The video is opened here, not on the first `next`, so an unreadable one raises
        `InputError` from this call and the caller can fall back to motion only.
        """
        source = self.frame_source
        if source == "images":
            return self._image_frames()
        if source == "video":
            from ray_deepsort.io.video import open_video

            return self._video_frames(open_video(str(self.video_path), need_pixels=True))
        return ((frame, None) for frame in range(1, self.num_frames + 1))

    def _image_frames(self) -> Iterator[tuple[int, np.ndarray | None]]:
        import cv2

        assert self.image_dir is not None
        for frame in range(1, self.num_frames + 1):
            yield frame, cv2.imread(str(self.image_dir / f"{frame:06d}{self.info.im_ext}"))

    def _video_frames(self, video: FrameSource) -> Iterator[tuple[int, np.ndarray | None]]:
        try:
            decoded = video.frames
            for frame in range(1, self.num_frames + 1):
                yield frame, next(decoded, (None, None))[1]
        finally:
            video.close()
