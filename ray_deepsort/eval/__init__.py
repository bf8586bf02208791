"""MOTChallenge I/O, tracking metrics (via `trackers.eval`) and the `ray-deepsort eval` command."""

from ray_deepsort.eval.metrics import evaluate_many, evaluate_sequence
from ray_deepsort.eval.mot import (
    GroundTruth,
    MotSequence,
    SeqInfo,
    find_sequences,
    read_detections,
    read_ground_truth,
    read_results,
    read_seqinfo,
    write_results,
)

__all__ = [
    "GroundTruth",
    "MotSequence",
    "SeqInfo",
    "evaluate_many",
    "evaluate_sequence",
    "find_sequences",
    "read_detections",
    "read_ground_truth",
    "read_results",
    "read_seqinfo",
    "write_results",
]
