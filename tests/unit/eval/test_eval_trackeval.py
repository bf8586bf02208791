"""`ray-deepsort eval` against TrackEval itself (PyPI `trackeval`, the official MOTChallenge code).

Our metrics come from `trackers.eval` after our own MOTChallenge preprocessing; these tests run
TrackEval's `MotChallenge2DBox` evaluator on the very files `eval --output` wrote, so distractor
removal (MOT16/17, and MOT20's extra class), the MOT15 rules and the float64 box reading are
checked end to end against the reference.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ray_deepsort.eval import cli
from ray_deepsort.eval.metrics import evaluate_sequence
from ray_deepsort.io.mot import MotSequence
from ray_deepsort.synthetic import SceneConfig, SyntheticScene

trackeval = pytest.importorskip("trackeval")

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared"
MOT16_09 = SHARED / "data" / "mot16" / "MOT16-09"
TUD_CAMPUS = SHARED / "data" / "mot15" / "TUD-Campus"
KEYS = ("HOTA", "MOTA", "IDF1", "IDSW", "FP", "FN")


def run_eval(argv: list[str]) -> dict[str, Any]:
    """Run `ray-deepsort eval` and return its --json report."""
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(argv)
    assert cli.run(args, out=io.StringIO()) == 0
    return json.loads(args.json.read_text())


def trackeval_scores(
    seq_dir: Path, results_file: Path, benchmark: str, work: Path
) -> dict[str, float]:
    """TrackEval's numbers for one sequence, in the folder layout its MOTChallenge loader wants."""
    name = seq_dir.name
    gt_dir = work / "gt" / name
    (gt_dir / "gt").mkdir(parents=True)
    shutil.copy(seq_dir / "gt" / "gt.txt", gt_dir / "gt" / "gt.txt")
    shutil.copy(seq_dir / "seqinfo.ini", gt_dir / "seqinfo.ini")
    tracker_dir = work / "trackers" / "ours" / "data"
    tracker_dir.mkdir(parents=True)
    shutil.copy(results_file, tracker_dir / f"{name}.txt")
    evaluator = trackeval.Evaluator(
        {
            "USE_PARALLEL": False,
            "PRINT_RESULTS": False,
            "PRINT_CONFIG": False,
            "TIME_PROGRESS": False,
            "OUTPUT_SUMMARY": False,
            "OUTPUT_DETAILED": False,
            "PLOT_CURVES": False,
            "LOG_ON_ERROR": None,
        }
    )
    dataset = trackeval.datasets.MotChallenge2DBox(
        {
            "GT_FOLDER": str(work / "gt"),
            "TRACKERS_FOLDER": str(work / "trackers"),
            "OUTPUT_FOLDER": str(work / "out"),
            "TRACKERS_TO_EVAL": ["ours"],
            "BENCHMARK": benchmark,
            "SKIP_SPLIT_FOL": True,
            "SEQ_INFO": {name: None},  # seqLength from seqinfo.ini
            "PRINT_CONFIG": False,
        }
    )
    metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR(), trackeval.metrics.Identity()]
    results, messages = evaluator.evaluate([dataset], metrics)
    assert messages["MotChallenge2DBox"]["ours"] == "Success"
    found = results["MotChallenge2DBox"]["ours"][name]["pedestrian"]
    return {
        "HOTA": float(np.mean(found["HOTA"]["HOTA"])),
        "MOTA": float(found["CLEAR"]["MOTA"]),
        "IDF1": float(found["Identity"]["IDF1"]),
        "IDSW": int(found["CLEAR"]["IDSW"]),
        "FP": int(found["CLEAR"]["CLR_FP"]),
        "FN": int(found["CLEAR"]["CLR_FN"]),
    }


def assert_same(ours: dict[str, Any], theirs: dict[str, float]) -> None:
    for key in KEYS:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-5), key


