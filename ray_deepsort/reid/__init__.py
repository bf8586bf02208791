"""Appearance embeddings for DeepSORT: `ReIDModel`, safe checkpoint loading, batched crops."""

from ray_deepsort.reid.checkpoints import CheckpointLoadResult, load_checkpoint, read_checkpoint
from ray_deepsort.reid.model import ReIDModel, WeightsUnavailableError, find_mobilenetv2_weights

__all__ = [
    "CheckpointLoadResult",
    "ReIDModel",
    "WeightsUnavailableError",
    "find_mobilenetv2_weights",
    "load_checkpoint",
    "read_checkpoint",
]
