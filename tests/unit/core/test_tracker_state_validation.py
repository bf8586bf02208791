"""`load_state_dict` validates a whole state before it changes anything (issue 16).

A corrupt or tampered state either raises one ValueError naming the field and leaves the tracker
exactly as it was, or (a lossless change such as int64 stored as float64) loads and tracks on
exactly as the original would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ray_deepsort.core import DeepSORTTracker, Detections, InvalidTrackerState
from ray_deepsort.core.state import validate_state
from ray_deepsort.core.tracks import TrackState

DIM = 8
BUDGET = 4
FEATURES = np.eye(6, DIM, dtype=np.float32)  # one-hot "people"
State = dict[str, np.ndarray]


def make_tracker() -> DeepSORTTracker:
    # max_age = 2 frames: a person hidden for 3 frames becomes long-lost within the scene.
    return DeepSORTTracker(gallery_budget=BUDGET, lost_track_buffer=2)


def frame(i: int) -> tuple[Detections, np.ndarray]:
    """People 0-2 walk from frame 0; person 2 hides after frame 3 (long-lost from frame 7) and
    returns at frame 13; person 3 appears at frame 8 (confirmed at 10), person 4 at 10."""
    people = [0, 1]
    if i <= 3 or i >= 13:
        people.append(2)
    if i >= 8:
        people.append(3)
    if i >= 10:
        people.append(4)
    centres = np.array([[100.0 + 150 * p + 2 * i, 200.0 + 1.5 * i * (p % 2)] for p in people])
    half = np.array([20.0, 50.0])
    detections = Detections(
        xyxy=np.concatenate([centres - half, centres + half], axis=1),
        confidence=np.full(len(people), 0.9),
        class_id=np.zeros(len(people), np.int64),
    )
    return detections, FEATURES[people]


SAVED_AT = 11  # frames 0..10 run before the state is taken
FUTURE = range(SAVED_AT, SAVED_AT + 6)


def run(tracker: DeepSORTTracker, frames: range) -> list[list[int]]:
    out = []
    for i in frames:
        detections, embeddings = frame(i)
        out.append(tracker.update(detections, embeddings=embeddings, frame_index=i).tracker_id)
    return [ids.tolist() for ids in out]


def reference() -> tuple[State, list[list[int]]]:
    tracker = make_tracker()
    run(tracker, range(SAVED_AT))
    state = tracker.state_dict()
    return state, run(tracker, FUTURE)


STATE, EXPECTED = reference()


def fresh_state() -> State:
    return {key: value.copy() for key, value in STATE.items()}


def target() -> DeepSORTTracker:
    """A tracker already in some other state, so that "untouched" means something."""
    tracker = make_tracker()
    for i in range(4):
        detections, embeddings = frame(i)
        detections.xyxy += 37.0
        tracker.update(detections, embeddings=embeddings[:, ::-1].copy(), frame_index=100 + i)
    return tracker


def snapshot(tracker: DeepSORTTracker) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    return {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in tracker.state_dict().items()}


def test_scene_has_every_kind_of_track() -> None:
    tracker = make_tracker()
    run(tracker, range(SAVED_AT))
    store, slots = tracker.tracks, tracker.tracks.active()
    confirmed = store.confirmed[slots]
    long_lost = store.state(slots) == TrackState.LOST
    assert confirmed.sum() >= 3 and (~confirmed).any() and long_lost.any()
    assert (store.gallery.count[slots] == BUDGET).any() and (store.gallery.head[slots] > 0).any()
    assert (store.gallery.count[slots] < BUDGET).any()
    assert EXPECTED[-1][2] == 3  # person 2 came back with their ID: re-identification in play
    restored = make_tracker()
    restored.load_state_dict(fresh_state())
    assert run(restored, FUTURE) == EXPECTED


# ---------------------------------------------------------------------- property test
PER_TRACK = [
    "mean", "covariance", "confirmed", "hits", "age", "time_since_update", "track_id", "birth",
    "class_id", "last_xyah", "gallery_count", "gallery_head",
]  # fmt: skip
KINDS = ["truncate", "extend", "nan", "inf", "negate", "dtype", "drop", "shuffle"]
DTYPES = ["float64", "float32", "float16", "int64", "int32", "uint8", "bool", "str", "object"]


@st.composite
def alterations(draw: st.DrawFn) -> tuple[str, str, Any]:
    kind = draw(st.sampled_from(KINDS))
    key = draw(st.sampled_from(sorted(STATE)))
    detail: Any = None
    size = STATE[key].size
    if kind in ("nan", "inf"):
        detail = (draw(st.integers(0, max(size - 1, 0))), draw(st.booleans()))
    elif kind == "dtype":
        detail = draw(st.sampled_from(DTYPES))
    elif kind == "shuffle":
        detail = draw(st.permutations(range(len(STATE[key]) if STATE[key].ndim else 1)))
    elif kind == "extend":
        detail = draw(st.sampled_from(["copy", "zeros"]))
    return kind, key, detail


def alter(state: State, kind: str, key: str, detail: Any) -> dict[str, Any]:
    value = state[key]
    altered: dict[str, Any] = dict(state)
    if kind == "drop":
        del altered[key]
    elif kind == "truncate":
        altered[key] = value[:-1] if value.ndim else value.reshape(1)[:0]
    elif kind == "extend":
        row = value[-1:] if value.ndim and len(value) else value.reshape(1)
        extra = row if detail == "copy" else np.zeros_like(row)
        altered[key] = np.concatenate([value.reshape(-1, *value.shape[1:]), extra])
    elif kind in ("nan", "inf"):
        position, negative = detail
        changed = value.astype(np.float64).reshape(-1)
        if changed.size:
            changed[position] = np.nan if kind == "nan" else (-np.inf if negative else np.inf)
        altered[key] = changed.reshape(value.shape)
    elif kind == "negate":
        altered[key] = np.logical_not(value) if value.dtype == np.bool_ else -value
    elif kind == "dtype":
        with np.errstate(invalid="ignore", over="ignore"):
            altered[key] = value.astype(detail)
    elif kind == "shuffle":
        altered[key] = value[list(detail)] if value.ndim else value
    return altered


@settings(
    max_examples=500,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(alterations())
def test_altered_state_is_refused_untouched_or_tracks_identically(
    alteration: tuple[str, str, Any],
) -> None:
    kind, key, detail = alteration
    altered = alter(fresh_state(), kind, key, detail)
    tracker = target()
    before = snapshot(tracker)
    try:
        tracker.load_state_dict(altered)
    except ValueError as error:
        assert snapshot(tracker) == before, f"{alteration} changed the tracker: {error}"
        assert isinstance(error, InvalidTrackerState), repr(error)
        assert error.field in altered or error.field == key or kind == "drop", str(error)
        return
    output = run(tracker, FUTURE)  # nothing but ValueError may escape, here or above
    assert output == EXPECTED, f"{alteration} loaded and tracked differently"


def every_alteration() -> list[tuple[str, str, Any]]:
    """Each kind on each key, with a few positions and permutations: a fixed sweep."""
    rng = np.random.default_rng(0)
    out: list[tuple[str, str, Any]] = []
    for key, value in sorted(STATE.items()):
        rows = len(value) if value.ndim else 1
        positions = range(min(value.size, 3)) or [0]
        out += [("drop", key, None), ("truncate", key, None), ("negate", key, None)]
        out += [("extend", key, detail) for detail in ("copy", "zeros")]
        out += [(kind, key, (p, True)) for kind in ("nan", "inf") for p in positions]
        out += [("dtype", key, dtype) for dtype in DTYPES]
        out += [("shuffle", key, tuple(rng.permutation(rows))) for _ in range(3)]
    return out


def test_sweep_of_alterations_is_refused_untouched_or_tracks_identically() -> None:
    outcomes = {"refused": 0, "identical": 0}
    for alteration in every_alteration():
        kind, key, detail = alteration
        altered = alter(fresh_state(), kind, key, detail)
        tracker = target()
        before = snapshot(tracker)
        try:
            tracker.load_state_dict(altered)
        except ValueError as error:
            assert isinstance(error, InvalidTrackerState), repr(error)
            assert snapshot(tracker) == before, alteration
            outcomes["refused"] += 1
            continue
        output = run(tracker, FUTURE)
        assert output == EXPECTED, f"{alteration} loaded and tracked differently"
        outcomes["identical"] += 1
    assert outcomes["refused"] > 250 and outcomes["identical"] > 100, outcomes


# ---------------------------------------------------------------------- one check at a time
Mutation = Callable[[State], None]


def _set(key: str, value: Any) -> Mutation:
    def mutate(state: State) -> None:
        state[key] = np.asarray(value)

    return mutate


def _shorten(key: str) -> Mutation:
    def mutate(state: State) -> None:
        state[key] = state[key][:-1]

    return mutate


def _poke(key: str, index: tuple[int, ...], value: float) -> Mutation:
    def mutate(state: State) -> None:
        changed = state[key].astype(np.float64)
        changed[index] = value
        state[key] = changed

    return mutate


def _drop(key: str) -> Mutation:
    def mutate(state: State) -> None:
        del state[key]

    return mutate


def _confirmed_column(key: str, value: int) -> Mutation:
    """Set `key` of the first confirmed track."""

    def mutate(state: State) -> None:
        row = int(np.flatnonzero(state["confirmed"])[0])
        state[key] = state[key].copy()
        state[key][row] = value

    return mutate


def _tentative_column(key: str, value: int) -> Mutation:
    def mutate(state: State) -> None:
        row = int(np.flatnonzero(~state["confirmed"])[0])
        state[key] = state[key].copy()
        state[key][row] = value

    return mutate


def _swap_rows(key: str) -> Mutation:
    def mutate(state: State) -> None:
        state[key] = state[key][::-1].copy()

    return mutate


def _full_gallery(key: str, value: int) -> Mutation:
    def mutate(state: State) -> None:
        row = int(np.flatnonzero(state["gallery_count"] < BUDGET)[0])
        state[key] = state[key].copy()
        state[key][row] = value

    return mutate


def _covariance(matrix_change: Callable[[np.ndarray], None]) -> Mutation:
    def mutate(state: State) -> None:
        covariance = state["covariance"].copy()
        matrix_change(covariance[0])
        state["covariance"] = covariance

    return mutate


def _with_nan(features: np.ndarray) -> np.ndarray:
    changed = features.copy()
    changed[-1, 3] = np.nan
    return changed


def _asymmetric(c: np.ndarray) -> None:
    c[0, 1] += 1.0


def _indefinite(c: np.ndarray) -> None:
    c[0, 0] = -1.0


def _features(change: Callable[[np.ndarray], np.ndarray]) -> Mutation:
    def mutate(state: State) -> None:
        state["gallery_features"] = change(state["gallery_features"])

    return mutate


CASES: dict[str, tuple[Mutation, str, str]] = {
    # The 16 alterations tried in the issue (13 loaded silently, 2 raised bare errors).
    **{
        f"shortened-{key}": (_shorten(key), key, "has \\d+ rows, the other per-track")
        for key in [
            "mean",
            "covariance",
            "confirmed",
            "hits",
            "age",
            "time_since_update",
            "birth",
            "class_id",
            "gallery_head",
            "gallery_count",
            "track_id",
            "last_xyah",
        ]
    },
    "nan-mean": (_poke("mean", (0, 1), np.nan), "mean", "NaN or inf"),
    "nan-covariance": (_poke("covariance", (0, 2, 2), np.nan), "covariance", "NaN or inf"),
    "inf-last_xyah": (_poke("last_xyah", (1, 0), np.inf), "last_xyah", "NaN or inf"),
    "missing-key": (_drop("hits"), "hits", "missing key"),
    "missing-format": (_drop("format_version"), "format_version", "missing key"),
    "negative-frame_count": (_set("frame_count", -1), "frame_count", "must be >= 0"),
    "negative-next_track_id": (_set("next_track_id", -3), "next_track_id", "must be >= 1"),
    "negative-next_birth": (_set("next_birth", -1), "next_birth", "must be >= 0"),
    "negative-hits": (_confirmed_column("hits", -2), "hits", "must be >= 1"),
    "negative-age": (_confirmed_column("age", -2), "age", "must be >= 1"),
    "negative-since": (
        _confirmed_column("time_since_update", -1),
        "time_since_update",
        "must be >= 0",
    ),
    "since-beyond-age": (
        _confirmed_column("time_since_update", 10**6),
        "time_since_update",
        "exceeds",
    ),
    "tentative-missed": (
        _tentative_column("time_since_update", 1),
        "time_since_update",
        "tentative",
    ),
    # Format and scalars.
    "unknown-format": (_set("format_version", 4), "format_version", "unsupported"),
    "other-budget": (
        _set("gallery_budget", 100),
        "gallery_budget",
        "gallery_budget=100, this tracker has 4",
    ),
    "scalar-as-array": (_set("frame_count", [1, 2]), "frame_count", "single value"),
    "last_frame_index": (_set("last_frame_index", -2), "last_frame_index", ">= -1"),
    "last_timestamp-inf": (_set("last_timestamp", np.inf), "last_timestamp", "finite or NaN"),
    "threshold-zero": (_set("appearance_threshold", 0.0), "appearance_threshold", "positive"),
    "threshold-nan": (_set("appearance_threshold", np.nan), "appearance_threshold", "positive"),
    # Shapes.
    "mean-shape": (_set("mean", np.zeros((5, 4))), "mean", "shape \\[N, 8\\]"),
    "covariance-shape": (_set("covariance", np.zeros((5, 4, 4))), "covariance", "N, 8, 8"),
    "last_xyah-shape": (_set("last_xyah", np.zeros((5, 8))), "last_xyah", "N, 4"),
    "column-as-scalar": (_set("hits", 3), "hits", "shape \\[N\\]"),
    "gallery-dim": (_set("gallery_dim", 7), "gallery_features", "sum\\(gallery_count\\), 7"),
    "gallery-rows": (_features(lambda f: f[:-1]), "gallery_features", "gallery_count sums to"),
    # Values.
    "asymmetric-covariance": (_covariance(_asymmetric), "covariance", "not symmetric"),
    "indefinite-covariance": (_covariance(_indefinite), "covariance", "semi-definite"),
    "nan-gallery": (_features(_with_nan), "gallery_features", "NaN or inf"),
    "scaled-gallery": (_features(lambda f: 2 * f), "gallery_features", "gallery_fingerprint"),
    "gallery-as-float64": (
        _features(lambda f: f.astype(np.float64)),
        "gallery_features",
        "float32 or float16 \\(as saved\\), got float64",
    ),
    "fingerprint-missing": (_drop("gallery_fingerprint"), "gallery_fingerprint", "missing key"),
    "fingerprint-short": (_shorten("gallery_fingerprint"), "gallery_fingerprint", "rows"),
    "negative-box": (_poke("last_xyah", (0, 3), -5.0), "last_xyah", "positive"),
    # IDs and births.
    "duplicate-id": (_confirmed_column("track_id", 2), "track_id", "not unique"),
    "id-beyond-next": (_confirmed_column("track_id", 99), "track_id", "next_track_id"),
    "id-zero": (_confirmed_column("track_id", 0), "track_id", "next_track_id"),
    "tentative-with-id": (_tentative_column("track_id", 7), "track_id", "-1"),
    "ids-out-of-order": (_swap_rows("track_id"), "track_id", "unconfirmed|increase"),
    "birth-beyond-next": (_confirmed_column("birth", 99), "birth", "next_birth"),
    "duplicate-birth": (_tentative_column("birth", 0), "birth", "not unique"),
    "births-out-of-order": (_swap_rows("birth"), "birth", "creation order"),
    # Galleries.
    "count-over-budget": (_full_gallery("gallery_count", BUDGET + 1), "gallery_count", "budget"),
    "negative-count": (_full_gallery("gallery_count", -1), "gallery_count", "budget"),
    "head-at-budget": (_full_gallery("gallery_head", BUDGET), "gallery_head", "budget"),
    "head-off-count": (_full_gallery("gallery_head", 0), "gallery_head", "equal gallery_count"),
    # Dtypes.
    "fractional-hits": (_poke("hits", (0,), 2.5), "hits", "non-integral"),
    "nan-as-int": (_poke("track_id", (0,), np.nan), "track_id", "NaN or inf where integers"),
    "huge-uint": (
        _set("next_birth", np.asarray(2**64 - 1, np.uint64)),
        "next_birth",
        "beyond int64",
    ),
    "bool-as-two": (_poke("confirmed", (0,), 2.0), "confirmed", "boolean"),
    "string-dtype": (
        lambda s: s.__setitem__("age", s["age"].astype(str)),
        "age",
        "not a real number",
    ),
    "object-dtype": (
        lambda s: s.__setitem__("mean", s["mean"].astype(object)),
        "mean",
        "not a real number",
    ),
    "ragged": (lambda s: s.__setitem__("hits", [[1], [1, 2]]), "hits", "not an array"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_check_names_the_field_and_leaves_the_tracker_untouched(case: str) -> None:
    mutate, field, message = CASES[case]
    state = fresh_state()
    mutate(state)
    tracker = target()
    before = snapshot(tracker)
    with pytest.raises(InvalidTrackerState, match=message) as raised:
        tracker.load_state_dict(state)
    assert raised.value.field == field
    assert f"{field}:" in str(raised.value)
    assert snapshot(tracker) == before
    assert run(tracker, range(104, 106))  # and it still tracks


def test_refusals_are_value_errors() -> None:
    state = fresh_state()
    del state["mean"]
    with pytest.raises(ValueError, match="mean: missing key"):
        make_tracker().load_state_dict(state)
    with pytest.raises(ValueError, match="must be a mapping"):
        make_tracker().load_state_dict([1, 2])  # type: ignore[arg-type]


def test_lossless_dtype_changes_load_and_track_identically() -> None:
    state = fresh_state()
    for key in ("hits", "age", "track_id", "birth", "frame_count", "next_track_id"):
        state[key] = state[key].astype(np.float64)
    state["confirmed"] = state["confirmed"].astype(np.uint8)
    state["gallery_count"] = state["gallery_count"].astype(np.int16)
    state["format_version"] = np.asarray([3])  # one-element arrays count as scalars
    tracker = target()
    tracker.load_state_dict(state)
    assert run(tracker, FUTURE) == EXPECTED


def test_validated_state_is_canonical() -> None:
    clean = validate_state(fresh_state(), BUDGET)
    assert clean["hits"].dtype == np.int64 and clean["confirmed"].dtype == np.bool_
    assert isinstance(clean["frame_count"], int) and clean["frame_count"] == SAVED_AT


def test_version_1_state_is_validated_too() -> None:
    state = {
        k: v for k, v in fresh_state().items() if k not in ("last_xyah", "appearance_threshold")
    }
    state["format_version"] = np.asarray(1)
    make_tracker().load_state_dict(dict(state))  # loads
    state["mean"] = state["mean"][:-1]
    tracker = target()
    before = snapshot(tracker)
    with pytest.raises(InvalidTrackerState, match="mean: has"):
        tracker.load_state_dict(state)
    assert snapshot(tracker) == before


def test_empty_tracker_state_round_trips() -> None:
    tracker = make_tracker()
    tracker.load_state_dict(DeepSORTTracker(gallery_budget=BUDGET).state_dict())
    assert len(tracker.tracks) == 0 and tracker.next_track_id == 1


@pytest.mark.parametrize(
    "alter",
    [
        pytest.param(lambda s: s.__setitem__("mean", s["mean"][::-1].copy()), id="rows-swapped"),
        pytest.param(lambda s: s.__setitem__("hits", s["hits"] + 1), id="hits-plus-one"),
        pytest.param(
            lambda s: s.__setitem__("gallery_fingerprint", -s["gallery_fingerprint"]),
            id="fingerprint-negated",
        ),
        pytest.param(lambda s: s.pop("state_checksum"), id="checksum-dropped"),
    ],
)
def test_well_formed_but_altered_state_fails_its_checksum(alter: Callable[[State], Any]) -> None:
    """Swapped rows, shifted counters or negated features still look like a valid state: only
    the checksum saved with it tells, and the tracker is left untouched."""
    state = fresh_state()
    alter(state)
    tracker = target()
    before = snapshot(tracker)
    with pytest.raises(InvalidTrackerState, match="state_checksum"):
        tracker.load_state_dict(state)
    assert snapshot(tracker) == before


def test_checksum_problems_name_the_field_and_say_what_happened() -> None:
    state = fresh_state()
    del state["state_checksum"]
    with pytest.raises(InvalidTrackerState) as missing:
        target().load_state_dict(state)
    assert (missing.value.field, missing.value.problem) == ("state_checksum", "missing key")
    state = fresh_state()
    state["hits"] = state["hits"] + 1
    with pytest.raises(InvalidTrackerState) as changed:
        target().load_state_dict(state)
    assert changed.value.field == "state_checksum"
    assert changed.value.problem.startswith("does not match the state's arrays")
    assert "storage fault, partial copy or hand edit" in str(changed.value)


def test_lossless_cast_keeps_the_checksum() -> None:
    state = fresh_state()
    state["hits"] = state["hits"].astype(np.float64)
    state["age"] = state["age"].astype(np.float32)
    tracker = target()
    tracker.load_state_dict(state)
    assert run(tracker, FUTURE) == EXPECTED


def _set(key: str, index: Any, value: Any) -> Callable[[State], None]:
    def alter(state: State) -> None:
        array = state[key].copy()
        array[index] = value
        state[key] = array

    return alter


@pytest.mark.parametrize(
    ("alter", "field", "problem"),
    [
        pytest.param(_set("track_id", 3, 5), "track_id", "", id="id-equals-next_track_id"),
        pytest.param(_set("birth", 4, 5), "birth", "", id="birth-equals-next_birth"),
        pytest.param(_set("birth", 2, 1), "birth", "births are not unique", id="birth-repeated"),
        pytest.param(
            _set("birth", slice(2, 4), [3, 2]),
            "birth",
            "tracks are not in creation order",
            id="births-out-of-order",
        ),
        pytest.param(
            _set("track_id", 1, 1), "track_id", "confirmed IDs are not unique", id="id-repeated"
        ),
        pytest.param(
            _set("track_id", slice(0, 2), [2, 1]),
            "track_id",
            "confirmed IDs do not increase with birth",
            id="ids-against-birth",
        ),
        pytest.param(
            _set("track_id", 4, 4),
            "track_id",
            "unconfirmed tracks must have track_id -1",
            id="tentative-with-id",
        ),
        pytest.param(
            _set("time_since_update", 3, 4),
            "time_since_update",
            "exceeds the track's age",
            id="missed-longer-than-alive",
        ),
        pytest.param(_set("last_xyah", (0, 2), 0.0), "last_xyah", "", id="last-aspect-zero"),
        pytest.param(
            lambda s: s.__setitem__("hits", s["hits"] + np.array([0.5, 0, 0, 0, 0])),
            "hits",
            "holds non-integral values where integers are expected",
            id="fractional-hits",
        ),
        pytest.param(
            lambda s: s.__setitem__("hits", s["hits"].astype(np.float64) * [np.nan, 1, 1, 1, 1]),
            "hits",
            "holds NaN or inf where integers are expected",
            id="nan-hits",
        ),
        pytest.param(
            lambda s: s.__setitem__("age", s["age"].astype(np.float64) * [2.0**63, 1, 1, 1, 1]),
            "age",
            "holds values beyond int64",
            id="age-beyond-int64",
        ),
        pytest.param(
            lambda s: s.__setitem__("age", s["age"].astype(np.uint64) + np.uint64(2**63)),
            "age",
            "holds values beyond int64",
            id="unsigned-age-beyond-int64",
        ),
    ],
)
def test_boundaries_are_refused_naming_field_and_problem(
    alter: Callable[[State], Any], field: str, problem: str
) -> None:
    state = fresh_state()
    alter(state)
    tracker = target()
    before = snapshot(tracker)
    with pytest.raises(InvalidTrackerState) as refused:
        tracker.load_state_dict(state)
    assert refused.value.field == field, refused.value
    assert problem in refused.value.problem
    assert snapshot(tracker) == before
