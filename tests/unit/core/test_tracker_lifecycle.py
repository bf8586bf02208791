"""Track lifecycle (`core/tracks.py`): every transition between `TrackState`s, driven through
`TrackStore`'s public methods the way the tracker drives them each frame."""

import numpy as np

from ray_deepsort.core import Detections, KalmanFilter
from ray_deepsort.core.boxes import valid_box_mask
from ray_deepsort.core.frame_detections import FrameDetections
from ray_deepsort.core.nn_matching import AppearanceGallery
from ray_deepsort.core.tracks import Lifecycle, TrackState, TrackStore

TENTATIVE, CONFIRMED, LOST, DELETED = TrackState
KF = KalmanFilter()
NONE = np.zeros(0, np.int64)


def frame(count: int, confidence=0.9, features: bool = True) -> FrameDetections:
    """`count` boxes 200 px apart, with one-hot features unless `features` is False."""
    x = 100.0 + 200.0 * np.arange(count)
    xyxy = np.stack([x, np.full(count, 100.0), x + 40, np.full(count, 200.0)], axis=1)
    detections = Detections(
        xyxy=xyxy, confidence=np.broadcast_to(confidence, count), class_id=np.arange(count)
    )
    embeddings = np.eye(count, 8, dtype=np.float32) if features else None
    return FrameDetections.from_detections(detections, valid_box_mask(xyxy), embeddings)


def store(
    minimum_consecutive_frames: int = 3,
    max_age: int = 2,
    reid_window_seconds: float = 0.0,
    max_lost_tracks: int = 10,
    max_capacity: int | None = None,
) -> TrackStore:
    lifecycle = Lifecycle(
        minimum_consecutive_frames=minimum_consecutive_frames,
        max_age=max_age,
        frame_rate=10.0,
        reid_window_seconds=reid_window_seconds,
        max_lost_tracks=max_lost_tracks,
    )
    return TrackStore(AppearanceGallery(budget=5), lifecycle, max_capacity=max_capacity)


def start(tracks: TrackStore, detections: FrameDetections, first_birth: int = 0) -> np.ndarray:
    slots, rows = tracks.start(detections, np.arange(len(detections)), KF, first_birth)
    assert rows.tolist() == list(range(len(detections)))
    return slots


def step(
    tracks: TrackStore, hit: np.ndarray = NONE, detections: FrameDetections | None = None
) -> np.ndarray:
    """One frame: predict every track, hit `hit` with rows 0.. of `detections`, miss the rest;
    returns the tentative tracks now due for confirmation."""
    slots = tracks.active()
    tracks.predict(slots, KF, 1)
    ready = NONE
    if len(hit):
        assert detections is not None
        ready = tracks.mark_hit(hit, detections, np.arange(len(hit)), KF)
    tracks.mark_missed(slots[~np.isin(slots, hit)])
    return ready


def confirmed_track(tracks: TrackStore, features: bool = True) -> int:
    (slot,) = start(tracks, frame(1, features=features))
    for _ in range(tracks.lifecycle.minimum_consecutive_frames - 1):
        step(tracks, np.array([slot]), frame(1, features=features))
    tracks.confirm(np.array([slot]), first_id=1)
    assert states(tracks, [slot]) == [CONFIRMED]
    return int(slot)


def states(tracks: TrackStore, slots) -> list[TrackState]:
    return [TrackState(s) for s in tracks.state(np.asarray(slots, np.int64))]


def test_started_tracks_are_tentative_without_an_id_in_birth_order() -> None:
    tracks = store()
    detections = frame(3)
    slots = start(tracks, detections, first_birth=5)
    assert states(tracks, slots) == [TENTATIVE] * 3
    assert tracks.birth[slots].tolist() == [5, 6, 7] and tracks.active().tolist() == slots.tolist()
    assert tracks.hits[slots].tolist() == [1, 1, 1] and tracks.track_id[slots].tolist() == [-1] * 3
    assert tracks.class_id[slots].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(tracks.last_xyah[slots], detections.xyah)
    assert tracks.gallery.count[slots].tolist() == [1, 1, 1]
    assert states(tracks, [tracks.capacity - 1]) == [DELETED]  # a free slot


