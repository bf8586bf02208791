"""Synthetic scenes: determinism, occlusion guarantee, ground truth, detections, files."""

from __future__ import annotations

import configparser
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from ray_deepsort.synthetic import (
    SceneConfig,
    SyntheticScene,
    camera_scenes,
    interleave_cameras,
)
from ray_deepsort.synthetic.render import person_texture, random_appearances

SMALL = SceneConfig(seed=3, num_objects=6, num_frames=40, width=320, height=240)


@pytest.fixture(scope="module")
def default_scene() -> SyntheticScene:
    return SyntheticScene(SceneConfig())


def test_same_config_gives_bit_identical_scene() -> None:
    first, second = SyntheticScene(SMALL), SyntheticScene(SMALL)
    np.testing.assert_array_equal(first.ground_truth, second.ground_truth)
    for i in (0, 17, SMALL.num_frames - 1):
        np.testing.assert_array_equal(first.frame(i), second.frame(i))
        a, b = first.detections(i), second.detections(i)
        np.testing.assert_array_equal(a.xyxy, b.xyxy)
        np.testing.assert_array_equal(a.confidence, b.confidence)
        np.testing.assert_array_equal(a.data["gt_id"], b.data["gt_id"])
    # Per-frame randomness does not depend on call order.
    np.testing.assert_array_equal(
        first.detections(5).xyxy, SyntheticScene(SMALL).detections(5).xyxy
    )


def test_different_seed_gives_different_scene() -> None:
    other = SyntheticScene(replace(SMALL, seed=SMALL.seed + 1))
    assert not np.array_equal(SyntheticScene(SMALL).frame(0), other.frame(0))


def test_frame_is_bgr_uint8_of_configured_size() -> None:
    image = SyntheticScene(SMALL).frame(0)
    assert image.dtype == np.uint8
    assert image.shape == (SMALL.height, SMALL.width, 3)
    assert image.std() > 10  # textured, not a flat fill
    with pytest.raises(IndexError):
        SyntheticScene(SMALL).frame(SMALL.num_frames)


def test_default_scene_hides_several_people_for_twenty_frames(
    default_scene: SyntheticScene,
) -> None:
    longest = default_scene.longest_hidden_run()
    walkers = default_scene.occluded_walker_ids
    assert len(walkers) == default_scene.config.occluded_walkers >= 3
    assert (longest[walkers - 1] >= 20).all(), longest[walkers - 1]
    # Detectable before and after the hidden run: re-identification is needed.
    for person in walkers - 1:
        hidden = default_scene.hidden()[:, person].astype(np.int8)
        edges = np.diff(np.concatenate([[0], hidden, [0]]))
        starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        longest = np.argmax(stops - starts)
        seen = default_scene.visibility[:, person] >= default_scene.config.min_visibility
        assert seen[: starts[longest]].any() and seen[stops[longest] :].any()


def test_occlusion_guarantee_holds_across_seeds() -> None:
    for seed in range(1, 4):
        scene = SyntheticScene(SceneConfig(seed=seed, num_objects=8))
        assert (scene.longest_hidden_run()[scene.occluded_walker_ids - 1] >= 20).all()


def test_ground_truth_rows_follow_mot17_layout(default_scene: SyntheticScene) -> None:
    gt = default_scene.ground_truth
    assert gt.shape[1] == 9
    assert gt[:, 0].min() == 1 and gt[:, 0].max() == default_scene.num_frames
    assert np.all(np.diff(gt[:, 0]) >= 0)
    assert set(np.unique(gt[:, 1]).astype(int)) <= set(range(1, default_scene.num_objects + 1))
    assert np.all(gt[:, 7] == 1)
    visibility, consider = gt[:, 8], gt[:, 6]
    assert np.all((visibility >= 0) & (visibility <= 1))
    np.testing.assert_array_equal(consider == 1, visibility >= default_scene.config.min_visibility)
    # Fully hidden boxes are kept (visibility 0) but not considered.
    assert np.any((visibility == 0) & (consider == 0))
    # Heights grow with the feet row (depth cue) and stay in the configured range.
    heights, feet = gt[:, 5], gt[:, 3] + gt[:, 5]
    assert heights.min() >= 59.0 and heights.max() <= 161.0
    assert np.corrcoef(heights, feet)[0, 1] > 0.99


def test_people_cross_enter_and_leave(default_scene: SyntheticScene) -> None:
    present = default_scene.present
    assert (~present[0]).any(), "someone walks in later"
    assert (present[0] & ~present[-1]).any(), "someone leaves"
    centers = 0.5 * (default_scene.boxes[..., 0] + default_scene.boxes[..., 2])
    crossings = 0
    for i in range(default_scene.num_objects):
        for j in range(i + 1, default_scene.num_objects):
            both = present[:, i] & present[:, j]
            order = np.sign(centers[both, i] - centers[both, j])
            crossings += int(np.any(order[1:] != order[:-1]))
    assert crossings >= 5


