"""Archive reprocessing on a real local Ray: identity with in-process tracking, crash recovery
(driver killed, worker killed), failures that stay alone, and a detector plugin."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest

from ray_deepsort.archive.driver import ArchiveConfig, ArchiveJob, default_tracker_params
from ray_deepsort.archive.output import read_dataset
from ray_deepsort.archive.synthetic import SMALL_SCENE, write_synthetic_archive
from ray_deepsort.core import DeepSORTTracker, Detections
from ray_deepsort.io.detections import read_detection_table
from ray_deepsort.pipeline.parquet import tracks_table
from ray_deepsort.pipeline.types import FrameResult, SourcePosition
from ray_deepsort.synthetic import SyntheticScene

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCENE = replace(SMALL_SCENE, num_frames=32)
REID_INPUT = (128, 64)
SORT_KEYS = [
    ("stream_id", "ascending"),
    ("frame_index", "ascending"),
    ("detection_index", "ascending"),
]


def _config(inputs: list[Path], output: Path, **changes: object) -> ArchiveConfig:
    base = ArchiveConfig(
        inputs=[str(p) for p in inputs],
        output=str(output),
        model="none",
        progress="none",
        start_timeout_s=120.0,
    )
    return dataclasses.replace(base, **changes)


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by(SORT_KEYS)


def _reid_model(input_size: tuple[int, int]) -> object:
    from ray_deepsort.reid import ReIDModel

    return ReIDModel.mobilenetv2_imagenet(device="cpu", input_size=input_size)


def _track_video_in_process(
    video: Path, key: str, per_frame: object, reid_model: object | None
) -> pa.Table:
    """The in-process reference: decode with OpenCV, one DeepSORTTracker per stream, in order.

    `per_frame(index, image)` gives (stream name or "", Detections) pairs for a frame.
    """
    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS)
    params = {**default_tracker_params(), "frame_rate": fps}
    trackers: dict[str, DeepSORTTracker] = {}
    results = []
    index = 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        for stream, detections in per_frame(index, image):
            tracker = trackers.setdefault(stream, DeepSORTTracker(reid_model, **params))
            out = tracker.update(detections, frame=image, frame_index=index)
            results.append(
                FrameResult(
                    stream_id=key if stream == "" else f"{key}/{stream}",
                    frame_index=index,
                    timestamp=index / fps,
                    xyxy=detections.xyxy,
                    confidence=detections.confidence_or_ones(),
                    class_id=detections.class_id_or_zeros(),
                    tracker_id=out.tracker_id,
                    position=SourcePosition(str(video.resolve()), 0, index),
                )
            )
        index += 1
    capture.release()
    return _sorted(tracks_table(results))


def _from_file(path: Path, fmt: str) -> object:
    table = read_detection_table(path, fmt)

    def per_frame(index: int, _image: np.ndarray) -> list[tuple[str, Detections]]:
        frame = table.for_frame(index)
        detections = Detections(
            xyxy=frame.xyxy, confidence=frame.confidence, class_id=frame.class_id
        )
        return [("", detections)]

    return per_frame


def _archive_rows(output: Path, key: str) -> pa.Table:
    table = read_dataset(str(output), "tracks", keys=[key])
    return _sorted(table.drop_columns(["source_key"]))


# --------------------------------------------------------------------------- 1. identity


@pytest.mark.slow
def test_archive_rows_equal_in_process_tracking(tmp_path: Path, ray_local: None) -> None:
    """Videos with Parquet, CSV and MOT detections and a MOTChallenge sequence, with ReID."""
    from ray_deepsort.eval.runner import track_sequence
    from ray_deepsort.io.mot import MotSequence, write_results

    inputs = tmp_path / "in"
    videos = [
        write_synthetic_archive(inputs, 1, SCENE, fmt, first_seed=200 + k, prefix=f"{fmt}-")[0]
        for k, fmt in enumerate(("parquet", "csv", "mot"))
    ]
    sequence = SyntheticScene(replace(SCENE, seed=300)).write_mot_sequence(
        inputs / "SEQ-01",
        video=False,
        images=True,  # img1/000001.jpg ... as in MOTChallenge
    )
    output = tmp_path / "out"
    config = _config(
        [inputs], output, model="mobilenetv2_100", input_size=REID_INPUT, mot_results=True
    )
    summary = ArchiveJob(config).run()
    assert (summary.succeeded, summary.failed, summary.skipped) == (4, 0, 0), summary.render()
    assert summary.frames == 4 * SCENE.num_frames
    assert summary.stage_seconds["reid"] > 0 and summary.embed_batches["crops"] > 0

    model = _reid_model(REID_INPUT)
    detection_files = [
        (videos[0].with_suffix(".parquet"), "parquet"),
        (videos[1].with_suffix(".csv"), "csv"),
        (videos[2].with_suffix(".txt"), "mot"),
    ]
    for video, (det_path, fmt) in zip(videos, detection_files, strict=True):
        key = video.stem
        expected = _track_video_in_process(video, key, _from_file(det_path, fmt), model)
        got = _archive_rows(output, key)
        assert expected.num_rows > 20
        assert got.equals(expected), f"{key}: archive rows differ from in-process tracking"

    # The sequence: its MOT results file and its rows equal the eval runner's in-process run.
    run = track_sequence(
        MotSequence(sequence), reid_model=model, tracker_kwargs=_without_frame_rate()
    )
    reference = write_results(tmp_path / "reference.txt", run.results)
    assert (output / "mot" / "SEQ-01.txt").read_text() == reference.read_text()
    rows = _archive_rows(output, "SEQ-01")
    got_boxes = sorted(
        zip(
            (f + 1 for f in rows.column("frame_index").to_pylist()),
            rows.column("tracker_id").to_pylist(),
            strict=True,
        )
    )
    want_boxes = sorted(
        (frame, int(track))
        for frame, detections in run.results.items()
        for track in detections.tracker_id
    )
    assert got_boxes == want_boxes and len(want_boxes) > 20
    frames = read_dataset(str(output), "frames")
    assert frames.num_rows == 4 * SCENE.num_frames


OMZ_0288 = (
    ROOT.parent
    / "shared"
    / "models"
    / "intel-omz"
    / "person-reidentification-retail-0288"
    / "FP16"
    / "person-reidentification-retail-0288.xml"
).resolve()


@pytest.mark.skipif(not OMZ_0288.is_file(), reason="needs ../shared/models/intel-omz")
def test_archive_rows_with_an_openvino_model_equal_in_process_tracking(
    tmp_path: Path, ray_local: None
) -> None:
    """`--model-path` an OpenVINO IR: the embedders run it, the workers' trackers use its
    recommended gate, and the rows are those of in-process trackers embedding with it."""
    pytest.importorskip("openvino")
    from ray_deepsort.reid import ReIDModel

    inputs = tmp_path / "in"
    (video,) = write_synthetic_archive(inputs, 1, SCENE, "parquet", first_seed=500)
    output = tmp_path / "out"
    config = _config([inputs], output, model="", model_path=str(OMZ_0288))
    assert config.tracker_params()[1].source == "model"
    summary = ArchiveJob(config).run()
    assert (summary.succeeded, summary.failed) == (1, 0), summary.render()
    assert summary.embed_batches["crops"] > 0

    model = ReIDModel.from_file(OMZ_0288, device="cpu", threads=1)
    expected = _track_video_in_process(
        video, video.stem, _from_file(video.with_suffix(".parquet"), "parquet"), model
    )
    assert expected.num_rows > 20
    assert _archive_rows(output, video.stem).equals(expected)


def _without_frame_rate() -> dict[str, object]:
    params = default_tracker_params()
    params.pop("frame_rate")  # track_sequence takes it from seqinfo.ini, as the archive does
    return params


# --------------------------------------------------------------------------- 2. driver killed


@pytest.fixture
def kill_inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    write_synthetic_archive(folder, 6, replace(SCENE, num_frames=150), "parquet", first_seed=400)
    return folder


def _done_entries(output: Path) -> list[str]:
    folder = output / "_archive" / "manifest"
    if not folder.is_dir():
        return []
    done = []
    for path in folder.glob("*.json"):
        try:
            if json.loads(path.read_text())["status"] == "done":
                done.append(path.stem)
        except (ValueError, KeyError):
            continue  # being written
    return done


@pytest.fixture
def killed_run(kill_inputs: Path, tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """Run the CLI job in a subprocess and SIGKILL it once a video is recorded as done."""
    output = tmp_path / "killed"
    command = [
        sys.executable,
        str(ROOT / "jobs" / "reprocess_archive.py"),
        str(kill_inputs),
        "-o",
        str(output),
        "--model",
        "none",
        "--ray-address",
        "local",
        "--num-cpus",
        "2",
        "--workers",
        "1",
        "--chunk-frames",
        "50",
        "--progress",
        "none",
    ]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: only what it started
    )
    try:
        deadline = time.monotonic() + 240
        while not _done_entries(output) and process.poll() is None:
            assert time.monotonic() < deadline, "the job recorded no finished video in time"
            time.sleep(0.02)
        assert process.poll() is None, "the job finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
        done_at_kill = _done_entries(output)
        yield output, done_at_kill
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(30)
        _kill_group_leftovers(process.pid)


def _kill_group_leftovers(group: int) -> None:
    """Ray's processes die with their driver; if any of the killed job's group lingers, end it."""
    time.sleep(1.0)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


def test_killed_job_resumes_without_redoing_or_duplicating(
    killed_run: tuple[Path, list[str]], kill_inputs: Path, tmp_path: Path, ray_local: None
) -> None:
    output, done_at_kill = killed_run
    assert 1 <= len(done_at_kill) < 6
    resumed = ArchiveJob(_config([kill_inputs], output, chunk_frames=50)).run()
    assert resumed.failed == 0, resumed.render()
    assert resumed.skipped >= len(done_at_kill)  # finished videos are not redone
    assert resumed.skipped + resumed.succeeded == 6
    assert sorted(_done_entries(output)) == [f"cam{k}" for k in range(6)]

    uninterrupted = tmp_path / "uninterrupted"
    straight = ArchiveJob(_config([kill_inputs], uninterrupted, chunk_frames=50)).run()
    assert straight.succeeded == 6
    for name in ("tracks", "frames"):
        got = read_dataset(str(output), name)
        want = read_dataset(str(uninterrupted), name)
        keys = [(c, "ascending") for c in ("stream_id", "frame_index")]
        if name == "tracks":
            keys.append(("detection_index", "ascending"))
        assert got.sort_by(keys).equals(want.sort_by(keys)), f"{name} differ after resuming"
    frames = read_dataset(str(output), "frames")
    pairs = list(
        zip(frames["stream_id"].to_pylist(), frames["frame_index"].to_pylist(), strict=True)
    )
    assert len(pairs) == len(set(pairs)) == 6 * 150  # every frame exactly once
    leftovers = [p for p in output.rglob("*") if p.is_file() and ".tmp" in p.name]
    assert leftovers == [] and not any((output / "_archive" / "staging").iterdir())

    again = ArchiveJob(_config([kill_inputs], output, chunk_frames=50)).run()
    assert (again.skipped, again.succeeded) == (6, 0)


# --------------------------------------------------------------------------- 3. worker killed


def test_a_killed_worker_is_redone_from_its_first_frame(tmp_path: Path, ray_local: None) -> None:
    inputs = tmp_path / "in"
    write_synthetic_archive(inputs, 2, SCENE, "csv", first_seed=500)
    crashed = tmp_path / "crashed"
    summary = ArchiveJob(
        _config([inputs], crashed, chunk_frames=16, rehearse_worker_crash="cam1@20")
    ).run()
    assert (summary.succeeded, summary.failed) == (2, 0), summary.render()
    assert any("cam1: restarted from the first frame" in w for w in summary.warnings)
    clean = tmp_path / "clean"
    assert ArchiveJob(_config([inputs], clean, chunk_frames=16)).run().succeeded == 2
    for name in ("tracks", "frames"):
        keys = [("stream_id", "ascending"), ("frame_index", "ascending")]
        if name == "tracks":
            keys.append(("detection_index", "ascending"))
        got = read_dataset(str(crashed), name).sort_by(keys)
        assert got.equals(read_dataset(str(clean), name).sort_by(keys))


# --------------------------------------------------------------------------- 4. failures


def test_corrupt_video_and_missing_detections_fail_alone(tmp_path: Path, ray_local: None) -> None:
    inputs = tmp_path / "in"
    (good,) = write_synthetic_archive(inputs, 1, SCENE, "parquet", first_seed=600)
    corrupt = inputs / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(50_000))
    (inputs / "corrupt.parquet").write_bytes(good.with_suffix(".parquet").read_bytes())
    no_detections = inputs / "lonely.mp4"
    no_detections.write_bytes(good.read_bytes())
    output = tmp_path / "out"
    summary = ArchiveJob(_config([inputs], output)).run()
    assert (summary.succeeded, summary.failed) == (1, 2)
    reasons = {Path(f.path).name: f.reason for f in summary.failures}
    assert "cannot open video" in reasons["corrupt.mp4"]
    assert "detections file not found" in reasons["lonely.mp4"]
    assert "FAILED" in summary.render() and "lonely.mp4" in summary.render()
    tracks = read_dataset(str(output), "tracks")
    assert set(tracks.column("source_key").to_pylist()) == {"cam0"}
    manifest = {
        p.stem: json.loads(p.read_text())["status"]
        for p in (output / "_archive" / "manifest").glob("*.json")
    }
    assert manifest == {"cam0": "done", "corrupt": "failed", "lonely": "failed"}
    again = ArchiveJob(_config([inputs], output)).run()
    assert (again.skipped, again.failed, again.succeeded) == (1, 2, 0)  # failures are retried


# --------------------------------------------------------------------------- 5. detector plugin


class BlobDetector:
    """Test plugin: bright blobs on a dark picture, labelled by picture half (two streams)."""

    def __init__(self, min_area: int = 30) -> None:
        self.min_area = min_area

    def __call__(self, frames: list[np.ndarray]) -> list[Detections]:
        results = []
        for frame in frames:
            mask = (cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) > 80).astype(np.uint8)
            count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
            stats = stats[1:count]
            stats = stats[stats[:, cv2.CC_STAT_AREA] >= self.min_area]
            x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
            w, h = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
            xyxy = np.column_stack([x, y, x + w, y + h]).astype(np.float32)
            centre = (x + w / 2.0) < frame.shape[1] / 2
            results.append(
                Detections(
                    xyxy=xyxy,
                    confidence=np.full(len(xyxy), 0.9, np.float32),
                    data={"stream": np.where(centre, "left", "right")},
                )
            )
        return results


def _blob_video(path: Path, seed: int, frames: int = 30) -> Path:
    rng = np.random.default_rng(seed)
    width, height = 160, 120
    colours = rng.integers(120, 255, (3, 3))
    start = rng.uniform([10, 10], [120, 80], (3, 2))
    velocity = rng.uniform(-2, 2, (3, 2))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (width, height))
    for t in range(frames):
        image = np.zeros((height, width, 3), np.uint8)
        for k in range(3):
            x, y = np.clip(start[k] + velocity[k] * t, 0, [width - 16, height - 28]).astype(int)
            image[y : y + 28, x : x + 14] = colours[k]
        writer.write(image)
    writer.release()
    return path


def test_detector_plugin_with_reid_matches_in_process(tmp_path: Path, ray_local: None) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    videos = [_blob_video(inputs / f"blobs{k}.mp4", seed=k) for k in range(2)]
    output = tmp_path / "out"
    config = _config(
        [inputs],
        output,
        detector=f"{BlobDetector.__module__}:BlobDetector",
        detector_kwargs={"min_area": 30},
        detector_batch_frames=8,
        detector_num_cpus=0.5,
        model="mobilenetv2_100",
        input_size=(64, 32),
        embedder_num_cpus=0.5,
        workers=2,
        worker_num_cpus=0.5,
        frames_per_request=4,
    )
    summary = ArchiveJob(config).run()
    assert (summary.succeeded, summary.failed) == (2, 0), summary.render()
    assert summary.stage_seconds["detect"] > 0
    model = _reid_model((64, 32))
    detector = BlobDetector(min_area=30)

    def per_frame(_index: int, image: np.ndarray) -> list[tuple[str, Detections]]:
        (detections,) = detector([image])
        parts = []
        for stream in ("left", "right"):
            mask = detections.data["stream"] == stream
            parts.append((stream, detections[mask]))
        return parts

    for video in videos:
        expected = _track_video_in_process(video, video.stem, per_frame, model)
        got = _archive_rows(output, video.stem)
        assert expected.num_rows > 10
        assert set(got.column("stream_id").to_pylist()) <= {
            f"{video.stem}/left",
            f"{video.stem}/right",
        }
        assert got.equals(expected)


def test_a_plugin_that_does_not_load_stops_the_job_early(tmp_path: Path, ray_local: None) -> None:
    from ray_deepsort.pipeline.detector import DetectorPluginError

    inputs = tmp_path / "in"
    inputs.mkdir()
    _blob_video(inputs / "blobs.mp4", seed=3, frames=5)
    config = _config([inputs], tmp_path / "out", detector="no_such_plugin_module:Detector")
    started = time.monotonic()
    with pytest.raises(DetectorPluginError, match="no_such_plugin_module"):
        ArchiveJob(config).run()
    assert time.monotonic() - started < 60
    assert not (tmp_path / "out" / "tracks").exists()
