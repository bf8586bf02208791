"""Tracking metrics (via `trackers.eval`) and the `ray-deepsort eval` command.

MOTChallenge files are read and written by `ray_deepsort.io.mot`.
"""

from ray_deepsort.eval.metrics import evaluate_many, evaluate_sequence

__all__ = ["evaluate_many", "evaluate_sequence"]
