"""`ray-deepsort render`: draw one input's tracks from the archive output onto its video (MP4).

Each track keeps one colour (a hash of stream and tracker id, spread around the hue circle by
the golden ratio), in every frame and every render, with its id and a trail of the bottom centre
of its box over the last `--trail` frames. The video comes from the manifest's recorded path
(or `--video`); frames are numbered as in the Parquet rows (from 0 in decoding order).
"""

from __future__ import annotations

import argparse
import colorsys
import os
import sys
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GOLDEN_RATIO = 0.6180339887498949
UNCONFIRMED_COLOUR = (160, 160, 160)


def track_colour(stream_id: str, tracker_id: int) -> tuple[int, int, int]:
    """BGR colour of a track: stable across frames and runs, neighbours differ in hue."""
    if tracker_id < 0:
        return UNCONFIRMED_COLOUR
    seed = zlib.crc32(f"{stream_id}#{tracker_id}".encode())
    hue = (tracker_id * GOLDEN_RATIO + (seed % 1000) / 1000.0 * 0.1) % 1.0
    saturation = 0.65 + 0.35 * ((seed >> 10) % 100) / 100.0
    red, green, blue = colorsys.hsv_to_rgb(hue, saturation, 1.0)
    return int(255 * blue), int(255 * green), int(255 * red)


@dataclass
class TrackRows:
    """Rows of one source sorted by frame: columns as numpy arrays, frame lookup by bisection."""

    frame_index: np.ndarray
    stream_id: np.ndarray
    tracker_id: np.ndarray
    xyxy: np.ndarray

    def __post_init__(self) -> None:
        order = np.argsort(self.frame_index, kind="stable")
        self.frame_index = self.frame_index[order]
        self.stream_id = self.stream_id[order]
        self.tracker_id = self.tracker_id[order]
        self.xyxy = self.xyxy[order]

    def at(self, frame: int) -> slice:
        start, stop = np.searchsorted(self.frame_index, [frame, frame + 1])
        return slice(int(start), int(stop))


