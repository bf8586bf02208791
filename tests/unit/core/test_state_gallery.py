"""The gallery part of state validation: the float32 fingerprint, float16 bits, older formats.

A gallery is most of a state's bytes, so it is read once: float32 rows through their
fingerprint (a projection saved with the state), float16 rows through their bits. These tests
pin what that pass catches, that rounding differences between machines never refuse a valid
state, and that states saved by earlier versions still load.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ray_deepsort.core import DeepSORTTracker, Detections, InvalidTrackerState
from ray_deepsort.core.state import (
    STATE_FORMAT_VERSION,
    fingerprint_tolerance,
    gallery_fingerprint,
    seal_state,
    state_checksum,
    validate_state,
)

BUDGET = 4
DATA = Path(__file__).parent / "data"
State = dict[str, Any]


def frames(count: int) -> list[tuple[Detections, np.ndarray]]:
    """Two people with random 8-d features (as `data/*.npz` were made: see `older_state`)."""
    out = []
    for i in range(count):
        centres = np.array([[100.0 + 2 * i, 200.0], [400.0, 220.0 + i]])
        half = np.array([20.0, 50.0])
        detections = Detections(
            xyxy=np.concatenate([centres - half, centres + half], axis=1),
            confidence=np.full(2, 0.9),
        )
        out.append(
            (detections, np.random.default_rng(i).standard_normal((2, 8)).astype(np.float32))
        )
    return out


def make_tracker(dtype: str = "float32") -> DeepSORTTracker:
    return DeepSORTTracker(gallery_budget=BUDGET, lost_track_buffer=2, gallery_dtype=dtype)


def run(tracker: DeepSORTTracker, first: int, last: int) -> list[list[int]]:
    ids = []
    for i, (detections, features) in enumerate(frames(last)):
        if i >= first:
            ids.append(tracker.update(detections, embeddings=features, frame_index=i).tracker_id)
    return [row.tolist() for row in ids]


def saved(dtype: str = "float32") -> State:
    tracker = make_tracker(dtype)
    run(tracker, 0, 5)
    return tracker.state_dict()


def refusal(state: State) -> InvalidTrackerState:
    with pytest.raises(InvalidTrackerState) as raised:
        validate_state(state, BUDGET)
    return raised.value


def edited(state: State, key: str, change: Callable[[np.ndarray], None]) -> State:
    array = np.array(state[key], copy=True)
    change(array)
    return {**state, key: array}


def test_a_float32_state_carries_one_fingerprint_value_per_gallery_row() -> None:
    state = saved()
    assert int(state["format_version"]) == STATE_FORMAT_VERSION == 3
    rows = len(state["gallery_features"])
    assert rows == 8 and state["gallery_fingerprint"].shape == (rows,)
    assert state["gallery_fingerprint"].dtype == np.float64
    np.testing.assert_array_equal(
        state["gallery_fingerprint"], gallery_fingerprint(state["gallery_features"])
    )
    assert np.abs(state["gallery_fingerprint"]).min() > 1000 * fingerprint_tolerance(8)


def test_the_probe_is_pinned() -> None:
    """The probe is part of the file format: changing it would refuse every saved state."""
    probe = gallery_fingerprint(np.eye(4, dtype=np.float32))
    np.testing.assert_allclose(probe, [0.48415172, -0.61098003, 0.44763166, 0.43809408], rtol=1e-7)
    assert np.linalg.norm(gallery_fingerprint(np.eye(1280, dtype=np.float32))) == pytest.approx(1.0)
    every_entry = np.abs(gallery_fingerprint(np.eye(1280, dtype=np.float32)))
    assert every_entry.max() <= 2 * every_entry.min()  # no small entry: one-hot rows stay clear


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("every row negated", lambda f: np.negative(f, out=f)),
        ("one row negated", lambda f: f.__setitem__(2, -f[2])),
        ("two rows swapped", lambda f: f.__setitem__([1, 5], f[[5, 1]])),
        ("one element nudged by 0.01", lambda f: f.__setitem__((3, 4), f[3, 4] + 0.01)),
        ("one element negated", lambda f: f.__setitem__((6, 0), -f[6, 0])),
        ("one row scaled", lambda f: f.__setitem__(0, 1.5 * f[0])),
    ],
)
def test_edited_float32_features_fail_their_fingerprint(
    name: str, change: Callable[[np.ndarray], None]
) -> None:
    error = refusal(edited(saved(), "gallery_features", change))
    assert error.field == "gallery_features", name
    assert error.problem.startswith("do not match gallery_fingerprint: they were changed after")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_non_finite_float32_element_is_named(value: float) -> None:
    state = edited(saved(), "gallery_features", lambda f: f.__setitem__((7, 7), value))
    error = refusal(state)
    assert (error.field, error.problem) == ("gallery_features", "holds NaN or inf")
    state["gallery_fingerprint"] = gallery_fingerprint(state["gallery_features"])
    error = refusal(state)  # a fingerprint taken of the broken rows is refused on its own
    assert (error.field, error.problem) == ("gallery_fingerprint", "holds NaN or inf")


def test_an_edited_fingerprint_fails_the_checksum() -> None:
    state = edited(saved(), "gallery_fingerprint", lambda f: f.__setitem__(0, f[0] + 1e-3))
    assert refusal(state).field == "state_checksum"


def test_a_float16_gallery_is_checked_by_exact_word_sums_and_its_bits() -> None:
    state = saved("float16")
    assert state["gallery_features"].dtype == np.float16
    assert state["gallery_fingerprint"].dtype == np.uint64
    tracker = make_tracker("float16")
    tracker.load_state_dict(state)
    reference = make_tracker("float16")
    run(reference, 0, 5)
    assert run(tracker, 5, 9) == run(reference, 5, 9)

    nan = edited(state, "gallery_features", lambda f: f.__setitem__((1, 1), np.nan))
    assert (refusal(nan).field, refusal(nan).problem) == ("gallery_features", "holds NaN or inf")
    for sign in (1.0, -1.0):  # an element beyond unit length, either sign
        big = edited(state, "gallery_features", lambda f, s=sign: f.__setitem__((2, 3), s * 1.01))
        assert refusal(big).problem == "are not unit vectors (an element beyond 1)"
    for change in (
        lambda f: f.__setitem__(0, -f[0]),  # a row negated
        lambda f: f.__setitem__([1, 5], f[[5, 1]]),  # two rows swapped
        lambda f: f.view(np.uint16).__setitem__((3, 2), f.view(np.uint16)[3, 2] ^ 1),  # 1 bit
    ):
        error = refusal(edited(state, "gallery_features", change))
        assert error.field == "gallery_features"
        assert error.problem.startswith("do not match gallery_fingerprint")
    as_float32 = {**state, "gallery_features": state["gallery_features"].astype(np.float32)}
    error = refusal(as_float32)
    assert error.field == "gallery_fingerprint" and "float64" in error.problem
    as_int64 = {**state, "gallery_fingerprint": state["gallery_fingerprint"].astype(np.int64)}
    error = refusal(as_int64)
    assert (error.field, error.problem) == (
        "gallery_fingerprint",
        "must be uint64 [N] for a float16 gallery (as saved), got int64 [8]",
    )


@pytest.mark.parametrize("width", [8, 10, 13, 14])
def test_word_sums_do_not_depend_on_layout(width: int) -> None:
    """Rows of any width (zero-padded to whole 64-bit words) and any memory layout."""
    rng = np.random.default_rng(width)
    rows = rng.standard_normal((5, width)).astype(np.float16)
    words = -(-width // 4)
    padded = np.zeros((5, 4 * words), np.float16)
    padded[:, :width] = rows
    sums = gallery_fingerprint(rows)
    assert sums.dtype == np.uint64
    np.testing.assert_array_equal(sums, gallery_fingerprint(padded))
    np.testing.assert_array_equal(sums, gallery_fingerprint(np.asfortranarray(rows)))
    halves = padded.view(np.uint16).astype(np.uint64).reshape(5, words, 4)
    shifts = np.uint64(1) << np.arange(0, 64, 16, dtype=np.uint64)
    np.testing.assert_array_equal(sums, (halves * shifts).sum(axis=(1, 2)))


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_the_bits_check_holds_exactly_at_its_bound(dtype: str) -> None:
    """±1.001 (as stored) and -0.0 pass; the next value beyond 1.001, of either sign, does not.
    float16 is format 3's bits check, float32 format 2's (the previous release's file)."""
    state = saved("float16") if dtype == "float16" else v2_state("float32")
    bound = np.asarray(1.001, dtype)
    beyond = np.nextafter(bound, np.asarray(2.0, dtype))
    for sign in (1, -1):
        features = state["gallery_features"].copy()
        features[0, :3] = [sign * bound, -0.0, 1.0]
        validate_state(resealed({**state, "gallery_features": features}), BUDGET)
        features[0, 0] = sign * beyond
        error = refusal(resealed({**state, "gallery_features": features}))
        assert (error.field, error.problem) == (
            "gallery_features",
            "are not unit vectors (an element beyond 1)",
        )


def test_a_gallery_without_features_passes_the_bits_check() -> None:
    tracker = make_tracker("float16")
    for detections, _ in frames(4):
        tracker.update(detections)
    state = tracker.state_dict()
    assert state["gallery_features"].shape == (0, 0) and len(state["track_id"]) == 2
    validate_state(state, BUDGET)


def test_the_fingerprint_tolerance_holds_exactly() -> None:
    """A fingerprint off by exactly the tolerance loads; 1 % beyond it, either way, does not."""
    state = saved()
    tolerance = fingerprint_tolerance(8)
    assert tolerance == 20 * 2.0**-24  # 2.5 * dim * 2**-24, exact in binary
    for offset, loads in ((tolerance, True), (-tolerance, True), (1.01 * tolerance, False)):
        fingerprint = state["gallery_fingerprint"].copy()
        fingerprint[3] += offset
        if loads:  # exactly at the bound: the addition is exact in float64
            assert abs(fingerprint[3] - state["gallery_fingerprint"][3]) == tolerance
        changed = resigned({**state, "gallery_fingerprint": fingerprint})
        if loads:
            validate_state(changed, BUDGET)
        else:
            assert refusal(changed).field == "gallery_features"
    fingerprint = state["gallery_fingerprint"].copy()
    fingerprint[3] += 0.99 * tolerance
    validate_state(resigned({**state, "gallery_fingerprint": fingerprint}), BUDGET)


def v2_state(dtype: str) -> State:
    with np.load(DATA / f"state_v2_{dtype}.npz", allow_pickle=False) as archive:
        return dict(archive)


def resigned(state: State) -> State:
    """The state with its checksum recomputed: a deliberate edit, not a corruption."""
    return {**state, "state_checksum": np.asarray(state_checksum(state), np.int64)}


def resealed(state: State) -> State:
    """The state with its fingerprint and checksum recomputed after an edit."""
    return seal_state(dict(state))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_version_2_state_saved_by_the_previous_release_loads(dtype: str) -> None:
    """`data/state_v2_*.npz` were written by git e132319 (format 2: the checksum covers the
    gallery bytes) from the frames above; they load and track on like today's tracker."""
    older = v2_state(dtype)
    assert int(older["format_version"]) == 2
    restored = make_tracker(dtype)
    restored.load_state_dict(older)
    reference = make_tracker(dtype)
    run(reference, 0, 5)
    current = reference.state_dict()
    for key in older:
        if key not in ("format_version", "state_checksum"):
            np.testing.assert_array_equal(older[key], current[key], err_msg=key)
    assert run(restored, 5, 9) == run(reference, 5, 9)

    negated = edited(older, "gallery_features", lambda f: f.__setitem__(0, -f[0]))
    assert refusal(negated).field == "state_checksum"  # version 2: bytes in the checksum
    scaled = edited(older, "gallery_features", lambda f: f.__setitem__(0, 2 * f[0]))
    assert refusal(scaled).problem == "are not unit vectors (an element beyond 1)"
    flat = resigned(edited(older, "last_xyah", lambda box: box.__setitem__((0, 3), 0.0)))
    assert refusal(flat).field == "last_xyah"  # format 2 saved boxes: they are checked
    for key in ("last_xyah", "appearance_threshold"):  # format 2 must have them
        error = refusal({k: v for k, v in older.items() if k != key})
        assert (error.field, error.problem) == (key, f"missing key (missing: {key})")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_version_3_state_file_keeps_loading(dtype: str) -> None:
    """Guards the format: a change to the probe, the word sums or the checksum refuses these."""
    with np.load(DATA / f"state_v3_{dtype}.npz", allow_pickle=False) as archive:
        state = dict(archive)
    restored = make_tracker(dtype)
    restored.load_state_dict(state)
    reference = make_tracker(dtype)
    run(reference, 0, 5)
    assert run(restored, 5, 9) == run(reference, 5, 9)


# ---------------------------------------------------------------------- no false refusals
def fingerprint_in_another_order(features: np.ndarray, order: str) -> np.ndarray:
    """The fingerprint as another machine's float32 arithmetic might sum it."""
    products = features * gallery_fingerprint(np.eye(features.shape[1], dtype=np.float32))
    products = products.astype(np.float32)
    if order == "sequential":
        return np.cumsum(products, axis=1, dtype=np.float32)[:, -1].astype(np.float64)
    if order == "reversed":
        return np.cumsum(products[:, ::-1], axis=1, dtype=np.float32)[:, -1].astype(np.float64)
    return products.astype(np.float64).sum(axis=1)  # exact enough: float64


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    dim=st.sampled_from([1, 2, 8, 128, 256, 512, 1280, 2048]),
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["gaussian", "positive", "sparse", "one-hot-ish", "float16"]),
)
def test_any_summation_order_stays_within_the_tolerance(dim: int, seed: int, kind: str) -> None:
    """Sequential, reversed and float64 sums of the same products agree with the BLAS one within
    `fingerprint_tolerance`, also for rows where round-off adds up (all entries positive)."""
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((64, dim))
    if kind == "positive":
        rows = np.abs(rows)
    elif kind == "sparse":
        rows *= rng.random((64, dim)) < 0.1
        rows[:, 0] += 1e-3
    elif kind == "one-hot-ish":
        rows = 1e-4 * rows
        rows[:, 0] = 1.0
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    features = rows.astype(np.float16 if kind == "float16" else np.float32).astype(np.float32)
    computed = gallery_fingerprint(features)
    for order in ("sequential", "reversed", "float64"):
        other = fingerprint_in_another_order(features, order)
        assert np.abs(computed - other).max() <= fingerprint_tolerance(dim), (order, dim, kind)
