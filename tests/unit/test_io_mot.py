"""MOTChallenge reading and writing: detections, results, ground truth flags, seqinfo, frames."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ray_deepsort.core.detections import Detections
from ray_deepsort.io.mot import (
    MotSequence,
    find_sequences,
    read_detections,
    read_ground_truth,
    read_results,
    read_seqinfo,
    write_results,
)
from ray_deepsort.synthetic import SceneConfig, SyntheticScene

MOT15 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mot15"
TINY = SceneConfig(seed=1, num_objects=4, num_frames=8, width=256, height=192)


def test_read_detections_converts_xywh_and_groups_frames(tmp_path: Path) -> None:
    path = tmp_path / "det.txt"
    path.write_text(
        "1,-1,10,20,30,40,0.9,-1,-1,-1\n"
        "3,-1,0.5,1.5,2,4,0.25,-1,-1,-1\n"
        "1,-1,100,200,10,20,0.5,-1,-1,-1\n"
    )
    detections = read_detections(path)
    assert sorted(detections) == [1, 3]
    np.testing.assert_allclose(detections[1].xyxy, [[10, 20, 40, 60], [100, 200, 110, 220]])
    np.testing.assert_allclose(detections[1].confidence, [0.9, 0.5])
    np.testing.assert_allclose(detections[3].xyxy, [[0.5, 1.5, 2.5, 5.5]])
    assert detections[3].class_id.tolist() == [0]
    assert sorted(read_detections(path, min_confidence=0.6)) == [1]


def test_results_round_trip_drops_unconfirmed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    original = {}
    for frame in (1, 2, 5):
        xy = rng.uniform(0, 500, (4, 2))
        wh = rng.uniform(5, 80, (4, 2))
        original[frame] = Detections(
            xyxy=np.hstack([xy, xy + wh]),
            confidence=rng.uniform(0, 1, 4),
            tracker_id=np.array([frame, 7, -1, 12]),
        )
    path = write_results(tmp_path / "out" / "SEQ.txt", original)
    rows = np.loadtxt(path, delimiter=",", ndmin=2)
    assert rows.shape == (9, 10) and np.all(rows[:, 7:] == -1)
    loaded = read_results(path)
    assert sorted(loaded) == [1, 2, 5]
    for frame, detections in original.items():
        keep = detections.tracker_id >= 0
        np.testing.assert_array_equal(loaded[frame].tracker_id, detections.tracker_id[keep])
        np.testing.assert_allclose(loaded[frame].xyxy, detections.xyxy[keep], atol=2e-3)
        np.testing.assert_allclose(loaded[frame].confidence, detections.confidence[keep], atol=1e-4)


def test_write_results_of_nothing_gives_empty_file(tmp_path: Path) -> None:
    path = write_results(tmp_path / "empty.txt", {1: Detections.empty()})
    assert path.read_text() == ""
    assert read_results(path) == {}


def test_mot15_ground_truth_honours_ignore_flag(tmp_path: Path) -> None:
    path = tmp_path / "gt.txt"
    path.write_text(
        "1,1,10,10,20,40,1,-1,-1,-1\n1,2,50,10,20,40,0,-1,-1,-1\n2,1,12,10,20,40,1,-10.2,26.7,0\n"
    )
    gt = read_ground_truth(path)
    assert not gt.has_classes  # 10 columns: world coordinates, not classes
    assert gt.scored.tolist() == [True, False, True]
    assert not gt.distractor.any()
    np.testing.assert_allclose(gt.xyxy[0], [10, 10, 30, 50])


def test_mot17_ground_truth_filters_classes(tmp_path: Path) -> None:
    path = tmp_path / "gt.txt"
    path.write_text(
        "1,1,10,10,20,40,1,1,0.8\n"  # pedestrian
        "1,2,50,10,20,40,1,7,1.0\n"  # static person: distractor
        "1,3,90,10,20,40,1,3,1.0\n"  # car: neither
        "1,4,130,10,20,40,0,1,0.0\n"  # pedestrian marked ignore
    )
    gt = read_ground_truth(path)
    assert gt.has_classes
    assert gt.scored.tolist() == [True, False, False, False]
    assert gt.distractor.tolist() == [False, True, False, False]
    np.testing.assert_allclose(gt.visibility, [0.8, 1.0, 1.0, 0.0])


def test_read_seqinfo_and_find_sequences(tmp_path: Path) -> None:
    scene = SyntheticScene(replace(TINY, fps=25.0))
    scene.write_mot_sequence(tmp_path / "all" / "B-SEQ", video=False)
    scene.write_mot_sequence(tmp_path / "all" / "A-SEQ", video=False)
    (tmp_path / "all" / "not-a-sequence").mkdir()
    info = read_seqinfo(tmp_path / "all" / "A-SEQ")
    assert (info.name, info.frame_rate, info.seq_length) == ("A-SEQ", 25.0, 8)
    assert (info.im_width, info.im_height, info.im_dir, info.im_ext) == (256, 192, "img1", ".jpg")
    found = find_sequences([tmp_path / "all"])
    assert [p.name for p in found] == ["A-SEQ", "B-SEQ"]
    assert find_sequences([tmp_path / "all" / "B-SEQ"])[0].name == "B-SEQ"
    with pytest.raises(FileNotFoundError):
        find_sequences([tmp_path / "missing"])
    with pytest.raises(FileNotFoundError):
        read_seqinfo(tmp_path / "all" / "not-a-sequence")


@pytest.mark.parametrize(
    ("video", "images", "source"),
    [(True, False, "video"), (False, True, "images"), (False, False, None)],
)
def test_mot_sequence_frames(tmp_path: Path, video: bool, images: bool, source: str | None) -> None:
    scene = SyntheticScene(TINY)
    seq = MotSequence(scene.write_mot_sequence(tmp_path / "S", video=video, images=images))
    assert seq.frame_source == source
    frames = list(seq.frames())
    assert [number for number, _ in frames] == list(range(1, TINY.num_frames + 1))
    for number, image in frames:
        if source is None:
            assert image is None
        else:
            assert image.shape == (TINY.height, TINY.width, 3)
            error = np.abs(image.astype(np.int16) - scene.frame(number - 1).astype(np.int16))
            assert error.mean() < 12  # frame N of the files is scene frame N - 1
    assert sum(len(d) for d in seq.detections().values()) == sum(
        len(scene.detections(i)) for i in range(TINY.num_frames)
    )
    assert len(seq.ground_truth()) == len(scene.ground_truth)


@pytest.mark.skipif(not (MOT15 / "TUD-Campus").is_dir(), reason="MOT15 data not available")
def test_real_mot15_sequence() -> None:
    seq = MotSequence(MOT15 / "TUD-Campus")
    assert seq.info.frame_rate == 25.0 and seq.num_frames == 71
    assert seq.frame_source == "video"
    assert sum(len(d) for d in seq.detections().values()) == 321
    gt = seq.ground_truth()
    assert not gt.has_classes and gt.scored.all() and len(np.unique(gt.track_id)) == 8
    first = next(seq.frames())
    assert first[0] == 1 and first[1].shape == (480, 640, 3)
    assert MotSequence(MOT15 / "KITTI-13").frame_source is None  # no images, no MP4
