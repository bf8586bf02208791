"""MOTChallenge reading and writing: detections, results, ground truth flags, seqinfo, frames."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ray_deepsort.core.detections import Detections
from ray_deepsort.io.errors import InputError
from ray_deepsort.io.mot import (
    GroundTruth,
    MotFormatError,
    MotSequence,
    benchmark_from_name,
    find_sequences,
    read_detections,
    read_ground_truth,
    read_result_rows,
    read_results,
    read_seqinfo,
    stored_result_rows,
    write_results,
)
from ray_deepsort.synthetic import SceneConfig, SyntheticScene

MOT15 = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "mot15"
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
    found, skipped = find_sequences([tmp_path / "all"])
    assert [p.name for p in found] == ["A-SEQ", "B-SEQ"]
    assert skipped == [f"{tmp_path / 'all' / 'not-a-sequence'}: no seqinfo.ini"]
    assert find_sequences([tmp_path / "all" / "B-SEQ"]) == ([tmp_path / "all" / "B-SEQ"], [])
    with pytest.raises(InputError, match="missing: no such folder"):
        find_sequences([tmp_path / "missing"])
    # A folder named directly that is no sequence and holds none is an error, not a silent skip.
    with pytest.raises(InputError, match="not-a-sequence: not a MOTChallenge sequence"):
        find_sequences([tmp_path / "all" / "not-a-sequence"])
    with pytest.raises(InputError, match=r"no seqinfo\.ini"):
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


# ------------------------------------------------------------------ bad files: one line, file:line
def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,-1,10,20,30,7\n2,-1,10,20,30\n", ":2: 5 values, but line 1 has 6"),
        ("1,-1,10,20,30\n", ":1: 5 values, expected at least 6 (frame,id,x,y,w,h,...)"),
        ("1\n2\n", ":1: 1 value, expected at least 6 (frame,id,x,y,w,h,...)"),
        (
            "1 -1 10 20 30 40 0.9\n",
            ":1: values separated by spaces, tabs or semicolons; MOT files use commas",
        ),
        (
            "frame,id,x,y,w,h,conf\n1,-1,10,20,30,40,0.9\n",
            ":1: 'frame' is not a number (a header line? MOT files have none)",
        ),
        ("1,-1,10,20,30,40,0.9\n\n2,-1,10,abc,30,40,0.9\n", ":3: column 4: 'abc' is not a number"),
        ("1,-1,10,20,30,40,0.9\n2,-1,nan,20,30,40,0.9\n", ":2: a value is not a finite number"),
        ("1,-1,10,20,30,40,0.9,\n", ":1: column 8 is empty"),
        (
            "1;-1;10;20;30;40;0.9\n",
            ":1: values separated by spaces, tabs or semicolons; MOT files use commas",
        ),
        ("1.5,-1,10,20,30,40,0.9\n", ":1: frame and id must be whole numbers"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "det.txt", text)
    with pytest.raises(MotFormatError) as error:
        read_detections(path)
    assert str(error.value) == f"{path}{message}"


def test_frames_outside_the_sequence_are_refused(tmp_path: Path) -> None:
    det = write(tmp_path / "det.txt", "1,-1,10,20,30,40,0.9\n9,-1,10,20,30,40,0.9\n")
    assert sorted(read_detections(det)) == [1, 9]  # no seqLength given: nothing to check
    with pytest.raises(MotFormatError, match=r"det.txt:2: frame 9 is outside 1..8 \(seqLength"):
        read_detections(det, num_frames=8)
    gt = write(tmp_path / "gt.txt", "0,1,10,10,20,40,1,1,1\n")
    with pytest.raises(MotFormatError, match=r"gt.txt:1: frame 0 is outside 1..8"):
        read_ground_truth(gt, num_frames=8)
    results = write(
        tmp_path / "res.txt", "1,1,10,20,30,40,1,-1,-1,-1\n12,1,10,20,30,40,1,-1,-1,-1\n"
    )
    with pytest.raises(MotFormatError, match=r"res.txt:2: frame 12 is outside 1..8"):
        read_result_rows(results, num_frames=8)


def test_duplicate_ids_and_unknown_classes_are_refused(tmp_path: Path) -> None:
    gt = write(
        tmp_path / "gt.txt",
        "1,1,10,10,20,40,1,1,1\n1,2,50,10,20,40,1,1,1\n2,1,10,10,20,40,1,1,1\n"
        "1,2,90,10,20,40,1,1,1\n",
    )
    with pytest.raises(MotFormatError) as error:
        read_ground_truth(gt)
    assert str(error.value) == f"{gt}:4: id 2 appears twice in frame 1 (also on line 2)"
    gt = write(tmp_path / "gt.txt", "1,1,10,10,20,40,1,1,1\n1,2,50,10,20,40,1,14,1\n")
    with pytest.raises(MotFormatError) as error:
        read_ground_truth(gt)
    assert str(error.value) == f"{gt}:2: class 14 is not a MOTChallenge class (1-13)"
    # Unconfirmed (-1) result ids may repeat; confirmed ones may not.
    results = write(
        tmp_path / "res.txt",
        "1,-1,0,0,5,5,1,-1,-1,-1\n1,-1,9,9,5,5,1,-1,-1,-1\n1,3,0,0,5,5,1,-1,-1,-1\n"
        "1,3,9,9,5,5,1,-1,-1,-1\n",
    )
    with pytest.raises(MotFormatError, match=r"res.txt:4: id 3 appears twice in frame 1"):
        read_result_rows(results)


def test_ground_truth_format_comes_from_the_benchmark_and_the_columns(tmp_path: Path) -> None:
    nine = write(tmp_path / "nine.txt", "1,1,10,10,20,40,1,6,1\n1,2,50,10,20,40,1,7,1\n")
    assert read_ground_truth(nine).benchmark == "MOT17"  # no benchmark named: the column count
    assert read_ground_truth(nine, "MOT17").distractor.tolist() == [False, True]
    # MOT20 also forgives boxes on non-MOT vehicles (class 6), as TrackEval's MOT20 does.
    assert read_ground_truth(nine, "MOT20").distractor.tolist() == [True, True]
    with pytest.raises(MotFormatError) as error:
        read_ground_truth(nine, "MOT15")
    assert str(error.value) == (
        f"{nine}:1: 9 columns, but MOT15 ground truth has 10 (frame,id,x,y,w,h,consider,wx,wy,wz)"
    )
    eight = write(tmp_path / "eight.txt", "1,1,10,10,20,40,1,1\n")
    with pytest.raises(MotFormatError, match=r"eight.txt:1: 8 columns, but MOT16 ground truth"):
        read_ground_truth(eight, "MOT16")
    six = write(tmp_path / "six.txt", "1,1,10,10,20,40\n")
    with pytest.raises(MotFormatError, match=r"six.txt:1: 6 columns: not MOTChallenge ground"):
        read_ground_truth(six)
    assert benchmark_from_name("MOT17-09-FRCNN") == "MOT17"
    assert benchmark_from_name("MOT20-01") == "MOT20"
    assert benchmark_from_name("TUD-Campus") is None and benchmark_from_name("MOT171") is None


def test_empty_ground_truth_has_no_boxes(tmp_path: Path) -> None:
    gt = read_ground_truth(write(tmp_path / "gt.txt", ""), "MOT16")
    assert len(gt) == 0 and gt.benchmark == "MOT16" and gt.num_frames == 0
    assert len(read_ground_truth(write(tmp_path / "gt.txt", "\n"))) == 0
    assert len(GroundTruth.from_rows(np.zeros((0, 10)))) == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name=S\n", ":1: no [Sequence] header before it"),
        ("[Sequence]\nname=S\nbogus line\n", ":3: not a key=value line: 'bogus line\\n'"),
        ("[Other]\nname=S\n", ": no [Sequence] section"),
        ("[Sequence]\nframeRate=25\nimWidth=640\nimHeight=480\n", ": [Sequence] has no seqLength"),
        (
            "[Sequence]\nframeRate=25\nseqLength=ten\nimWidth=640\nimHeight=480\n",
            ": seqLength='ten' is not a number",
        ),
        (
            "[Sequence]\nframeRate=0\nseqLength=10\nimWidth=640\nimHeight=480\n",
            ": frameRate='0' must be positive",
        ),
    ],
)
def test_bad_seqinfo_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "S" / "seqinfo.ini", text)
    with pytest.raises(MotFormatError) as error:
        read_seqinfo(tmp_path / "S")
    assert str(error.value) == f"{path}{message}"


def test_sequence_benchmark_from_name_flag_and_det_name(tmp_path: Path) -> None:
    seq_dir = SyntheticScene(TINY).write_mot_sequence(tmp_path / "MOT20-01", video=False)
    write(seq_dir / "det" / "det_dpm.txt", "1,-1,10,20,30,40,3.5,-1,-1,-1\n")
    sequence = MotSequence(seq_dir)
    assert sequence.named_benchmark == "MOT20" and sequence.ground_truth().benchmark == "MOT20"
    assert MotSequence(seq_dir, benchmark="MOT20").named_benchmark == "MOT20"
    with pytest.raises(InputError, match="benchmark MOT17 asked for, but the sequence is MOT20"):
        MotSequence(seq_dir, benchmark="MOT17")
    dpm = MotSequence(seq_dir, det_name="det_dpm")
    assert dpm.det_path == seq_dir / "det" / "det_dpm.txt"
    assert dpm.detections()[1].confidence.tolist() == [3.5]
    with pytest.raises(InputError) as error:
        MotSequence(seq_dir, det_name="frcnn").detections()
    assert (
        str(error.value) == f"{seq_dir / 'det' / 'frcnn.txt'}: no such file (det/ has det, det_dpm)"
    )


def test_results_are_read_and_stored_as_float64(tmp_path: Path) -> None:
    xyxy = np.array([[1645.213, 200.0, 1817.208, 500.0]])
    results = {3: Detections(xyxy=xyxy, confidence=[0.5], tracker_id=[4])}
    path = write_results(tmp_path / "res.txt", results)
    rows = read_result_rows(path)
    assert rows.dtype == np.float64 and rows[0, 2:6].tolist() == [1645.213, 200.0, 171.995, 300.0]
    # What the evaluator scores for tracker output is bit-identical to what the file holds.
    np.testing.assert_array_equal(stored_result_rows(results), rows)
    assert stored_result_rows({}).shape == (0, 10)