def test_detections_skip_hidden_people_and_flag_false_positives(
    default_scene: SyntheticScene,
) -> None:
    cfg = default_scene.config
    true_confidence, false_confidence = [], []
    detected = 0
    for i in range(0, default_scene.num_frames, 3):
        detections = default_scene.detections(i)
        gt_id = detections.data["gt_id"]
        assert np.all(detections.class_id == 0)
        assert np.all(detections.xyxy[:, [0, 2]] >= 0) and np.all(
            detections.xyxy[:, 2] <= cfg.width
        )
        assert np.all(detections.xyxy[:, 3] <= cfg.height)
        true_ids = gt_id[gt_id > 0]
        assert np.all(default_scene.visibility[i, true_ids - 1] >= cfg.min_visibility)
        detected += len(true_ids)
        true_confidence.append(detections.confidence[gt_id > 0])
        false_confidence.append(detections.confidence[gt_id < 0])
    detectable = (default_scene.visibility[::3] >= cfg.min_visibility).sum()
    assert 0.85 * detectable <= detected <= detectable
    assert np.concatenate(false_confidence).mean() < np.concatenate(true_confidence).mean() - 0.2


def test_identities_have_distinct_textures_and_look_alikes() -> None:
    appearances = random_appearances(np.random.default_rng(0), 12, similar_fraction=0.4)
    textures = [person_texture(a)[0] for a in appearances]
    flat = np.stack([t.reshape(-1).astype(np.float32) for t in textures])
    distances = np.abs(flat[:, None] - flat[None]).mean(-1)
    assert distances[~np.eye(len(textures), dtype=bool)].min() > 3.0  # every identity differs
    # Look-alike pairs (0, 1) and (2, 3): same shirt colour and pattern, different trousers.
    for source, twin in ((0, 1), (2, 3)):
        assert appearances[twin].shirt == appearances[source].shirt
        assert appearances[twin].shirt_pattern == appearances[source].shirt_pattern
        assert appearances[twin].trousers != appearances[source].trousers
    assert distances[0, 1] < np.median(distances[0, 2:])


def test_write_video_has_every_frame(tmp_path: Path) -> None:
    scene = SyntheticScene(replace(SMALL, num_frames=12))
    path = scene.write_video(tmp_path / "clip.mp4")
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    assert len(frames) == 12
    assert frames[0].shape == (SMALL.height, SMALL.width, 3)
    # Lossy, but recognisably the rendered frame.
    error = np.abs(frames[5].astype(np.int16) - scene.frame(5).astype(np.int16)).mean()
    assert error < 12


def test_write_mot_sequence_layout(tmp_path: Path) -> None:
    scene = SyntheticScene(SMALL)
    seq_dir = scene.write_mot_sequence(tmp_path / "SYN-01", video=True, images=True)
    info = configparser.ConfigParser()
    info.optionxform = str
    info.read(seq_dir / "seqinfo.ini")
    assert info["Sequence"]["name"] == "SYN-01"
    assert int(info["Sequence"]["seqLength"]) == SMALL.num_frames
    assert (seq_dir / "SYN-01.mp4").is_file()
    assert len(list((seq_dir / "img1").glob("*.jpg"))) == SMALL.num_frames
    assert (seq_dir / "img1" / "000001.jpg").is_file()
    det = np.loadtxt(seq_dir / "det" / "det.txt", delimiter=",", ndmin=2)
    assert det.shape[1] == 10 and np.all(det[:, 1] == -1)
    assert len(det) == sum(len(scene.detections(i)) for i in range(SMALL.num_frames))
    gt = np.loadtxt(seq_dir / "gt" / "gt.txt", delimiter=",", ndmin=2)
    np.testing.assert_allclose(gt, scene.ground_truth, atol=0.006)


def test_camera_scenes_are_independent_and_interleaved() -> None:
    scenes = camera_scenes(3, replace(SMALL, num_frames=4))
    assert list(scenes) == ["cam0", "cam1", "cam2"]
    assert not np.array_equal(scenes["cam0"].frame(0), scenes["cam1"].frame(0))
    stream = list(interleave_cameras(scenes, with_images=False))
    assert [(f.camera_id, f.frame_index) for f in stream[:4]] == [
        ("cam0", 0),
        ("cam1", 0),
        ("cam2", 0),
        ("cam0", 1),
    ]
    assert len(stream) == 12 and stream[-1].timestamp == pytest.approx(3 / SMALL.fps)
    assert stream[0].image is None