@pytest.mark.skipif(not MOT16_09.is_dir(), reason="needs ../shared/data/mot16")
def test_mot16_dpm_motion_only_equals_trackeval(tmp_path: Path) -> None:
    """MOT16-09 has static people, distractors and reflections: their boxes must be forgiven."""
    report = run_eval(
        [
            str(MOT16_09),
            "--model",
            "none",
            "--det",
            "det_dpm",
            "--min-confidence",
            "0",
            "--output",
            str(tmp_path / "results"),
            "--json",
            str(tmp_path / "metrics.json"),
        ]
    )
    ours = report["metrics"]["MOT16-09"]
    assert ours["gt_format"] == "MOT16"
    results_file = tmp_path / "results" / "MOT16-09.txt"
    assert_same(ours, trackeval_scores(MOT16_09, results_file, "MOT16", tmp_path / "te"))
    # The comparison exercised distractor removal: without it there are more false positives.
    gt = MotSequence(MOT16_09).ground_truth()
    no_distractors = replace(gt, class_id=np.where(gt.distractor, 3, gt.class_id))
    assert evaluate_sequence(no_distractors, results_file)["FP"] > ours["FP"]


@pytest.mark.skipif(not TUD_CAMPUS.is_dir(), reason="needs ../shared/data/mot15")
def test_mot15_equals_trackeval(tmp_path: Path) -> None:
    report = run_eval(
        [
            str(TUD_CAMPUS),
            "--model",
            "none",
            "--output",
            str(tmp_path / "results"),
            "--json",
            str(tmp_path / "metrics.json"),
        ]
    )
    ours = report["metrics"]["TUD-Campus"]
    assert ours["gt_format"] == "MOT15"
    results_file = tmp_path / "results" / "TUD-Campus.txt"
    assert_same(ours, trackeval_scores(TUD_CAMPUS, results_file, "MOT15", tmp_path / "te"))


@pytest.mark.parametrize("benchmark", ["MOT17", "MOT20"])
def test_mot20_distractors_equal_trackeval(tmp_path: Path, benchmark: str) -> None:
    """Ground truth with non-MOT vehicles (class 6) under the results: MOT20 forgives them."""
    config = SceneConfig(
        seed=4, num_objects=6, num_frames=40, width=640, height=360, entering_fraction=0.0
    )
    scene = SyntheticScene(config)
    seq_dir = scene.write_mot_sequence(tmp_path / "SYN", video=False)
    gt = scene.ground_truth.copy()
    considered = gt[:, 6] == 1
    ids, counts = np.unique(gt[considered, 1], return_counts=True)
    vehicles = np.isin(gt[:, 1], ids[np.argsort(-counts)[:2]])  # the two most visible people
    gt[vehicles, 7] = 6
    np.savetxt(seq_dir / "gt" / "gt.txt", gt, fmt="%d,%d,%.2f,%.2f,%.2f,%.2f,%d,%d,%.4f")
    results = gt[considered, :7].copy()
    results[:, 2:6] += np.random.default_rng(0).normal(0, 1.0, (len(results), 4))
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    np.savetxt(
        results_dir / "SYN.txt",
        np.column_stack([results, -np.ones((len(results), 3))]),
        fmt="%d,%d,%.3f,%.3f,%.3f,%.3f,%.1f,%d,%d,%d",
    )
    report = run_eval(
        [
            str(seq_dir),
            "--benchmark",
            benchmark,
            "--results",
            str(results_dir),
            "--json",
            str(tmp_path / "metrics.json"),
        ]
    )
    ours = report["metrics"]["SYN"]
    assert_same(
        ours, trackeval_scores(seq_dir, results_dir / "SYN.txt", benchmark, tmp_path / "te")
    )
    vehicle_boxes = int((vehicles & considered).sum())
    assert vehicle_boxes > 20
    if benchmark == "MOT20":
        assert ours["FP"] == 0  # every box on a vehicle forgiven
    else:
        assert ours["FP"] == vehicle_boxes
