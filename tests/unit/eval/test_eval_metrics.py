"""Metrics through trackers.eval: sanity values, ignore rules, parity with its file evaluator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ray_deepsort.core.detections import Detections
from ray_deepsort.eval.metrics import evaluate_many, evaluate_sequence
from ray_deepsort.io.mot import GroundTruth, read_ground_truth, write_results
from ray_deepsort.synthetic import SceneConfig, SyntheticScene

MOT15 = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "mot15"


@pytest.fixture(scope="module")
def scene() -> SyntheticScene:
    return SyntheticScene(SceneConfig(seed=2, num_objects=8, num_frames=80))


def perfect_rows(scene: SyntheticScene) -> np.ndarray:
    gt = scene.ground_truth
    return gt[gt[:, 6] == 1, :7]


def as_results(rows: np.ndarray) -> dict[int, Detections]:
    out = {}
    for frame in np.unique(rows[:, 0]).astype(int):
        r = rows[rows[:, 0] == frame]
        out[frame] = Detections(
            xyxy=np.hstack([r[:, 2:4], r[:, 2:4] + r[:, 4:6]]), tracker_id=r[:, 1].astype(int)
        )
    return out


def test_perfect_results_score_one(scene: SyntheticScene) -> None:
    gt = GroundTruth.from_rows(scene.ground_truth)
    metrics = evaluate_sequence(gt, as_results(perfect_rows(scene)), num_frames=scene.num_frames)
    for key in ("HOTA", "IDF1", "MOTA", "DetA", "AssA"):
        assert metrics[key] == pytest.approx(1.0, abs=1e-4), key
    assert metrics["IDSW"] == metrics["FP"] == metrics["FN"] == 0
    assert metrics["MT"] == metrics["gt_ids"] == len(np.unique(perfect_rows(scene)[:, 1]))
    assert metrics["frames"] == 80


def test_swapping_ids_midway_counts_switches(scene: SyntheticScene) -> None:
    rows = perfect_rows(scene)
    later = rows[:, 0] > 40
    both_halves = np.intersect1d(rows[later, 1], rows[~later, 1])
    assert len(both_halves) >= 2
    a, b = both_halves[:2]
    first, second = rows[:, 1] == a, rows[:, 1] == b
    rows[later & first, 1], rows[later & second, 1] = b, a
    metrics = evaluate_sequence(GroundTruth.from_rows(scene.ground_truth), rows)
    assert metrics["IDSW"] >= 2
    assert metrics["IDF1"] < 1.0 and metrics["HOTA"] < 1.0
    assert metrics["MOTA"] == pytest.approx(1.0 - metrics["IDSW"] / metrics["TP"], abs=1e-9)


def test_ignored_rows_are_neither_missed_nor_matched(scene: SyntheticScene) -> None:
    gt_rows = scene.ground_truth
    gt = GroundTruth.from_rows(gt_rows)
    # Results also covering the ignored (hidden) boxes: those become false positives, not TPs.
    all_rows = gt_rows[:, :7]
    ignored = int((gt_rows[:, 6] == 0).sum())
    assert ignored > 0
    metrics = evaluate_sequence(gt, all_rows)
    assert metrics["FN"] == 0 and metrics["FP"] == ignored
    # Dropping results on scored boxes makes misses.
    metrics = evaluate_sequence(gt, perfect_rows(scene)[10:])
    assert metrics["FN"] == 10 and metrics["FP"] == 0


def test_distractor_matches_are_forgiven(tmp_path: Path) -> None:
    gt = GroundTruth.from_rows(
        np.array([[1, 1, 0, 0, 10, 20, 1, 1, 1.0], [1, 2, 50, 0, 10, 20, 1, 7, 1.0]])
    )
    results = np.array([[1, 5, 0, 0, 10, 20, 1.0], [1, 6, 50, 0, 10, 20, 1.0]])
    metrics = evaluate_sequence(gt, results)
    assert metrics["FP"] == 0 and metrics["TP"] == 1 and metrics["tracker_ids"] == 1


def test_matches_trackers_file_evaluator(scene: SyntheticScene, tmp_path: Path) -> None:
    """On MOT17-layout files our preparation must equal trackers.eval's own loader."""
    from trackers.eval import evaluate_mot_sequence

    seq_dir = scene.write_mot_sequence(tmp_path / "SYN", video=False)
    rng = np.random.default_rng(0)
    rows = perfect_rows(scene)
    rows = rows[rng.random(len(rows)) > 0.1].copy()
    rows[:, 2:6] += rng.normal(0, 2.0, (len(rows), 4))
    rows[(rows[:, 0] > 50) & (rows[:, 1] % 3 == 0), 1] += 100  # identity changes
    result_path = write_results(tmp_path / "SYN.txt", as_results(rows))
    ours = evaluate_sequence(seq_dir / "gt" / "gt.txt", result_path)
    theirs = evaluate_mot_sequence(
        seq_dir / "gt" / "gt.txt", result_path, metrics=["CLEAR", "HOTA", "Identity"]
    )
    assert ours["HOTA"] == pytest.approx(theirs.HOTA.HOTA, abs=1e-9)
    assert ours["MOTA"] == pytest.approx(theirs.CLEAR.MOTA, abs=1e-9)
    assert ours["IDF1"] == pytest.approx(theirs.Identity.IDF1, abs=1e-9)
    assert ours["IDSW"] == theirs.CLEAR.IDSW > 0


