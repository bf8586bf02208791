"""Appearance embeddings for DeepSORT: `ReIDModel` over torch, OpenVINO or ONNX Runtime, model
specs and known models, safe checkpoint loading, batched crops.

Names that need torch load on first use, so that drivers can read `spec`, `known_models` and
`download` (plain Python) without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from ray_deepsort.reid.download import ChecksumMismatchError
from ray_deepsort.reid.known_models import KNOWN_MODELS
from ray_deepsort.reid.spec import ModelSpec

_LAZY = {
    "MissingExtraError": "ray_deepsort.reid.backends",
    "ModelLoadError": "ray_deepsort.reid.backends",
    "CheckpointLoadResult": "ray_deepsort.reid.weights",
    "load_checkpoint": "ray_deepsort.reid.weights",
    "read_checkpoint": "ray_deepsort.reid.weights",
    "ReIDModel": "ray_deepsort.reid.model",
    "WeightsUnavailableError": "ray_deepsort.reid.model",
    "find_mobilenetv2_weights": "ray_deepsort.reid.model",
}

__all__ = ["KNOWN_MODELS", "ChecksumMismatchError", "ModelSpec", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ray_deepsort.reid' has no attribute {name!r}")