def test_start_keeps_unusable_features_out_of_the_gallery() -> None:
    xyxy = np.array([[0, 0, 10, 20], [50, 0, 60, 20], [90, 0, 99, 20]], np.float32)
    embeddings = np.array([[1, 0], [np.nan, 1], [0, 0]], np.float32)
    detections = FrameDetections.from_detections(
        Detections(xyxy=xyxy), valid_box_mask(xyxy), embeddings
    )
    assert detections.has_feature.tolist() == [True, False, False]
    tracks = store()
    slots = start(tracks, detections)
    assert tracks.gallery.count[slots].tolist() == [1, 0, 0]


def test_tentative_track_is_confirmed_after_minimum_consecutive_hits() -> None:
    tracks = store(minimum_consecutive_frames=3)
    (slot,) = start(tracks, frame(1))
    assert step(tracks, np.array([slot]), frame(1)).tolist() == []  # 2 hits
    assert step(tracks, np.array([slot]), frame(1)).tolist() == [slot]  # 3 hits: due
    assert states(tracks, [slot]) == [TENTATIVE]  # until confirmed
    assert tracks.confirm(np.array([slot]), first_id=7) == 8
    assert states(tracks, [slot]) == [CONFIRMED] and tracks.track_id[slot] == 7
    assert step(tracks, np.array([slot]), frame(1)).tolist() == []  # confirmed once only


def test_confirm_numbers_tracks_in_creation_order_not_slot_order() -> None:
    tracks = store(minimum_consecutive_frames=1)
    first, second = start(tracks, frame(2), first_birth=0)
    tracks.delete(np.array([first]))
    (third,) = start(tracks, frame(1), first_birth=2)
    assert third == first  # the freed slot is reused by a younger track
    assert tracks.confirm(np.array([third, second]), first_id=1) == 3
    assert tracks.track_id[[second, third]].tolist() == [1, 2]


def test_tentative_track_is_deleted_on_its_first_miss() -> None:
    tracks = store()
    (slot,) = start(tracks, frame(1))
    step(tracks, np.array([slot]), frame(1))
    step(tracks)
    assert states(tracks, [slot]) == [DELETED] and len(tracks) == 0
    assert tracks.gallery.count[slot] == 0


def test_confirmed_track_survives_max_age_misses_then_is_deleted_without_reid() -> None:
    tracks = store(max_age=2, reid_window_seconds=0.0)
    slot = confirmed_track(tracks)
    for _ in range(2):
        step(tracks)
        assert states(tracks, [slot]) == [CONFIRMED]
    step(tracks)
    assert states(tracks, [slot]) == [DELETED]


def test_confirmed_track_missed_past_max_age_becomes_lost_and_stops_moving() -> None:
    tracks = store(max_age=2, reid_window_seconds=1.0)
    slot = confirmed_track(tracks)
    for _ in range(3):
        step(tracks)
    assert states(tracks, [slot]) == [LOST] and tracks.lost().tolist() == [slot]
    mean = tracks.mean[slot].copy()
    assert tracks.predict(tracks.active(), KF, 1).tolist() == []  # not tracked any more
    np.testing.assert_array_equal(tracks.mean[slot], mean)
    assert tracks.time_since_update[slot] == 4  # but its misses are still counted


def test_a_track_without_features_is_deleted_rather_than_lost() -> None:
    tracks = store(max_age=2, reid_window_seconds=1.0)
    slot = confirmed_track(tracks, features=False)
    for _ in range(3):
        step(tracks)
    assert states(tracks, [slot]) == [DELETED]


