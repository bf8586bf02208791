"""Frame sources of `ray-deepsort publish` (no broker needed): they produce valid RDSF frames."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from ray_deepsort.core import Detections
from ray_deepsort.stream import publish
from ray_deepsort.stream.wire import decode_frame, encode_frame
from ray_deepsort.synthetic import SceneConfig, SyntheticScene


def _round_trip(frame):  # type: ignore[no-untyped-def]
    return decode_frame(encode_frame(frame), frame.stream_id.encode())


def test_make_frame_encodes_images_and_defaults() -> None:
    image = np.full((30, 40, 3), 128, np.uint8)
    det = Detections(xyxy=np.array([[1, 2, 10, 20]], np.float32))
    frame = _round_trip(publish.make_frame("s", 3, 1.5, det, image=image, image_format="png"))
    assert (frame.width, frame.height, frame.image_format) == (40, 30, "png")
    assert frame.confidence.tolist() == [1.0] and frame.class_id.tolist() == [0]
    motion = _round_trip(publish.make_frame("s", 4, 2.0, det, size=(640, 480)))
    assert motion.image is None and (motion.width, motion.height) == (640, 480)


def test_identity_embeddings_are_stable_per_identity() -> None:
    a = publish.identity_embeddings(np.array([3, 5, -1]), 32, seed=1, frame_index=0)
    b = publish.identity_embeddings(np.array([5, 3, -1]), 32, seed=1, frame_index=9)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-6)
    assert a[0] @ b[1] > 0.9 and a[1] @ b[0] > 0.9  # same person, different frames
    assert abs(a[0] @ a[1]) < 0.6 and abs(a[2] @ b[2]) < 0.6  # different people / strangers


def test_synthetic_frames_interleave_cameras() -> None:
    scenes, frames = publish.synthetic_frames(
        2, 3, objects=5, width=160, height=120, embeddings="identity", start_time=100.0
    )
    decoded = [_round_trip(f) for f in frames]
    assert [(f.stream_id, f.frame_index) for f in decoded] == [
        ("cam0", 0), ("cam1", 0), ("cam0", 1), ("cam1", 1), ("cam0", 2), ("cam1", 2)
    ]  # fmt: skip
    assert decoded[2].timestamp == pytest.approx(100.0 + 1 / 30)
    assert decoded[0].image_format == "jpeg" and decoded[0].embeddings is not None
    assert set(scenes) == {"cam0", "cam1"}


@pytest.fixture(scope="module")
def mot_sequence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scene = SyntheticScene(SceneConfig(seed=3, num_objects=5, num_frames=6, width=160, height=120))
    return scene.write_mot_sequence(
        tmp_path_factory.mktemp("mot") / "SYN-01", video=True, images=True
    )


def test_mot_frames_send_image_files_byte_for_byte(mot_sequence: Path) -> None:
    frames = [_round_trip(f) for f in publish.mot_frames(mot_sequence, start_time=0.0)]
    assert [f.frame_index for f in frames] == list(range(6))
    assert frames[0].stream_id == "SYN-01"
    assert frames[0].image == (mot_sequence / "img1" / "000001.jpg").read_bytes()
    motion = list(publish.mot_frames(mot_sequence, with_images=False, max_frames=2))
    assert len(motion) == 2 and motion[0].image is None and motion[0].width == 160


def test_video_frames_with_mot_detections(mot_sequence: Path) -> None:
    frames = list(
        publish.video_frames(
            mot_sequence / "SYN-01.mp4", detections_path=mot_sequence / "det" / "det.txt"
        )
    )
    assert len(frames) == 6 and frames[0].stream_id == "SYN-01"
    by_mot = list(publish.mot_frames(mot_sequence, with_images=False))
    for video_frame, mot_frame in zip(frames, by_mot, strict=True):
        np.testing.assert_allclose(video_frame.xyxy, mot_frame.xyxy, atol=1e-3)
        assert _round_trip(video_frame).height == 120


def test_cli_arguments_select_sources(mot_sequence: Path) -> None:
    parser = argparse.ArgumentParser()
    publish.add_arguments(parser)
    args = parser.parse_args(["--max-frames", "2", "mot", str(mot_sequence), "--stream-id", "x"])
    assert [f.stream_id for f in publish.frames_from_args(args)] == ["x", "x"]
    args = parser.parse_args(
        ["--image-format", "none", "synthetic", "--cameras", "2", "--frames", "2"]
    )
    frames = list(publish.frames_from_args(args))
    assert len(frames) == 4 and all(f.image is None for f in frames)
    assert publish.partition_map(["a", "b", "c"], 2) == {"a": 0, "b": 1, "c": 0}
