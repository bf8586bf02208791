"""DeepSORT in pure numpy/scipy: no torch, Ray or Kafka import here or below."""

from ray_deepsort.core.defaults import (
    DEFAULT_APPEARANCE_THRESHOLD,
    DefaultFloat,
    is_default,
    resolve_default,
)
from ray_deepsort.core.detections import Detections
from ray_deepsort.core.kalman_filter import CHI2_95_2DOF, CHI2_95_4DOF, KalmanFilter
from ray_deepsort.core.state import InvalidTrackerState
from ray_deepsort.core.tracker import DeepSORTTracker, Embedder

__all__ = [
    "CHI2_95_2DOF",
    "CHI2_95_4DOF",
    "DEFAULT_APPEARANCE_THRESHOLD",
    "DeepSORTTracker",
    "DefaultFloat",
    "Detections",
    "Embedder",
    "InvalidTrackerState",
    "KalmanFilter",
    "is_default",
    "resolve_default",
]
