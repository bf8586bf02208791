"""`TrackStore` capacity management, gap prediction, eviction ties and revival edge cases."""

from __future__ import annotations

import numpy as np

from ray_deepsort.core import Detections, KalmanFilter
from ray_deepsort.core.boxes import valid_box_mask
from ray_deepsort.core.frame_detections import FrameDetections
from ray_deepsort.core.nn_matching import AppearanceGallery
from ray_deepsort.core.tracks import Lifecycle, TrackState, TrackStore

KF = KalmanFilter()
NONE = np.zeros(0, np.int64)


def frame(
    count: int, confidence: float | np.ndarray = 0.9, without_feature: tuple[int, ...] = ()
) -> FrameDetections:
    """`count` boxes 200 px apart, each with a distinct random feature except `without_feature`."""
    x = 100.0 + 200.0 * np.arange(count)
    xyxy = np.stack([x, np.full(count, 100.0), x + 40, np.full(count, 200.0)], axis=1)
    detections = Detections(xyxy=xyxy, confidence=np.broadcast_to(confidence, count))
    features = np.random.default_rng(count).normal(size=(count, 8)).astype(np.float32)
    features[list(without_feature)] = 0.0
    return FrameDetections.from_detections(detections, valid_box_mask(xyxy), features)


def store(
    capacity: int = 16,
    max_capacity: int | None = None,
    max_age: int = 1,
    reid_window_seconds: float = 100.0,
    max_lost_tracks: int = 100,
) -> TrackStore:
    lifecycle = Lifecycle(
        minimum_consecutive_frames=1,
        max_age=max_age,
        frame_rate=10.0,
        reid_window_seconds=reid_window_seconds,
        max_lost_tracks=max_lost_tracks,
    )
    gallery = AppearanceGallery(budget=4)
    return TrackStore(gallery, lifecycle, capacity=capacity, max_capacity=max_capacity)


def start_confirmed(tracks: TrackStore, detections: FrameDetections, first_birth: int = 0):
    slots, _ = tracks.start(detections, np.arange(len(detections)), KF, first_birth)
    tracks.confirm(slots, first_id=first_birth + 1)
    return slots


def step(tracks: TrackStore, hit: np.ndarray = NONE) -> None:
    """One frame: predict every track, hit `hit` (each with its own box again), miss the rest."""
    slots = tracks.active()
    tracks.predict(slots, KF, 1)
    if len(hit):
        detections = frame(int(tracks.birth[hit].max()) + 1)
        tracks.mark_hit(hit, detections, tracks.birth[hit], KF)
    tracks.mark_missed(slots[~np.isin(slots, hit)])


def test_start_fills_free_slots_before_growing_and_then_doubles() -> None:
    """Exactly enough free slots is enough; when short, capacity doubles."""
    tracks = store(capacity=4)
    start_confirmed(tracks, frame(4))
    assert tracks.capacity == 4 and len(tracks) == 4
    tracks.start(frame(5), np.array([4]), KF, first_birth=4)
    assert tracks.capacity == 8 and len(tracks) == 5


def test_compact_shrinks_to_twice_the_live_tracks_and_keeps_them() -> None:
    tracks = store(capacity=64)
    start_confirmed(tracks, frame(11))
    ids = tracks.track_id[tracks.active()].tolist()
    tracks.compact()
    assert tracks.capacity == 22  # 11 of 64 live: fewer than a quarter
    assert len(tracks) == 11 and len(tracks.gallery.count) == 22
    assert tracks.track_id[tracks.active()].tolist() == ids
    assert (tracks.state(tracks.active()) == TrackState.CONFIRMED).all()


def test_compact_leaves_a_store_a_quarter_full_alone() -> None:
    """Shrinking only happens below a quarter, so a steady crowd is not copied every frame."""
    tracks = store(capacity=64)
    start_confirmed(tracks, frame(16))
    tracks.compact()
    assert tracks.capacity == 64 and len(tracks) == 16


def test_a_long_gap_predicts_max_age_plus_one_steps_of_uncertainty() -> None:
    """The covariance, not only the mean, must reflect exactly max_age + 1 predicted frames."""
    tracks = store(max_age=2)
    (slot,) = start_confirmed(tracks, frame(1))
    mean, covariance = tracks.mean[[slot]], tracks.covariance[[slot]]
    tracks.predict(tracks.active(), KF, 7)
    expected_mean, expected_covariance = KF.predict(mean, covariance, 3)
    np.testing.assert_array_equal(tracks.mean[[slot]], expected_mean)
    np.testing.assert_array_equal(tracks.covariance[[slot]], expected_covariance)


def test_start_when_full_evicts_only_as_many_lost_tracks_as_needed() -> None:
    tracks = store(max_capacity=4)
    older, newer, kept = start_confirmed(tracks, frame(3))
    step(tracks, np.array([newer, kept]))
    step(tracks, np.array([kept]))
    step(tracks, np.array([kept]))
    assert tracks.state(np.array([older, newer, kept])).tolist() == [
        TrackState.LOST,
        TrackState.LOST,
        TrackState.CONFIRMED,
    ]
    _, rows = tracks.start(frame(2), np.arange(2), KF, first_birth=3)
    assert rows.tolist() == [0, 1] and len(tracks) == 4
    assert tracks.lost().tolist() == [newer]  # the one lost longest made room; one was free


def test_start_when_full_drops_the_least_confident_ties_in_detection_order() -> None:
    """Rows of equal confidence start in the order the detector gave them."""
    tracks = store(max_capacity=12)
    confidence = np.full(30, 0.5, np.float32)
    high = np.array([3, 8, 11, 17, 22, 25, 27, 29])
    confidence[high] = 0.9
    _, rows = tracks.start(frame(30, confidence), np.arange(30), KF, first_birth=0)
    low_first = np.setdiff1d(np.arange(30), high)[:4]  # 12 - 8 rows of 0.5 fit: the first
    assert rows.tolist() == sorted([*high.tolist(), *low_first.tolist()])
    assert len(tracks) == 12


def test_evicting_lost_tracks_breaks_ties_by_age() -> None:
    """Among tracks lost equally long, the oldest go first, whatever their number."""
    tracks = store(max_age=1, max_lost_tracks=5)
    slots = start_confirmed(tracks, frame(20))
    odd = slots[1::2]
    step(tracks, odd)  # even tracks missed once
    step(tracks)  # even tracks lost (10 > 5 kept: the 5 oldest go), odd missed once
    step(tracks)  # odd tracks lost too: 5 even (lost longer) + 10 odd, 5 kept
    kept = tracks.lost()
    assert kept.tolist() == odd[5:].tolist()


def test_revive_adds_features_only_from_finders_that_have_some() -> None:
    """A finder without any feature must not hand another finder's feature to its lost track."""
    tracks = store(max_age=1)
    lost = start_confirmed(tracks, frame(2))
    step(tracks)
    step(tracks)
    assert tracks.lost().tolist() == lost.tolist()
    before = tracks.gallery.count[lost].tolist()
    found, _ = tracks.start(frame(2, without_feature=(0,)), np.arange(2), KF, first_birth=2)
    assert tracks.gallery.count[found].tolist() == [0, 1]
    tracks.revive(lost, found)
    assert tracks.gallery.count[lost].tolist() == [before[0], before[1] + 1]
    assert tracks.state(found).tolist() == [TrackState.DELETED, TrackState.DELETED]
