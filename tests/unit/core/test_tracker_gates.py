"""Tight tests of the association gates, the matching cascade and the appearance galleries.

Each test is built so that the behaviour it names is what decides the outcome, and probes it at
its edge: the Mahalanobis gate just inside and just outside its χ² threshold in both gate modes
(with the detection overlapping the prediction, so IoU alone would allow the match), the cascade
on a scene where plain Hungarian matching picks the other track, the gallery budget by count and
by which features are kept, and embeddings that must not enter a gallery.
"""

from __future__ import annotations

import numpy as np
import pytest

from ray_deepsort.core import DeepSORTTracker, Detections
from ray_deepsort.core.boxes import iou_matrix, xyah_to_xyxy
from ray_deepsort.core.nn_matching import l2_normalize

CHI2_2DOF = 5.9915  # χ²₀.₉₅, 2 degrees of freedom (box centre)
CHI2_4DOF = 9.4877  # χ²₀.₉₅, 4 degrees of freedom (centre, aspect, height)
MARGIN = 1e-3  # probes at threshold * (1 -/+ MARGIN)


def box(cx: float, cy: float, w: float = 100.0, h: float = 100.0) -> np.ndarray:
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def dets(xyxy) -> Detections:
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    n = len(xyxy)
    return Detections(xyxy=xyxy, confidence=np.full(n, 0.9), class_id=np.zeros(n, np.int64))


def slot_of(tracker: DeepSORTTracker, track_id: int) -> int:
    slots = tracker.tracks.active()
    (slot,) = slots[tracker.tracks.track_id[slots] == track_id]
    return int(slot)


# ----------------------------------------------------------------------------- Mahalanobis gate


def tracker_with_missed_track(**kwargs) -> DeepSORTTracker:
    """One confirmed track (ID 1, a 200x100 box standing still), missed on the last frame.

    Missed once, the track is matched only by the cascade on the next frame (the IoU stage takes
    only tracks seen on the frame before), so the Mahalanobis gate decides.
    """
    tracker = DeepSORTTracker(**kwargs)
    for _ in range(5):
        out = tracker.update(dets(box(300.0, 300.0, w=200.0)))
    assert out.tracker_id.tolist() == [1]
    tracker.update(Detections.empty())
    return tracker


def probe(tracker: DeepSORTTracker, direction, target: float, position_only: bool):
    """Detection xyah at squared Mahalanobis distance `target` from the track's prediction for
    the next frame, along `direction` (xyah); also the predicted box. The distance is computed
    here from `project`'s innovation covariance, not by the tracker's `gating_distance`."""
    slot = slot_of(tracker, 1)
    kf, store = tracker.kalman_filter, tracker.tracks
    mean, cov = kf.predict(store.mean[[slot]], store.covariance[[slot]], 1)
    z, s = kf.project(mean, cov)
    z, s = z[0], s[0]
    u = np.asarray(direction, np.float64)
    dims = slice(0, 2) if position_only else slice(0, 4)
    unit = u[dims] @ np.linalg.solve(s[dims, dims], u[dims])
    xyah = z + np.sqrt(target / unit) * u
    # The tracker agrees on the distance (to 1e-9), so the probe sits where it is meant to.
    measured = kf.gating_distance(mean, cov, xyah[None], position_only)[0, 0]
    assert measured == pytest.approx(target, rel=1e-9)
    return xyah, xyah_to_xyxy(z)[0]


def probe_match(
    tracker: DeepSORTTracker, direction, target: float, position_only: bool
) -> tuple[int, float]:
    """(tracker_id the probe detection gets, its IoU with the predicted box)."""
    xyah, predicted = probe(tracker, direction, target, position_only)
    detection = xyah_to_xyxy(xyah)[0]
    overlap = float(iou_matrix(predicted[None], detection[None])[0, 0])
    return int(tracker.update(dets(detection)).tracker_id[0]), overlap


CENTRE_DIRECTION = (1.0, 0.6, 0.0, 0.0)  # diagonal shift of the centre
# Mostly a change of height, with a small shift: outside the 4-dof gate while the centre alone
# is well inside the 2-dof one, so a 4-dof gate that looks only at the centre lets it in.
SHAPE_DIRECTION = (0.1, 0.0, 0.0, 1.0)


@pytest.mark.parametrize(("factor", "expected"), [(1 - MARGIN, 1), (1 + MARGIN, -1)])
def test_default_gate_is_the_2dof_chi2_on_the_box_centre(factor: float, expected: int) -> None:
    tracker = tracker_with_missed_track()
    assert tracker.gate_position_only
    got, overlap = probe_match(tracker, CENTRE_DIRECTION, CHI2_2DOF * factor, True)
    assert overlap >= tracker.minimum_iou_threshold + 0.1  # IoU alone would allow the match
    assert got == expected


