"""The appearance gate: a ReID model's recommended gate replaces the default, never a setting."""

import copy
import dataclasses
import inspect
import pickle
from types import SimpleNamespace

import numpy as np
import pytest

from ray_deepsort.core import (
    DEFAULT_APPEARANCE_THRESHOLD,
    DeepSORTTracker,
    DefaultFloat,
    Detections,
    is_default,
    resolve_default,
)
from ray_deepsort.core.defaults import DEFAULT_APPEARANCE_WEIGHT


class GatedModel:
    """A ReID stand-in that recommends a gate (and optionally a cascade weight), as
    `ReIDModel.spec.appearance_threshold` and `.appearance_weight` do."""

    def __init__(self, gate: float | None, weight: float | None = None) -> None:
        self.spec = SimpleNamespace(appearance_threshold=gate, appearance_weight=weight)

    def embed(self, frame: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        return np.ones((len(xyxy), 4), np.float32)


@dataclasses.dataclass
class StreamSettings:
    appearance_threshold: float = DEFAULT_APPEARANCE_THRESHOLD


def test_model_gate_replaces_the_default_only() -> None:
    by_model = DeepSORTTracker(reid_model=GatedModel(0.3))
    assert by_model.appearance_threshold == 0.3 and by_model.appearance_threshold_source == "model"
    assert type(by_model.appearance_threshold) is float
    explicit = DeepSORTTracker(reid_model=GatedModel(0.3), appearance_threshold=0.7)
    assert explicit.appearance_threshold == 0.7
    assert explicit.appearance_threshold_source == "explicit"
    for model in (None, GatedModel(None), SimpleNamespace(embed=None)):
        tracker = DeepSORTTracker(reid_model=model)
        assert tracker.appearance_threshold == 0.7, model
        assert tracker.appearance_threshold_source == "default", model
        assert not is_default(tracker.appearance_threshold)


def test_model_weight_replaces_the_default_weight_only() -> None:
    default = inspect.signature(DeepSORTTracker).parameters["appearance_weight"].default
    assert default is DEFAULT_APPEARANCE_WEIGHT and default == 0.5 and is_default(default)
    by_model = DeepSORTTracker(reid_model=GatedModel(None, weight=0.75))
    assert by_model.appearance_weight == 0.75 and type(by_model.appearance_weight) is float
    assert by_model.appearance_threshold == 0.7  # the weight alone does not move the gate
    explicit = DeepSORTTracker(reid_model=GatedModel(None, weight=0.75), appearance_weight=0.5)
    assert explicit.appearance_weight == 0.5
    for model in (None, GatedModel(0.3), SimpleNamespace(embed=None)):
        tracker = DeepSORTTracker(reid_model=model)
        assert tracker.appearance_weight == 0.5, model
        assert not is_default(tracker.appearance_weight)
    with pytest.raises(ValueError, match="appearance_weight"):
        DeepSORTTracker(reid_model=GatedModel(None, weight=1.5))


def test_the_resolved_weight_is_the_one_tracking_uses() -> None:
    """A model recommending weight 0 makes tracking motion-only (no embedding, no long-term
    re-identification) unless the caller sets a weight."""
    frame = np.zeros((480, 640, 3), np.uint8)
    motion_only = DeepSORTTracker(reid_model=GatedModel(None, weight=0.0))
    explicit = DeepSORTTracker(reid_model=GatedModel(None, weight=0.0), appearance_weight=0.5)
    assert not motion_only.reid_enabled and explicit.reid_enabled
    for tracker in (motion_only, explicit):
        tracker.update(_box(100), frame=frame)
    assert motion_only.tracks.gallery.count.sum() == 0
    assert explicit.tracks.gallery.count.sum() == 1


def test_the_resolved_gate_is_the_one_matching_uses() -> None:
    """Distance 0.5 between a track and a detection seen two frames later (cascade only):
    accepted under the default 0.7, refused under the model's 0.3."""
    track = np.eye(2, 4, dtype=np.float32)[:1]
    probe = (0.5 * track + np.sqrt(0.75) * np.eye(2, 4, dtype=np.float32)[1:]).astype(np.float32)
    ids = {}
    for name, tracker in (
        ("model", DeepSORTTracker(reid_model=GatedModel(0.3))),
        ("explicit", DeepSORTTracker(reid_model=GatedModel(0.3), appearance_threshold=0.7)),
    ):
        for i in range(4):
            tracker.update(_box(100 + 3 * i), embeddings=track)
        tracker.update(Detections.empty())
        ids[name] = tracker.update(_box(118), embeddings=probe).tracker_id.tolist()
    assert ids == {"model": [-1], "explicit": [1]}


def _box(x: float) -> Detections:
    return Detections(xyxy=[[x - 20, 150, x + 20, 250]], confidence=[0.9], class_id=[0])


def test_default_marker_is_a_float_that_survives_copies() -> None:
    default = inspect.signature(DeepSORTTracker).parameters["appearance_threshold"].default
    assert default == 0.7 and repr(default) == "0.7" and str(default) == "0.7"
    assert is_default(default) and isinstance(default, float)
    assert not is_default(0.7) and not is_default(float(default)) and not is_default(None)
    settings = StreamSettings()
    assert is_default(copy.deepcopy(settings).appearance_threshold)
    assert is_default(dataclasses.asdict(settings)["appearance_threshold"])
    assert is_default(pickle.loads(pickle.dumps(settings)).appearance_threshold)
    assert not is_default(dataclasses.asdict(StreamSettings(0.7))["appearance_threshold"])
    assert not is_default(default + 0.0)  # arithmetic gives plain floats
    copied = dataclasses.asdict(settings)["appearance_threshold"]
    assert DeepSORTTracker(GatedModel(0.3), appearance_threshold=copied).appearance_threshold == 0.3


def test_resolve_default_for_callers_without_a_model() -> None:
    assert resolve_default(DEFAULT_APPEARANCE_THRESHOLD, 0.3) == 0.3
    assert resolve_default(DEFAULT_APPEARANCE_THRESHOLD, None) == 0.7
    assert resolve_default(0.7, 0.3) == 0.7
    assert resolve_default(DefaultFloat(0.5), 0.3) == 0.3
    assert type(resolve_default(DEFAULT_APPEARANCE_THRESHOLD, None)) is float


def test_saved_gate_is_restored_unless_set_explicitly() -> None:
    state = DeepSORTTracker(reid_model=GatedModel(0.3)).state_dict()
    assert float(state["appearance_threshold"]) == 0.3
    for tracker in (DeepSORTTracker(), DeepSORTTracker(reid_model=GatedModel(0.45))):
        tracker.load_state_dict(state)
        assert tracker.appearance_threshold == 0.3
        assert type(tracker.appearance_threshold) is float
    explicit = DeepSORTTracker(appearance_threshold=0.5)
    explicit.load_state_dict(state)
    assert explicit.appearance_threshold == 0.5
    restored = DeepSORTTracker(reid_model=GatedModel(0.45))
    restored.load_state_dict(state)
    assert restored.state_dict()["appearance_threshold"] == 0.3  # and saved again as restored


def test_version_1_state_keeps_the_trackers_own_gate() -> None:
    state = DeepSORTTracker().state_dict()
    del state["appearance_threshold"], state["last_xyah"]
    state["format_version"] = np.asarray(1)
    tracker = DeepSORTTracker(reid_model=GatedModel(0.3))
    tracker.load_state_dict(state)
    assert tracker.appearance_threshold == 0.3


def test_gate_is_validated_after_resolution() -> None:
    with pytest.raises(ValueError, match="appearance_threshold"):
        DeepSORTTracker(appearance_threshold=-0.1)
    with pytest.raises(ValueError, match="appearance_threshold"):
        DeepSORTTracker(reid_model=GatedModel(-0.1))
