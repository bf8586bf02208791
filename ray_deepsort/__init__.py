"""ray-deepsort: DeepSORT multi-object tracking, as a library and as a Ray + Kafka stream job.

`ReIDModel` is imported on first use so that `import ray_deepsort` does not load torch.
"""

from __future__ import annotations

from typing import Any

from ray_deepsort.core import DeepSORTTracker, Detections

__all__ = ["DeepSORTTracker", "Detections", "ReIDModel"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "ReIDModel":
        from ray_deepsort.reid import ReIDModel

        return ReIDModel
    raise AttributeError(f"module 'ray_deepsort' has no attribute {name!r}")