def test_default_gate_ignores_aspect_and_height() -> None:
    """Position-only: a shape change far outside the 4-dof gate still matches."""
    tracker = tracker_with_missed_track()
    xyah, predicted = probe(tracker, SHAPE_DIRECTION, 1.5 * CHI2_4DOF, False)
    # Same probe, but the centre only: comfortably inside the 2-dof gate.
    slot = slot_of(tracker, 1)
    kf, store = tracker.kalman_filter, tracker.tracks
    mean, cov = kf.predict(store.mean[[slot]], store.covariance[[slot]], 1)
    assert kf.gating_distance(mean, cov, xyah[None], True)[0, 0] < 0.5 * CHI2_2DOF
    assert iou_matrix(predicted[None], xyah_to_xyxy(xyah))[0, 0] >= 0.4
    assert tracker.update(dets(xyah_to_xyxy(xyah)[0])).tracker_id.tolist() == [1]


@pytest.mark.parametrize(("factor", "expected"), [(1 - MARGIN, 1), (1 + MARGIN, -1)])
def test_full_gate_is_the_4dof_chi2_on_centre_aspect_and_height(
    factor: float, expected: int
) -> None:
    tracker = tracker_with_missed_track(gate_position_only=False)
    xyah, predicted = probe(tracker, SHAPE_DIRECTION, CHI2_4DOF * factor, False)
    slot = slot_of(tracker, 1)
    kf, store = tracker.kalman_filter, tracker.tracks
    mean, cov = kf.predict(store.mean[[slot]], store.covariance[[slot]], 1)
    # Preconditions: the centre alone is well inside either gate, and the boxes overlap.
    assert kf.gating_distance(mean, cov, xyah[None], True)[0, 0] < 0.5 * CHI2_2DOF
    assert iou_matrix(predicted[None], xyah_to_xyxy(xyah))[0, 0] >= 0.4
    assert tracker.update(dets(xyah_to_xyxy(xyah)[0])).tracker_id.tolist() == [expected]


@pytest.mark.parametrize(("factor", "expected"), [(1 - MARGIN, 1), (1 + MARGIN, -1)])
def test_full_gate_edge_along_the_centre(factor: float, expected: int) -> None:
    """Along the centre the 4-dof gate reaches further than the 2-dof one: 9.4877, not 5.9915."""
    tracker = tracker_with_missed_track(gate_position_only=False)
    got, overlap = probe_match(tracker, CENTRE_DIRECTION, CHI2_4DOF * factor, False)
    assert overlap >= tracker.minimum_iou_threshold + 0.1
    assert got == expected


@pytest.mark.parametrize(("factor", "expected"), [(1 - MARGIN, 1), (1 + MARGIN, -1)])
def test_explicit_gating_threshold_is_used(factor: float, expected: int) -> None:
    tracker = tracker_with_missed_track(gating_threshold=4.0)
    assert probe_match(tracker, CENTRE_DIRECTION, 4.0 * factor, True)[0] == expected


# ----------------------------------------------------------------------------- matching cascade


def test_cascade_gives_the_detection_to_the_track_seen_last_frame() -> None:
    """Tracks R (recent) and L (lost 3 frames) both near one detection, L nearer.

    Plain Hungarian matching on the cascade cost over both tracks gives the detection to L (its
    predicted box overlaps it more); the cascade matches tracks seen a frame ago first, so R
    keeps it and L stays lost.
    """
    tracker = DeepSORTTracker()
    lost_x, recent_x, probe_x = 200.0, 210.0, 204.0
    for _ in range(5):
        out = tracker.update(dets([box(lost_x, 300.0), box(recent_x, 300.0)]))
    lost_id, recent_id = out.tracker_id.tolist()
    assert (lost_id, recent_id) == (1, 2)
    for _ in range(3):  # L missed, R seen
        assert tracker.update(dets(box(recent_x, 300.0))).tracker_id.tolist() == [recent_id]

    # Precondition: on the coming frame both are gated in and overlap the detection, L more.
    store, kf = tracker.tracks, tracker.kalman_filter
    slots = [slot_of(tracker, lost_id), slot_of(tracker, recent_id)]
    mean, cov = kf.predict(store.mean[slots], store.covariance[slots], 1)
    xyah = np.array([[probe_x, 300.0, 1.0, 100.0]])
    assert (kf.gating_distance(mean, cov, xyah, True)[:, 0] < CHI2_2DOF).all()
    overlap = iou_matrix(xyah_to_xyxy(mean[:, :4]), xyah_to_xyxy(xyah))[:, 0]
    assert overlap[0] > overlap[1] > tracker.minimum_iou_threshold
    assert store.time_since_update[slots].tolist() == [3, 0]

    assert tracker.update(dets(box(probe_x, 300.0))).tracker_id.tolist() == [recent_id]
    assert store is tracker.tracks
    assert tracker.tracks.time_since_update[slot_of(tracker, lost_id)] == 4