def test_lost_track_is_deleted_when_the_reid_window_closes() -> None:
    tracks = store(max_age=2, reid_window_seconds=0.5)  # 5 frames at 10 fps
    slot = confirmed_track(tracks)
    for _ in range(5):
        step(tracks)
    assert states(tracks, [slot]) == [LOST]
    step(tracks)
    assert states(tracks, [slot]) == [DELETED]


def test_a_gap_counts_its_frames_as_misses_and_predicts_at_most_max_age_plus_one() -> None:
    tracks = store(max_age=2, reid_window_seconds=1.0)
    slot = confirmed_track(tracks)
    mean, covariance = tracks.mean[[slot]], tracks.covariance[[slot]]
    slots = tracks.active()
    assert tracks.predict(slots, KF, 7).tolist() == [slot]
    tracks.mark_missed(slots)
    assert tracks.time_since_update[slot] == 7 and states(tracks, [slot]) == [LOST]
    np.testing.assert_array_equal(tracks.mean[[slot]], KF.predict(mean, covariance, 3)[0])


def test_lost_tracks_beyond_max_lost_tracks_go_lost_longest_first() -> None:
    tracks = store(
        max_age=1, reid_window_seconds=10.0, max_lost_tracks=1, minimum_consecutive_frames=1
    )
    older, newer = start(tracks, frame(2))
    tracks.confirm(np.array([older, newer]), first_id=1)
    step(tracks, np.array([newer]), frame(1))  # `older` missed once
    assert states(tracks, [older, newer]) == [CONFIRMED, CONFIRMED]
    step(tracks)  # `older` missed twice: lost; `newer` once
    assert states(tracks, [older, newer]) == [LOST, CONFIRMED]
    step(tracks)  # both lost: only one is kept, the one lost most recently
    assert states(tracks, [older, newer]) == [DELETED, LOST]


def test_revive_hands_a_lost_track_the_state_of_the_track_that_found_it() -> None:
    tracks = store(max_age=1, reid_window_seconds=10.0)
    lost = confirmed_track(tracks)
    for _ in range(2):
        step(tracks)
    assert states(tracks, [lost]) == [LOST]
    (found,) = start(tracks, frame(1), first_birth=1)
    ready = step(tracks, np.array([found]), frame(1))
    ready = step(tracks, np.array([found]), frame(1))
    assert ready.tolist() == [found]
    state = {c: getattr(tracks, c)[found].copy() for c in ("mean", "covariance", "last_xyah")}
    hits, features = int(tracks.hits[lost]), int(tracks.gallery.count[lost])
    tracks.revive(np.array([lost]), ready)
    assert states(tracks, [lost, found]) == [CONFIRMED, DELETED]
    assert tracks.track_id[lost] == 1 and tracks.time_since_update[lost] == 0
    assert tracks.hits[lost] == hits + 3 and tracks.gallery.count[lost] == min(features + 3, 5)
    for column, value in state.items():
        np.testing.assert_array_equal(getattr(tracks, column)[lost], value, err_msg=column)


def test_start_when_full_evicts_lost_tracks_then_drops_the_least_confident() -> None:
    tracks = store(
        max_age=1, reid_window_seconds=10.0, minimum_consecutive_frames=1, max_capacity=3
    )
    lost, kept = start(tracks, frame(2))
    tracks.confirm(np.array([lost, kept]), first_id=1)
    step(tracks, np.array([kept]), frame(1))
    step(tracks, np.array([kept]), frame(1))
    assert states(tracks, [lost, kept]) == [LOST, CONFIRMED]
    detections = frame(3, confidence=np.array([0.5, 0.9, 0.7], np.float32))
    slots, rows = tracks.start(detections, np.arange(3), KF, first_birth=2)
    assert rows.tolist() == [1, 2] and len(tracks) == 3  # the lost track made room for one
    assert lost in slots.tolist()  # its slot was freed and reused
    assert states(tracks, [kept, *slots]) == [CONFIRMED, TENTATIVE, TENTATIVE]
    assert tracks.lost().tolist() == []
