"""HOTA, CLEAR (MOTA, IDSW, MT/ML, FP, FN) and Identity (IDF1) through `trackers.eval`.

The metric arithmetic is the maintained, TrackEval-parity code of the `trackers` package. This
module only prepares its input the way TrackEval's MOTChallenge loader does: keep scored ground
truth (`GroundTruth.scored`), drop tracker boxes matched to the benchmark's distractor regions
(`GroundTruth.distractor`: MOT20 adds non-MOT vehicles), compute per-frame IoU in float64, and
number ids 0..K-1. We do the preparation ourselves because the package's file loader applies the
MOT17 class filter to every file, which would discard all of MOT15's ground truth (its column 8
is a world coordinate, not a class), and knows no MOT20 distractors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from ray_deepsort.core.detections import Detections
from ray_deepsort.io.mot import GroundTruth, read_ground_truth, read_result_rows, results_to_rows

_DISTRACTOR_IOU = 0.5
_EPS = float(np.finfo(float).eps)

GroundTruthInput = GroundTruth | str | Path
ResultsInput = Mapping[int, Detections] | np.ndarray | str | Path
# (gt, results) or (gt, results, num_frames)
SequenceInput = (
    tuple[GroundTruthInput, ResultsInput] | tuple[GroundTruthInput, ResultsInput, int | None]
)


@dataclass
class _Prepared:
    gt_ids: list[np.ndarray]
    tracker_ids: list[np.ndarray]
    similarity: list[np.ndarray]
    num_gt_ids: int
    num_tracker_ids: int


@dataclass
class RawMetrics:
    """Per-sequence metric dicts as `trackers.eval` returns them (needed to combine sequences)."""

    clear: dict[str, Any]
    hota: dict[str, Any]
    identity: dict[str, Any]
    num_frames: int
    num_gt_ids: int
    num_tracker_ids: int


def _as_ground_truth(gt: GroundTruthInput) -> GroundTruth:
    return gt if isinstance(gt, GroundTruth) else read_ground_truth(gt)


def _as_result_rows(results: ResultsInput) -> np.ndarray:
    """[M, >=6] float64 rows frame, id, x, y, w, h of confirmed (id >= 0) tracker boxes.

    A file is read as float64 rows, never through float32 `Detections`, so its boxes are scored
    exactly as TrackEval scores them.
    """
    if isinstance(results, (str, Path)):
        rows = read_result_rows(results)
    elif isinstance(results, np.ndarray):
        rows = np.asarray(results, np.float64)
    else:
        rows = results_to_rows(results)
    return rows[rows[:, 1] >= 0] if len(rows) else np.zeros((0, 6))


def _frame_bounds(frames: np.ndarray, num_frames: int) -> np.ndarray:
    """Start offsets of frames 1..num_frames (+ end) in rows sorted by frame."""
    return np.searchsorted(frames, np.arange(1, num_frames + 2), side="left")


def _remove_distractor_matches(
    all_gt_xywh: np.ndarray, distractor: np.ndarray, tracker_xywh: np.ndarray
) -> np.ndarray:
    """Mask of tracker boxes to keep: not matched (IoU >= 0.5, Hungarian) to a distractor row."""
    from trackers.eval import box_iou

    keep = np.ones(len(tracker_xywh), bool)
    if not distractor.any() or len(tracker_xywh) == 0:
        return keep
    iou = box_iou(all_gt_xywh, tracker_xywh, box_format="xywh")
    iou[iou < _DISTRACTOR_IOU - _EPS] = 0
    rows, cols = linear_sum_assignment(-iou)
    matched = iou[rows, cols] > _EPS
    rows, cols = rows[matched], cols[matched]
    keep[cols[distractor[rows]]] = False
    return keep


def _prepare(gt: GroundTruth, result_rows: np.ndarray, num_frames: int) -> _Prepared:
    from trackers.eval import box_iou

    gt_order = np.argsort(gt.frame, kind="stable")
    gt_frame = gt.frame[gt_order]
    gt_xywh = gt.xywh[gt_order]
    gt_scored = gt.scored[gt_order]
    gt_distractor = gt.distractor[gt_order]
    scored_ids, gt_index = np.unique(gt.track_id[gt_order][gt_scored], return_inverse=True)
    gt_dense = np.full(len(gt_order), -1, np.int64)
    gt_dense[gt_scored] = gt_index

    tr_order = np.argsort(result_rows[:, 0], kind="stable")
    tr_frame = result_rows[tr_order, 0].astype(np.int64)
    tr_xywh = result_rows[tr_order, 2:6]
    tracker_unique, tr_dense = np.unique(
        result_rows[tr_order, 1].astype(np.int64), return_inverse=True
    )

    gt_bounds = _frame_bounds(gt_frame, num_frames)
    tr_bounds = _frame_bounds(tr_frame, num_frames)
    gt_ids, tracker_ids, similarity = [], [], []
    kept_tracker = np.zeros(len(tracker_unique), bool)
    for t in range(num_frames):
        g = slice(gt_bounds[t], gt_bounds[t + 1])
        r = slice(tr_bounds[t], tr_bounds[t + 1])
        keep = _remove_distractor_matches(gt_xywh[g], gt_distractor[g], tr_xywh[r])
        frame_tracker_ids = tr_dense[r][keep]
        scored = gt_scored[g]
        gt_ids.append(gt_dense[g][scored])
        tracker_ids.append(frame_tracker_ids)
        kept_tracker[frame_tracker_ids] = True
        similarity.append(box_iou(gt_xywh[g][scored], tr_xywh[r][keep], box_format="xywh"))

    # Tracker ids whose every box sat on a distractor vanish: renumber the rest contiguously.
    renumber = np.cumsum(kept_tracker) - 1
    tracker_ids = [renumber[ids] for ids in tracker_ids]
    return _Prepared(gt_ids, tracker_ids, similarity, len(scored_ids), int(kept_tracker.sum()))


def compute_raw(
    gt: GroundTruthInput,
    results: ResultsInput,
    *,
    num_frames: int | None = None,
    threshold: float = 0.5,
) -> RawMetrics:
    """Run `trackers.eval`'s CLEAR, HOTA and Identity on one sequence."""
    from trackers.eval import compute_clear_metrics, compute_hota_metrics, compute_identity_metrics

    ground_truth = _as_ground_truth(gt)
    rows = _as_result_rows(results)
    if num_frames is None:
        num_frames = max(ground_truth.num_frames, int(rows[:, 0].max()) if len(rows) else 0)
    prepared = _prepare(ground_truth, rows, num_frames)
    args = (prepared.gt_ids, prepared.tracker_ids, prepared.similarity)
    return RawMetrics(
        clear=compute_clear_metrics(*args, threshold=threshold),
        hota=compute_hota_metrics(*args),
        identity=compute_identity_metrics(*args, threshold=threshold),
        num_frames=num_frames,
        num_gt_ids=prepared.num_gt_ids,
        num_tracker_ids=prepared.num_tracker_ids,
    )