# ----------------------------------------------------------------------------- galleries


def test_gallery_budget_keeps_only_the_newest_features() -> None:
    budget, frames, dim = 5, 40, 48
    base = np.zeros(dim, np.float32)
    base[0] = 1.0
    features = np.tile(base, (frames, 1))
    features[np.arange(frames), 1 + np.arange(frames)] = 0.3  # each frame's feature distinct
    tracker = DeepSORTTracker(gallery_budget=budget)
    for k in range(frames):
        out = tracker.update(dets(box(100.0 + 2 * k, 300.0)), embeddings=features[[k]])
    assert out.tracker_id.tolist() == [1]
    slot = slot_of(tracker, 1)
    gallery = tracker.tracks.gallery
    assert gallery.count[slot] == budget
    assert gallery.features is not None and gallery.features.shape[1] == budget
    kept = gallery.export(np.array([slot]))["gallery_features"]
    newest = l2_normalize(features[-budget:])
    order = np.argsort(np.argmax(kept[:, 1:], axis=1))  # by the frame each feature marks
    np.testing.assert_allclose(kept[order], newest, atol=1e-6)
    # Nearest-neighbour distance sees only the kept features: the first frame's is not there.
    distance = gallery.distance(np.array([slot]), features[[0, frames - 1]])[0]
    assert distance[1] == pytest.approx(0.0, abs=1e-6)
    assert distance[0] == pytest.approx(1.0 - 1.0 / 1.09, abs=1e-4)  # cos between two of them


def test_default_gallery_budget_keeps_every_feature_up_to_100() -> None:
    tracker = DeepSORTTracker()
    features = np.eye(40, 48, k=1, dtype=np.float32) * 0.3
    features[:, 0] = 1.0
    for k in range(40):
        tracker.update(dets(box(100.0 + 2 * k, 300.0)), embeddings=features[[k]])
    assert tracker.tracks.gallery.count[slot_of(tracker, 1)] == 40


BAD_ROWS = {
    "nan": np.full(8, np.nan, np.float32),
    "one-nan": np.array([1, 0, 0, np.nan, 0, 0, 0, 0], np.float32),
    "inf": np.array([np.inf, 0, 0, 0, 0, 0, 0, 0], np.float32),
    "minus-inf": np.array([1, -np.inf, 0, 0, 0, 0, 0, 0], np.float32),
    "zero": np.zeros(8, np.float32),
}


@pytest.mark.parametrize("bad", sorted(BAD_ROWS))
def test_unusable_embedding_rows_never_enter_a_gallery(bad: str) -> None:
    """A matched detection with a NaN, infinite or zero embedding row: tracked by motion, its
    track's gallery unchanged; a valid row in the same frame still goes into its own gallery."""
    features = np.eye(2, 8, dtype=np.float32)  # P and Q
    tracker = DeepSORTTracker()
    for k in range(4):
        boxes = [box(100.0 + 3 * k, 300.0), box(500.0 - 3 * k, 300.0)]
        out = tracker.update(dets(boxes), embeddings=features)
    assert out.tracker_id.tolist() == [1, 2]
    gallery = tracker.tracks.gallery
    for k in range(4, 8):
        boxes = [box(100.0 + 3 * k, 300.0), box(500.0 - 3 * k, 300.0)]
        embeddings = np.stack([BAD_ROWS[bad], features[1]])
        before = gallery.count[[slot_of(tracker, 1), slot_of(tracker, 2)]].copy()
        out = tracker.update(dets(boxes), embeddings=embeddings)
        assert out.tracker_id.tolist() == [1, 2]  # still tracked, by motion
        after = gallery.count[[slot_of(tracker, 1), slot_of(tracker, 2)]]
        assert after.tolist() == [before[0], before[1] + 1]
    stored = gallery.export(tracker.tracks.active())["gallery_features"]
    assert np.isfinite(stored).all()
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("bad", sorted(BAD_ROWS))
def test_new_track_from_unusable_embedding_starts_with_an_empty_gallery(bad: str) -> None:
    tracker = DeepSORTTracker(minimum_consecutive_frames=1)
    out = tracker.update(
        dets([box(100.0, 300.0), box(500.0, 300.0)]),
        embeddings=np.stack([BAD_ROWS[bad], np.eye(1, 8, dtype=np.float32)[0]]),
    )
    assert out.tracker_id.tolist() == [1, 2]
    assert tracker.tracks.gallery.count[[slot_of(tracker, 1), slot_of(tracker, 2)]].tolist() == [
        0,
        1,
    ]