@dataclass
class TrailPainter:
    """Draws boxes, ids and trails frame by frame; remembers recent positions of each track."""

    trail: int = 30
    thickness: int = 2
    _points: dict[tuple[str, int], deque[tuple[int, int, int]]] = field(default_factory=dict)

    def draw(
        self,
        image: np.ndarray,
        frame: int,
        xyxy: np.ndarray,
        tracker_id: np.ndarray,
        stream_id: np.ndarray,
    ) -> np.ndarray:
        import cv2

        boxes = np.round(np.asarray(xyxy, np.float64)).astype(np.int64).reshape(-1, 4)
        bottoms = np.column_stack([(boxes[:, 0] + boxes[:, 2]) // 2, boxes[:, 3]])
        for (x1, y1, x2, y2), (bx, by), tid, sid in zip(
            boxes, bottoms, tracker_id.tolist(), stream_id.tolist(), strict=True
        ):
            colour = track_colour(str(sid), int(tid))
            cv2.rectangle(image, (int(x1), int(y1)), (int(x2), int(y2)), colour, self.thickness)
            if tid < 0:
                continue
            if self.trail > 0:
                self._points.setdefault((str(sid), int(tid)), deque(maxlen=self.trail)).append(
                    (frame, int(bx), int(by))
                )
            label = f"{tid}"
            (width, height), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
            top = max(int(y1) - height - baseline - 2, 0)
            cv2.rectangle(
                image,
                (int(x1), top),
                (int(x1) + width + 4, top + height + baseline + 2),
                colour,
                -1,
            )
            cv2.putText(
                image,
                label,
                (int(x1) + 2, top + height + 1),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.5,
                (0, 0, 0),
                1,
                cv2.LINE_AA,
            )
        if self.trail > 0:
            for key in list(self._points):
                points = self._points[key]
                while points and points[0][0] <= frame - self.trail:
                    points.popleft()
                if not points:
                    del self._points[key]
                    continue
                if len(points) > 1:
                    polyline = np.array([(x, y) for _, x, y in points], np.int32).reshape(-1, 1, 2)
                    cv2.polylines(image, [polyline], False, track_colour(*key), self.thickness)
        return image


def load_rows(archive: str, key: str, stream: str | None = None) -> TrackRows:
    from ray_deepsort.archive.output import read_dataset

    table = read_dataset(archive, "tracks", keys=[key])
    stream_ids = np.asarray(table.column("stream_id").to_pylist(), dtype=object)
    mask = np.ones(table.num_rows, bool) if stream is None else stream_ids == stream
    columns = {
        name: table.column(name).to_numpy()[mask]
        for name in ("frame_index", "tracker_id", "x1", "y1", "x2", "y2")
    }
    return TrackRows(
        frame_index=columns["frame_index"].astype(np.int64),
        stream_id=stream_ids[mask],
        tracker_id=columns["tracker_id"].astype(np.int64),
        xyxy=np.column_stack([columns[c] for c in ("x1", "y1", "x2", "y2")]).astype(np.float32),
    )


def find_input(archive: str, key: str) -> tuple[str, str]:
    """(path, kind) recorded for `key` in the archive's manifest."""
    from ray_deepsort.archive.output import ArchiveStore, Manifest

    entries, _ = Manifest(ArchiveStore(archive)).load()
    for entry in entries.values():
        if entry.key == key:
            return entry.path, entry.kind
    known = ", ".join(sorted(e.key for e in entries.values())[:20])
    raise KeyError(f"no input with key {key!r} in {archive}; known keys: {known}")


def render(
    archive: str,
    key: str,
    output: str,
    *,
    video: str | None = None,
    stream: str | None = None,
    trail: int = 30,
    start: int = 0,
    end: int | None = None,
    scale: float = 1.0,
) -> int:
    """Write the annotated MP4; returns the number of frames written."""
    import cv2

    from ray_deepsort.archive.inputs import ArchiveInput, open_source

    if video is None:
        path, kind = find_input(archive, key)
    else:
        path = str(Path(video).resolve())
        kind = "mot" if (Path(path) / "seqinfo.ini").is_file() else "video"
    rows = load_rows(archive, key, stream)
    source = open_source(ArchiveInput(path=path, kind=kind), need_pixels=True)
    painter = TrailPainter(trail=trail)
    final = Path(output)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = final.with_name(f".{final.stem}.rendering{final.suffix or '.mp4'}")
    size = (max(int(source.width * scale), 2), max(int(source.height * scale), 2))
    writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*"mp4v"), source.fps, size)
    if not writer.isOpened():
        source.close()
        raise RuntimeError(f"OpenCV cannot write mp4v video to {temporary}")
    written = 0
    try:
        for index, image in source.frames:
            if end is not None and index >= end:
                break
            if image is None:
                continue
            window = rows.at(index)
            painter.draw(
                image,
                index,
                rows.xyxy[window],
                rows.tracker_id[window],
                rows.stream_id[window],
            )
            if index < start:
                continue
            confirmed = int((rows.tracker_id[window] >= 0).sum())
            cv2.putText(
                image,
                f"{key}  frame {index}  tracks {confirmed}",
                (8, 20),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.55,
                (255, 255, 255),
                1,
                cv2.LINE_AA,
            )
            if scale != 1.0:
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            writer.write(image)
            written += 1
    finally:
        writer.release()
        source.close()
    os.replace(temporary, final)
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("archive", help="output folder of `ray-deepsort reprocess`")
    parser.add_argument("--source", required=True, help="source_key of the input to draw")
    parser.add_argument("-o", "--output", required=True, help="MP4 file to write")
    parser.add_argument(
        "--video", help="video file or sequence folder (default: the manifest's path)"
    )
    parser.add_argument("--stream", help="draw only this stream_id (multi-stream videos)")
    parser.add_argument("--trail", type=int, default=30, help="trail length in frames (0: none)")
    parser.add_argument("--start", type=int, default=0, help="first frame to write")
    parser.add_argument("--end", type=int, help="stop before this frame")
    parser.add_argument("--scale", type=float, default=1.0, help="resize the output")


def run(args: argparse.Namespace) -> int:
    try:
        written = render(
            args.archive,
            args.source,
            args.output,
            video=args.video,
            stream=args.stream,
            trail=args.trail,
            start=args.start,
            end=args.end,
            scale=args.scale,
        )
    except (KeyError, OSError, RuntimeError, ValueError) as error:
        print(f"render: {error}", file=sys.stderr)
        return 2
    print(f"wrote {written} frames to {args.output}")
    return 0
