"""`validate_state` at its boundaries: exact limits, tolerances, dtypes, and what errors name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from ray_deepsort.core import DeepSORTTracker, Detections, InvalidTrackerState
from ray_deepsort.core.state import state_checksum, validate_state

BUDGET = 4
State = dict[str, Any]


def saved_state(embeddings: bool = True, people: int = 2) -> State:
    """`people` walking for 5 frames (all confirmed), as `state_dict` saves them."""
    tracker = DeepSORTTracker(gallery_budget=BUDGET, lost_track_buffer=2)
    for i in range(5):
        centres = np.array([[100.0 + 2 * i, 200.0], [400.0, 220.0 + i]])[:people]
        half = np.array([20.0, 50.0])
        detections = Detections(
            xyxy=np.concatenate([centres - half, centres + half], axis=1),
            confidence=np.full(people, 0.9),
        )
        features = np.eye(people, 8, dtype=np.float32) if embeddings else None
        tracker.update(detections, embeddings=features, frame_index=i)
    return tracker.state_dict()


STATE = saved_state()


def fresh() -> State:
    return {key: np.array(value, copy=True) for key, value in STATE.items()}


def resigned(state: State) -> State:
    """The state with its checksum recomputed: a deliberate edit, not a corruption."""
    state["state_checksum"] = np.asarray(state_checksum(state), np.int64)
    return state


def refusal(state: Any) -> InvalidTrackerState:
    with pytest.raises(InvalidTrackerState) as raised:
        validate_state(state, BUDGET)
    return raised.value


def test_the_reference_state_is_valid() -> None:
    assert len(STATE["track_id"]) == 2 and STATE["confirmed"].all()
    validate_state(fresh(), BUDGET)


def test_a_non_mapping_is_refused_naming_the_state() -> None:
    error = refusal([1, 2])
    assert (error.field, error.problem) == ("state", "must be a mapping, got list")


def test_checksum_ignores_lossless_casts_of_every_column_kind() -> None:
    """Counters saved as float64, flags as uint8: the same state, so the same code."""
    state = fresh()
    cast = dict(state)
    for key in ("hits", "age", "track_id", "birth", "frame_count", "gallery_count"):
        cast[key] = state[key].astype(np.float64)
    cast["confirmed"] = state["confirmed"].astype(np.uint8)
    cast["last_timestamp"] = np.asarray(state["last_timestamp"], np.float64)
    cast["appearance_threshold"] = np.float64(state["appearance_threshold"])
    cast["gallery_fingerprint"] = state["gallery_fingerprint"].astype(np.float32)  # float32 sums
    assert state_checksum(cast) == state_checksum(state)


def test_float_exactly_two_to_the_63_is_beyond_int64() -> None:
    """2**63 is the first float that does not fit: it would wrap to a negative counter."""
    state = fresh()
    state["age"] = state["age"].astype(np.float64)
    state["age"][0] = 2.0**63
    error = refusal(state)
    assert (error.field, error.problem) == ("age", "holds values beyond int64")


def test_small_unsigned_counters_are_accepted() -> None:
    state = fresh()
    for key in ("hits", "age", "gallery_count", "gallery_head", "time_since_update"):
        state[key] = state[key].astype(np.uint32)
    state["frame_count"] = np.asarray(int(state["frame_count"]), np.uint16)
    clean = validate_state(state, BUDGET)
    assert clean["hits"].dtype == np.int64
    np.testing.assert_array_equal(clean["age"], STATE["age"])


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_filter_columns_must_be_float64_as_saved(dtype: type) -> None:
    """A narrower or integer filter column means precision was lost on the way."""
    state = fresh()
    state["mean"] = state["mean"].astype(dtype)
    error = refusal(state)
    assert error.field == "mean"
    assert error.problem == f"must be float64 (as saved), got {np.dtype(dtype)}"


@pytest.mark.parametrize("value", [np.float32(0.5), np.bool_(True)])
def test_float_scalars_must_be_float64_as_saved(value: Any) -> None:
    state = fresh()
    state["last_timestamp"] = np.asarray(value)
    error = refusal(state)
    assert error.field == "last_timestamp"
    assert error.problem == f"must be float64 (as saved), got {np.asarray(value).dtype}"


def test_integer_gallery_features_are_refused_naming_the_dtype() -> None:
    state = fresh()
    state["gallery_features"] = state["gallery_features"].astype(np.int64)
    error = refusal(state)
    assert (error.field, error.problem) == (
        "gallery_features",
        "must be float32 or float16 (as saved), got int64",
    )


def test_negative_gallery_dim_is_refused_with_its_value() -> None:
    state = fresh()
    state["gallery_dim"] = np.asarray(-1)
    error = refusal(state)
    assert (error.field, error.problem) == ("gallery_dim", "must be >= 0, got -1")


def test_zero_gallery_dim_with_counted_features_is_refused() -> None:
    state = fresh()
    state["gallery_dim"] = np.asarray(0)
    state["gallery_features"] = np.zeros((int(state["gallery_count"].sum()), 0), np.float32)
    error = refusal(state)
    assert (error.field, error.problem) == ("gallery_dim", "is 0 while galleries hold features")


def test_tracks_without_any_feature_are_valid() -> None:
    """Tracking without embeddings leaves every gallery empty; such a state must load."""
    state = saved_state(embeddings=False)
    assert (state["gallery_count"] == 0).all() and state["confirmed"].all()
    clean = validate_state(state, BUDGET)
    assert clean["gallery_features"].shape[0] == 0


def _covariances(*scaled: tuple[float, Callable[[np.ndarray], None]]) -> State:
    """The reference state with its two covariances replaced by scale * (identity, edited)."""
    state = fresh()
    stack = []
    for scale, edit in scaled:
        matrix = np.eye(8)
        edit(matrix)
        stack.append(scale * matrix)
    state["covariance"] = np.stack(stack)
    return resigned(state)


def _none(matrix: np.ndarray) -> None:
    pass


def _asymmetric(relative: float) -> Callable[[np.ndarray], None]:
    def edit(matrix: np.ndarray) -> None:
        matrix[1, 0] = relative

    return edit


def _negative_eigenvalue(relative: float) -> Callable[[np.ndarray], None]:
    def edit(matrix: np.ndarray) -> None:
        matrix[7, 7] = -relative

    return edit


def test_covariance_of_a_single_track_is_checked() -> None:
    state = saved_state(people=1)
    assert len(state["track_id"]) == 1
    state["covariance"][0, 0, 1] += 1.0
    error = refusal(state)
    assert (error.field, error.problem) == ("covariance", "is not symmetric")


def test_asymmetry_tolerance_is_relative_to_each_matrix() -> None:
    """Round-off of 1e-10 of a large matrix is fine; 1e-6 of a small one is not, even beside a
    large one, and however small the matrix."""
    validate_state(_covariances((1e6, _asymmetric(1e-10)), (1.0, _none)), BUDGET)
    for small in (1.0, 1e-6):
        error = refusal(_covariances((1e6, _none), (small, _asymmetric(1e-6))))
        assert (error.field, error.problem) == ("covariance", "is not symmetric")


def test_tolerances_hold_exactly_at_their_limit() -> None:
    """1e-8 of the largest entry is still accepted, as asymmetry and as a negative eigenvalue."""
    validate_state(_covariances((1.0, _asymmetric(1e-8)), (1.0, _none)), BUDGET)
    validate_state(_covariances((1.0, _negative_eigenvalue(1e-8)), (1.0, _none)), BUDGET)
    error = refusal(_covariances((1.0, _negative_eigenvalue(1e-7)), (1.0, _none)))
    assert (error.field, error.problem) == ("covariance", "is not positive semi-definite")
