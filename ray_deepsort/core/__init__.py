"""DeepSORT in pure numpy/scipy: no torch, Ray or Kafka import here or below."""

from ray_deepsort.core.detections import Detections
from ray_deepsort.core.kalman_filter import CHI2_95_2DOF, CHI2_95_4DOF, KalmanFilter
from ray_deepsort.core.tracker import DeepSORTTracker, Embedder

__all__ = [
    "CHI2_95_2DOF",
    "CHI2_95_4DOF",
    "DeepSORTTracker",
    "Detections",
    "Embedder",
    "KalmanFilter",
]
