"""The video worker run in-process (motion only, no Ray calls): rows, chunks, streams, failures,
and `ray-deepsort render` on its output."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from ray_deepsort.archive import render as render_cli
from ray_deepsort.archive.driver import default_tracker_params
from ray_deepsort.archive.inputs import ArchiveInput, InputError, resolve_detections
from ray_deepsort.archive.output import (
    ArchiveStore,
    Manifest,
    ManifestEntry,
    publish,
    read_dataset,
)
from ray_deepsort.archive.render import TrailPainter, track_colour
from ray_deepsort.archive.synthetic import (
    SMALL_SCENE,
    detection_columns,
    write_detections,
    write_synthetic_archive,
)
from ray_deepsort.archive.worker import VideoOutcome, VideoTask, WorkerSettings, process_video
from ray_deepsort.core import DeepSORTTracker, Detections
from ray_deepsort.io.detections import read_detection_table
from ray_deepsort.io.mot import write_results
from ray_deepsort.io.video import open_video
from ray_deepsort.synthetic import SyntheticScene

SCENE = replace(SMALL_SCENE, num_frames=40)


def _settings(**changes: object) -> WorkerSettings:
    base = WorkerSettings(tracker_params=default_tracker_params(), chunk_frames=16)
    return replace(base, **changes)


def _run(video: Path, output: Path, settings: WorkerSettings, key: str = "cam") -> VideoOutcome:
    item = ArchiveInput(str(video), "video", video.stat().st_size)
    task = VideoTask(item, key, resolve_detections(item, "auto"), str(output))
    return process_video(task, settings, embedders=[], detectors=[])


def _reference(video: Path, detections_path: Path, fmt: str, streams: list[str]) -> dict:
    """(stream, frame) -> tracker ids from plain DeepSORTTrackers fed frame by frame."""
    table = read_detection_table(detections_path, fmt)
    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS)
    trackers = {
        s: DeepSORTTracker(**{**default_tracker_params(), "frame_rate": fps}) for s in streams
    }
    expected = {}
    index = 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frame = table.for_frame(index)
        for stream, tracker in trackers.items():
            mask = (
                np.ones(len(frame.xyxy), bool) if frame.stream is None else frame.stream == stream
            )
            detections = Detections(
                xyxy=frame.xyxy[mask],
                confidence=frame.confidence[mask],
                class_id=frame.class_id[mask],
            )
            out = tracker.update(detections, frame=image, frame_index=index)
            expected[(stream, index)] = (detections, out.tracker_id)
        index += 1
    return expected


def test_worker_rows_equal_the_in_process_tracker(tmp_path: Path) -> None:
    (video,) = write_synthetic_archive(tmp_path / "in", 1, SCENE, "csv")
    outcome = _run(video, tmp_path / "out", _settings(mot_results=True))
    assert outcome.ok, outcome.reason
    assert outcome.frames == SCENE.num_frames and outcome.streams == ["cam"]
    # 40 frames in chunks of 16: three tracks files and three frames files, plus the MOT file.
    assert sum("tracks/" in f for f in outcome.files) == 3
    assert "mot/cam.txt" in outcome.files
    store = ArchiveStore(tmp_path / "out")
    publish(store, "cam", outcome.attempt_dir, outcome.files)

    expected = _reference(video, video.with_suffix(".csv"), "csv", [""])
    tracks = read_dataset(str(tmp_path / "out"), "tracks").sort_by(
        [("frame_index", "ascending"), ("detection_index", "ascending")]
    )
    want_rows = []
    confirmed_by_frame = {}
    for (_, frame), (detections, ids) in sorted(expected.items()):
        keep = np.flatnonzero(ids >= 0)
        want_rows.extend((frame, int(ids[k]), int(k), *detections.xyxy[k].tolist()) for k in keep)
        if len(keep):
            confirmed_by_frame[frame + 1] = Detections(
                xyxy=detections.xyxy[keep],
                confidence=detections.confidence[keep],
                tracker_id=ids[keep],
            )
    got_rows = list(
        zip(
            *(
                tracks.column(c).to_pylist()
                for c in ("frame_index", "tracker_id", "detection_index", "x1", "y1", "x2", "y2")
            ),
            strict=True,
        )
    )
    assert got_rows == want_rows and len(want_rows) == outcome.rows > 0
    assert set(tracks.column("stream_id").to_pylist()) == {"cam"}
    frames = read_dataset(str(tmp_path / "out"), "frames")
    assert sorted(frames.column("frame_index").to_pylist()) == list(range(SCENE.num_frames))
    assert set(frames.column("source").to_pylist()) == {str(video.resolve())}
    timestamps = frames.sort_by("frame_index").column("timestamp").cast("int64").to_numpy()
    np.testing.assert_allclose(timestamps, np.arange(SCENE.num_frames) / SCENE.fps * 1e6, atol=1)
    reference_mot = write_results(tmp_path / "reference.txt", confirmed_by_frame)
    assert (tmp_path / "out" / "mot" / "cam.txt").read_text() == reference_mot.read_text()


def test_streams_inside_one_video_get_their_own_trackers(tmp_path: Path) -> None:
    scene = SyntheticScene(replace(SCENE, seed=7))
    video = scene.write_video(tmp_path / "mosaic.mp4")
    columns = detection_columns(scene)
    centre = 0.5 * (columns["x1"] + columns["x2"])
    columns["stream"] = np.where(centre < SCENE.width / 2, "left", "right")
    write_detections(columns, tmp_path / "mosaic.parquet")
    outcome = _run(video, tmp_path / "out", _settings(), key="mosaic")
    assert outcome.ok and outcome.streams == ["mosaic/left", "mosaic/right"]
    publish(ArchiveStore(tmp_path / "out"), "mosaic", outcome.attempt_dir, outcome.files)
    expected = _reference(video, tmp_path / "mosaic.parquet", "parquet", ["left", "right"])
    tracks = read_dataset(str(tmp_path / "out"), "tracks")
    got = {
        (s, f, d): t
        for s, f, d, t in zip(
            *(
                tracks.column(c).to_pylist()
                for c in ("stream_id", "frame_index", "detection_index", "tracker_id")
            ),
            strict=True,
        )
    }
    want = {
        (f"mosaic/{stream}", frame, int(k)): int(ids[k])
        for (stream, frame), (_, ids) in expected.items()
        for k in np.flatnonzero(ids >= 0)
    }
    assert got == want and len(want) > 0
    frames = read_dataset(str(tmp_path / "out"), "frames")
    assert frames.num_rows == 2 * SCENE.num_frames  # one row per frame and stream


def test_unreadable_videos_fail_alone_with_a_reason(tmp_path: Path) -> None:
    (video,) = write_synthetic_archive(tmp_path, 1, SCENE, "parquet")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    (tmp_path / "corrupt.parquet").write_bytes(video.with_suffix(".parquet").read_bytes())
    outcome = _run(corrupt, tmp_path / "out", _settings(), key="corrupt")
    assert not outcome.ok and "cannot open video" in outcome.reason
    assert outcome.files == []
    assert ArchiveStore(tmp_path / "out").list_files("_archive/staging") == []
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    (tmp_path / "truncated.parquet").write_bytes(video.with_suffix(".parquet").read_bytes())
    outcome = _run(truncated, tmp_path / "out", _settings(), key="truncated")
    assert not outcome.ok and "truncated.mp4" in outcome.reason
    with pytest.raises(InputError, match="video not found"):
        open_video(str(tmp_path / "nope.mp4"), need_pixels=False)


def test_grab_only_decoding_counts_the_same_frames(tmp_path: Path) -> None:
    (video,) = write_synthetic_archive(tmp_path, 1, SCENE, "parquet")
    with_pixels = open_video(str(video), need_pixels=True)
    without = open_video(str(video), need_pixels=False)
    pixels = [(i, image is not None) for i, image in with_pixels.frames]
    indices = [(i, image is not None) for i, image in without.frames]
    with_pixels.close()
    without.close()
    assert [i for i, _ in pixels] == [i for i, _ in indices] == list(range(SCENE.num_frames))
    assert all(has for _, has in pixels) and not any(has for _, has in indices)
    assert (with_pixels.width, with_pixels.height) == (SCENE.width, SCENE.height)


def test_track_colours_are_stable_and_distinct() -> None:
    colours = [track_colour("cam", track) for track in range(1, 21)]
    assert colours == [track_colour("cam", track) for track in range(1, 21)]
    assert len(set(colours)) == 20
    assert track_colour("cam", -1) == (160, 160, 160)


def test_painter_draws_boxes_in_track_colours_and_trails() -> None:
    painter = TrailPainter(trail=5)
    colour = track_colour("cam", 3)
    for frame in range(3):
        image = np.zeros((100, 100, 3), np.uint8)
        x = 10 + 10 * frame
        painter.draw(
            image,
            frame,
            np.array([[x, 40, x + 20, 80]], np.float32),
            np.array([3]),
            np.array(["cam"], dtype=object),
        )
    assert tuple(image[60, x].tolist()) == colour  # left edge of the last box
    assert tuple(image[80, 20].tolist()) == colour  # the trail through earlier bottom centres
    painter.draw(image, 10, np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0, dtype=object))
    assert painter._points == {}  # trails older than 5 frames are forgotten


def test_render_writes_an_annotated_mp4(tmp_path: Path) -> None:
    (video,) = write_synthetic_archive(tmp_path / "in", 1, SCENE, "parquet")
    outcome = _run(video, tmp_path / "out", _settings())
    store = ArchiveStore(tmp_path / "out")
    publish(store, "cam", outcome.attempt_dir, outcome.files)
    Manifest(store).record(
        ManifestEntry(key="cam", path=str(video.resolve()), kind="video", status="done")
    )
    parser = argparse.ArgumentParser()
    render_cli.add_arguments(parser)
    target = tmp_path / "view" / "cam.mp4"
    args = parser.parse_args(
        [str(tmp_path / "out"), "--source", "cam", "-o", str(target), "--start", "5", "--end", "30"]
    )
    assert render_cli.run(args) == 0
    capture = cv2.VideoCapture(str(target))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 25
    ok, first = capture.read()
    capture.release()
    original = open_video(str(video), need_pixels=True)
    frames = dict(original.frames)
    original.close()
    assert ok and np.abs(first.astype(int) - frames[5].astype(int)).mean() > 0.5  # drawn on
    missing = parser.parse_args([str(tmp_path / "out"), "--source", "nope", "-o", str(target)])
    assert render_cli.run(missing) == 2


def test_rows_do_not_depend_on_request_or_chunk_sizes(tmp_path: Path) -> None:
    (video,) = write_synthetic_archive(tmp_path / "in", 1, SCENE, "parquet", first_seed=11)
    tables = []
    for run, (per_request, chunk) in enumerate([(1, 7), (8, 3000), (5, 16)]):
        output = tmp_path / f"out{run}"
        settings = _settings(frames_per_request=per_request, chunk_frames=chunk)
        outcome = _run(video, output, settings)
        assert outcome.ok
        publish(ArchiveStore(output), "cam", outcome.attempt_dir, outcome.files)
        table = read_dataset(str(output), "tracks")
        tables.append(
            table.sort_by([("frame_index", "ascending"), ("detection_index", "ascending")])
        )
    assert tables[0].num_rows > 0
    assert all(table.equals(tables[0]) for table in tables[1:])
