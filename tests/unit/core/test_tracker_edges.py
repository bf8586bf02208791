"""`DeepSORTTracker` edges: parameter boundaries, frame clocks, reset and state round trips."""

from __future__ import annotations

import numpy as np
import pytest

from ray_deepsort.core import DeepSORTTracker, Detections


def one_box(i: int = 0) -> Detections:
    x = 100.0 + 2 * i
    return Detections(xyxy=np.array([[x, 100.0, x + 40, 200.0]]), confidence=np.array([0.9]))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("lost_track_buffer", 0),
        ("frame_rate", 1.0),
        ("minimum_iou_threshold", 0.0),
        ("appearance_weight", 1.0),
        ("appearance_threshold", 0.0),
        ("max_lost_tracks", 0),
        ("gating_threshold", 1.0),
        ("max_tracks", 1),
    ],
)
def test_parameters_accept_their_documented_bounds(name: str, value: float) -> None:
    tracker = DeepSORTTracker(**{name: value})  # type: ignore[arg-type]
    assert getattr(tracker, name) == value
    assert len(tracker.update(one_box())) == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [("minimum_iou_threshold", -0.1), ("appearance_weight", 1.5), ("appearance_threshold", -0.1)],
)
def test_parameters_refuse_values_beyond_their_bounds(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be in \["):
        DeepSORTTracker(**{name: value})  # type: ignore[arg-type]


def test_zero_lost_track_buffer_still_keeps_a_track_for_one_missed_frame() -> None:
    assert DeepSORTTracker(lost_track_buffer=0).max_age == 1


def test_frame_count_counts_updates() -> None:
    tracker = DeepSORTTracker()
    for i in range(3):
        tracker.update(one_box(i))
    assert tracker.frame_count == 3 and int(tracker.state_dict()["frame_count"]) == 3


def test_timestamps_one_frame_apart_advance_one_frame() -> None:
    tracker = DeepSORTTracker(frame_rate=10.0, minimum_consecutive_frames=1)
    for i in range(4):
        tracker.update(one_box(i), timestamp=100.0 + 0.1 * i)
    assert tracker.state_dict()["age"].tolist() == [4]


def test_timestamps_must_increase() -> None:
    tracker = DeepSORTTracker()
    tracker.update(one_box(), timestamp=5.0)
    with pytest.raises(ValueError, match=r"^timestamp 4\.0 does not follow 5\.0$"):
        tracker.update(one_box(), timestamp=4.0)


def test_reset_gives_the_state_of_a_fresh_tracker() -> None:
    tracker = DeepSORTTracker(minimum_consecutive_frames=1)
    for i in range(3):
        tracker.update(one_box(i))
    tracker.reset()
    fresh = DeepSORTTracker(minimum_consecutive_frames=1)
    for t in (tracker, fresh):
        t.update(one_box())
    got, expected = tracker.state_dict(), fresh.state_dict()
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_clocks_without_frame_index_or_timestamp_round_trip_as_none() -> None:
    tracker = DeepSORTTracker()
    tracker.update(one_box())
    state = tracker.state_dict()
    assert int(state["last_frame_index"]) == -1 and np.isnan(state["last_timestamp"])
    restored = DeepSORTTracker()
    restored.load_state_dict(state)
    assert restored.last_frame_index is None and restored.last_timestamp is None
    restored.update(one_box(), frame_index=0)  # any first index is accepted


@pytest.mark.parametrize("frame_index", [0, 1, 7])
def test_frame_index_round_trips_and_keeps_its_order(frame_index: int) -> None:
    """Index 0 is a real frame: after loading, the same index again is refused."""
    tracker = DeepSORTTracker()
    tracker.update(one_box(), frame_index=frame_index)
    restored = DeepSORTTracker()
    restored.load_state_dict(tracker.state_dict())
    assert restored.last_frame_index == frame_index
    with pytest.raises(ValueError, match="does not follow"):
        restored.update(one_box(), frame_index=frame_index)


def test_timestamp_round_trips_and_keeps_its_order() -> None:
    tracker = DeepSORTTracker()
    tracker.update(one_box(), timestamp=12.5)
    state = tracker.state_dict()
    assert float(state["last_timestamp"]) == 12.5
    restored = DeepSORTTracker()
    restored.load_state_dict(state)
    assert restored.last_timestamp == 12.5
    with pytest.raises(ValueError, match="does not follow"):
        restored.update(one_box(), timestamp=12.0)


def test_saved_appearance_threshold_applies_unless_set_explicitly() -> None:
    saved = DeepSORTTracker(appearance_threshold=0.3)
    saved.update(one_box())
    state = saved.state_dict()
    default = DeepSORTTracker()
    default.load_state_dict(state)
    assert default.appearance_threshold == pytest.approx(0.3)
    explicit = DeepSORTTracker(appearance_threshold=0.5)
    explicit.load_state_dict(state)
    assert explicit.appearance_threshold == pytest.approx(0.5)