def test_evaluate_many_combines_counts(scene: SyntheticScene) -> None:
    gt = GroundTruth.from_rows(scene.ground_truth)
    rows = perfect_rows(scene)
    summary = evaluate_many({"a": (gt, rows, scene.num_frames), "b": (gt, rows[rows[:, 1] != 3])})
    assert set(summary) == {"a", "b", "COMBINED"}
    assert summary["COMBINED"]["FN"] == summary["a"]["FN"] + summary["b"]["FN"] > 0
    assert summary["COMBINED"]["frames"] == summary["a"]["frames"] + summary["b"]["frames"]
    assert summary["b"]["IDF1"] < summary["COMBINED"]["IDF1"] < summary["a"]["IDF1"] == 1.0


@pytest.mark.skipif(not (MOT15 / "TUD-Campus").is_dir(), reason="MOT15 data not available")
def test_mot15_ground_truth_scores_one_against_itself() -> None:
    """MOT15 column 8 is a world coordinate: a class filter would have dropped every row."""
    gt = read_ground_truth(MOT15 / "ETH-Pedcross2" / "gt" / "gt.txt")
    rows = np.column_stack([gt.frame, gt.track_id, gt.xywh, np.ones(len(gt))])[gt.scored]
    metrics = evaluate_sequence(gt, rows)
    assert metrics["gt_ids"] > 100 and metrics["TP"] == int(gt.scored.sum())
    assert metrics["IDF1"] == pytest.approx(1.0) and metrics["MOTA"] == pytest.approx(1.0)


def test_a_results_file_is_scored_in_float64(tmp_path: Path) -> None:
    """IoU exactly 0.5 in float64 (a match) is 0.49999998 once the box passed through float32."""
    gt = GroundTruth.from_rows(np.array([[1, 1, 1645.213, 200, 343.99, 300, 1, 1, 1.0]]))
    path = tmp_path / "res.txt"
    path.write_text("1,7,1645.213,200.000,171.995,300.000,1.0000,-1,-1,-1\n")
    metrics = evaluate_sequence(gt, path)
    assert metrics["TP"] == 1 and metrics["FP"] == metrics["FN"] == 0


def test_mot20_forgives_boxes_on_non_mot_vehicles() -> None:
    rows = np.array([[1, 1, 0, 0, 10, 20, 1, 1, 1.0], [1, 2, 50, 0, 10, 20, 1, 6, 1.0]])
    results = np.array([[1, 5, 0, 0, 10, 20, 1.0], [1, 6, 50, 0, 10, 20, 1.0]])
    assert evaluate_sequence(GroundTruth.from_rows(rows, "MOT17"), results)["FP"] == 1
    mot20 = evaluate_sequence(GroundTruth.from_rows(rows, "MOT20"), results)
    assert mot20["FP"] == 0 and mot20["TP"] == 1 and mot20["tracker_ids"] == 1
