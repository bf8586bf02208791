"""Deterministic synthetic camera scenes with ground truth, for tests, benchmarks and the demo."""

from ray_deepsort.synthetic.scene import (
    CameraFrame,
    Occluder,
    SceneConfig,
    SyntheticScene,
    camera_scenes,
    interleave_cameras,
)

__all__ = [
    "CameraFrame",
    "Occluder",
    "SceneConfig",
    "SyntheticScene",
    "camera_scenes",
    "interleave_cameras",
]