def summarize(raw: RawMetrics) -> dict[str, float | int]:
    """The flat metrics dict the project reports (ratios in [0, 1], counts as ints)."""
    clear, hota, identity = raw.clear, raw.hota, raw.identity
    return {
        "HOTA": float(hota["HOTA"]),
        "DetA": float(hota["DetA"]),
        "AssA": float(hota["AssA"]),
        "LocA": float(hota["LocA"]),
        "MOTA": float(clear["MOTA"]),
        "MOTP": float(clear["MOTP"]),
        "IDF1": float(identity["IDF1"]),
        "IDR": float(identity["IDR"]),
        "IDP": float(identity["IDP"]),
        "IDSW": int(clear["IDSW"]),
        "Frag": int(clear["Frag"]),
        "MT": int(clear["MT"]),
        "PT": int(clear["PT"]),
        "ML": int(clear["ML"]),
        "TP": int(clear["CLR_TP"]),
        "FP": int(clear["CLR_FP"]),
        "FN": int(clear["CLR_FN"]),
        "Recall": float(clear["CLR_Re"]),
        "Precision": float(clear["CLR_Pr"]),
        "frames": int(raw.num_frames),
        "gt_ids": int(raw.num_gt_ids),
        "tracker_ids": int(raw.num_tracker_ids),
    }


def evaluate_sequence(
    gt: GroundTruthInput,
    results: ResultsInput,
    *,
    num_frames: int | None = None,
    threshold: float = 0.5,
) -> dict[str, float | int]:
    """Metrics of one sequence.

    `gt`: a `GroundTruth` or a gt.txt path. `results`: frame (1-based) -> detections with
    `tracker_id`, MOT rows `[M, >=6]`, or a results file path. `num_frames` defaults to the last
    frame seen (pass seqLength so trailing empty frames count).
    """
    return summarize(compute_raw(gt, results, num_frames=num_frames, threshold=threshold))


def combine(raws: list[RawMetrics]) -> RawMetrics:
    """Combine sequences as TrackEval does (sum counts, TP-weighted HOTA association terms)."""
    from trackers.eval import (
        aggregate_clear_metrics,
        aggregate_hota_metrics,
        aggregate_identity_metrics,
    )

    return RawMetrics(
        clear=aggregate_clear_metrics([raw.clear for raw in raws]),
        hota=aggregate_hota_metrics([raw.hota for raw in raws]),
        identity=aggregate_identity_metrics([raw.identity for raw in raws]),
        num_frames=sum(raw.num_frames for raw in raws),
        num_gt_ids=sum(raw.num_gt_ids for raw in raws),
        num_tracker_ids=sum(raw.num_tracker_ids for raw in raws),
    )


def evaluate_many(
    sequences: Mapping[str, SequenceInput],
    *,
    threshold: float = 0.5,
) -> dict[str, dict[str, float | int]]:
    """Metrics per sequence plus "COMBINED".

    Values are `(gt, results)` or `(gt, results, num_frames)`, as `evaluate_sequence` takes them.
    """
    raws: dict[str, RawMetrics] = {}
    for name, entry in sequences.items():
        gt, results = entry[0], entry[1]
        num_frames = entry[2] if len(entry) > 2 else None
        raws[name] = compute_raw(gt, results, num_frames=num_frames, threshold=threshold)
    summary = {name: summarize(raw) for name, raw in raws.items()}
    summary["COMBINED"] = summarize(combine(list(raws.values())))
    return summary
