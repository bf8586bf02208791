"""DeepSORTTracker behaviour: lifecycle, IDs, appearance, cascade, classes, gaps, state, inputs."""

import numpy as np
import pytest

from ray_deepsort.core import DeepSORTTracker, Detections
from ray_deepsort.core.boxes import iou_matrix, valid_box_mask, xyah_to_xyxy
from ray_deepsort.core.frame_detections import FrameDetections
from ray_deepsort.core.nn_matching import l2_normalize


def boxes_at(centres: np.ndarray, size=(40.0, 100.0)) -> np.ndarray:
    centres = np.asarray(centres, np.float64).reshape(-1, 2)
    half = np.asarray(size) / 2
    return np.concatenate([centres - half, centres + half], axis=1)


def dets(centres, confidence=0.9, class_id=0) -> Detections:
    xyxy = boxes_at(centres)
    n = len(xyxy)
    return Detections(xyxy=xyxy, confidence=np.full(n, confidence), class_id=np.full(n, class_id))


def walk(tracker: DeepSORTTracker, frames: int, start=(100.0, 200.0), step=(3.0, 0.0), **kw):
    ids = []
    for i in range(frames):
        centre = np.asarray(start) + i * np.asarray(step)
        ids.append(int(tracker.update(dets([centre]), **kw).tracker_id[0]))
    return ids


def test_track_confirmed_after_minimum_consecutive_frames() -> None:
    assert walk(DeepSORTTracker(), 5) == [-1, -1, 1, 1, 1]
    assert walk(DeepSORTTracker(minimum_consecutive_frames=1), 3) == [1, 1, 1]


def test_tentative_track_deleted_on_first_miss() -> None:
    tracker = DeepSORTTracker()
    tracker.update(dets([[100, 200]]))
    tracker.update(dets([[103, 200]]))
    tracker.update(Detections.empty())
    assert len(tracker.tracks) == 0
    assert walk(tracker, 3, start=(106, 200)) == [-1, -1, 1]


def test_confirmed_track_survives_lost_track_buffer_scaled_by_frame_rate() -> None:
    for frame_rate, buffer_frames in ((30.0, 30), (15.0, 15)):
        tracker = DeepSORTTracker(lost_track_buffer=30, frame_rate=frame_rate)
        walk(tracker, 5)
        for _ in range(buffer_frames):
            tracker.update(Detections.empty())
        assert len(tracker.tracks) == 1
        tracker.update(Detections.empty())
        assert len(tracker.tracks) == 0


def test_low_confidence_detection_does_not_start_a_track_but_can_continue_one() -> None:
    tracker = DeepSORTTracker(track_activation_threshold=0.5)
    tracker.update(dets([[100, 200]], confidence=0.3))
    assert len(tracker.tracks) == 0
    walk(tracker, 4)
    out = tracker.update(dets([[112, 200]], confidence=0.3))
    assert out.tracker_id.tolist() == [1]


def test_ids_are_per_instance_and_reset_restarts_them() -> None:
    a, b = DeepSORTTracker(), DeepSORTTracker()
    assert walk(a, 4)[-1] == 1
    assert walk(b, 4)[-1] == 1
    walk(a, 4, start=(600, 400))
    assert a.next_track_id == 3
    a.reset()
    assert len(a.tracks) == 0 and a.frame_count == 0
    assert walk(a, 4)[-1] == 1


def test_objects_that_swap_places_while_hidden_keep_ids_with_appearance() -> None:
    """Two people stand side by side, are hidden, and come back swapped: motion alone must
    follow the positions, appearance follows the people."""
    feats = np.eye(2, 8, dtype=np.float32)
    results = {}
    for weight in (1.0, 0.0):
        tracker = DeepSORTTracker(appearance_weight=weight, appearance_threshold=0.3)
        for _ in range(6):
            out = tracker.update(dets([[200, 200], [225, 200]]), embeddings=feats)
        assert out.tracker_id.tolist() == [1, 2]
        for _ in range(5):
            tracker.update(Detections.empty())
        swapped = tracker.update(dets([[200, 200], [225, 200]]), embeddings=feats[::-1])
        results[weight] = swapped.tracker_id.tolist()
    assert results == {1.0: [2, 1], 0.0: [1, 2]}


def test_appearance_threshold_gates_matches() -> None:
    tracker = DeepSORTTracker(appearance_threshold=0.2)
    feats = np.eye(3, 8, dtype=np.float32)
    for i in range(4):
        out = tracker.update(dets([[100 + 3 * i, 200]]), embeddings=feats[:1])
    assert out.tracker_id.tolist() == [1]
    # Same place, totally different appearance: the cascade refuses it; the IoU stage takes it
    # (a track missed by the cascade but seen last frame is a just-missed IoU candidate).
    out = tracker.update(dets([[112, 200]]), embeddings=feats[1:2])
    assert out.tracker_id.tolist() == [1]
    tracker.update(Detections.empty())
    tracker.update(Detections.empty())
    # Seen two frames ago: only the cascade can match it, and appearance forbids it.
    out = tracker.update(dets([[121, 200]]), embeddings=feats[2:])
    assert out.tracker_id.tolist() == [-1]


def test_mahalanobis_gate_rejects_far_detection() -> None:
    tracker = DeepSORTTracker(appearance_weight=1.0)
    feats = np.ones((1, 4), np.float32)
    for i in range(4):
        tracker.update(dets([[100 + 3 * i, 200]]), embeddings=feats)
    tracker.update(Detections.empty())
    # Identical appearance, but 400 px from the prediction: gated out.
    out = tracker.update(dets([[520, 200]]), embeddings=feats)
    assert out.tracker_id.tolist() == [-1]


def test_tracks_never_match_across_classes_unless_agnostic() -> None:
    for agnostic, expected in ((False, -1), (True, 1)):
        tracker = DeepSORTTracker(class_agnostic=agnostic)
        for i in range(4):
            tracker.update(dets([[100 + 3 * i, 200]], class_id=0))
        out = tracker.update(dets([[112, 200]], class_id=1))
        assert out.tracker_id.tolist() == [expected]


def test_frame_index_gaps_are_predicted_across() -> None:
    tracker = DeepSORTTracker(minimum_consecutive_frames=1)
    # 12 px/frame; frames 6..9 are dropped upstream: it reappears 60 px (1.5 widths) away,
    # where only a prediction over all five steps still overlaps it.
    ids = [walk_one(tracker, i, 12.0) for i in range(6)]
    ids.append(walk_one(tracker, 10, 12.0))
    assert ids == [1] * 7
    assert tracker.tracks.time_since_update[tracker.tracks.active()].tolist() == [0]
    with pytest.raises(ValueError, match="does not follow"):
        tracker.update(dets([[0, 0]]), frame_index=10)
    # Without frame indexes the filter predicts one step only and loses the object.
    blind = DeepSORTTracker(minimum_consecutive_frames=1)
    for i in range(6):
        blind.update(dets([[100 + 12.0 * i, 200]]))
    assert blind.update(dets([[220, 200]])).tracker_id.tolist() == [2]


def walk_one(tracker: DeepSORTTracker, index: int, speed: float) -> int:
    out = tracker.update(dets([[100 + speed * index, 200]]), frame_index=index)
    return int(out.tracker_id[0])


def test_timestamps_drive_steps() -> None:
    tracker = DeepSORTTracker(frame_rate=10.0)
    tracker.update(dets([[100, 200]]), timestamp=5.0)
    tracker.update(dets([[100, 200]]), timestamp=5.3)
    assert tracker.tracks.age[tracker.tracks.active()].tolist() == [4]  # 1 + 3 steps
    with pytest.raises(ValueError):
        tracker.update(dets([[100, 200]]), timestamp=5.3)


def test_output_is_a_copy_of_the_input_type() -> None:
    tracker = DeepSORTTracker()
    d = dets([[100, 200]])
    out = tracker.update(d)
    assert isinstance(out, Detections) and out is not d
    assert d.tracker_id is None
    np.testing.assert_array_equal(out.xyxy, d.xyxy)


def test_supervision_in_supervision_out() -> None:
    sv = pytest.importorskip("supervision")
    tracker = DeepSORTTracker()
    for i in range(4):
        d = sv.Detections(
            xyxy=boxes_at([[100 + 3 * i, 200], [400, 300]]).astype(np.float32),
            confidence=np.array([0.9, 0.8]),
            class_id=np.array([0, 2]),
            data={"label": np.array(["a", "b"])},
        )
        out = tracker.update(d)
    assert isinstance(out, sv.Detections)
    assert out.tracker_id.tolist() == [1, 2]
    assert d.tracker_id is None  # the caller's object is untouched
    assert out.data["label"].tolist() == ["a", "b"]


def test_wrong_input_type_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match=r"supervision\.Detections"):
        DeepSORTTracker().update(np.zeros((1, 4)))


def test_embeddings_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="embeddings"):
        DeepSORTTracker().update(dets([[1, 2], [3, 4]]), embeddings=np.ones((3, 8)))


@pytest.mark.parametrize(
    "name,value",
    [
        ("minimum_consecutive_frames", 0),
        ("minimum_iou_threshold", 1.5),
        ("appearance_weight", -0.1),
        ("frame_rate", 0.0),
        ("lost_track_buffer", -1),
    ],
)
def test_parameter_validation(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=name):
        DeepSORTTracker(**{name: value})


class CountingEmbedder:
    """A ReID stand-in that records what it was asked to embed."""

    def __init__(self) -> None:
        self.calls: list[np.ndarray] = []

    def embed(self, frame: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        self.calls.append(xyxy.copy())
        out = np.zeros((len(xyxy), 4), np.float32)
        out[:, 0] = 1
        return out


def test_reid_model_embeds_only_valid_boxes_in_one_call() -> None:
    embedder = CountingEmbedder()
    tracker = DeepSORTTracker(reid_model=embedder)
    frame = np.zeros((480, 640, 3), np.uint8)
    xyxy = np.array(
        [[10, 10, 50, 100], [0, 0, 0, 0], [np.nan, 1, 2, 3], [700, 10, 750, 100], [5, 5, 60, 90]],
        np.float32,
    )
    out = tracker.update(Detections(xyxy=xyxy, confidence=np.ones(5)), frame)
    assert len(embedder.calls) == 1
    np.testing.assert_array_equal(embedder.calls[0], xyxy[[0, 4]])
    assert out.tracker_id.tolist() == [-1] * 5
    assert len(tracker.tracks) == 2


BAD_BOXES = {
    "zero_area": [50, 50, 50, 80],
    "negative_width": [60, 50, 40, 80],
    "nan": [np.nan, 50, 60, 80],
    "inf": [10, 10, np.inf, 80],
    "outside_frame": [-200, -200, -100, -100],
}


@pytest.mark.parametrize("case", sorted(BAD_BOXES))
def test_bad_box_is_ignored_and_others_still_tracked(case: str) -> None:
    tracker = DeepSORTTracker(reid_model=CountingEmbedder())
    frame = np.zeros((480, 640, 3), np.uint8)
    for i in range(4):
        xyxy = np.array([BAD_BOXES[case], [100 + 3 * i, 100, 140 + 3 * i, 200]], np.float32)
        out = tracker.update(Detections(xyxy=xyxy, confidence=np.ones(2)), frame)
    assert out.tracker_id.tolist() == [-1, 1]
    assert len(tracker.tracks) == 1


def test_frame_shape_ignores_boxes_outside_the_picture_like_the_frame_itself() -> None:
    """`frame_shape=(h, w)` where only the shape is known: the same IDs as passing an image of
    that shape (with precomputed embeddings, so the image is not embedded); not both at once."""
    frame = np.zeros((480, 640, 3), np.uint8)
    by_frame, by_shape, unbounded = DeepSORTTracker(), DeepSORTTracker(), DeepSORTTracker()
    for i in range(4):
        xyxy = np.array([[700 + 3 * i, 10, 750 + 3 * i, 100], [100, 100, 140, 200]], np.float32)
        detections = Detections(xyxy=xyxy, confidence=np.ones(2))
        embeddings = np.eye(2, 4, dtype=np.float32)
        expected = by_frame.update(detections, frame, embeddings=embeddings).tracker_id
        got = by_shape.update(detections, embeddings=embeddings, frame_shape=(480, 640))
        np.testing.assert_array_equal(got.tracker_id, expected)
        everywhere = unbounded.update(detections, embeddings=embeddings).tracker_id
    assert expected.tolist() == [-1, 1] and everywhere.tolist() == [1, 2]
    with pytest.raises(ValueError, match="frame or frame_shape"):
        by_shape.update(detections, frame, frame_shape=(480, 640))


def test_empty_input() -> None:
    tracker = DeepSORTTracker()
    out = tracker.update(Detections.empty(), embeddings=np.zeros((0, 8)))
    assert len(out) == 0 and out.tracker_id.shape == (0,)


def test_state_round_trip_gives_identical_future_output(tmp_path) -> None:
    rng = np.random.default_rng(1)
    centres = rng.uniform(50, 600, (12, 2))
    velocity = rng.normal(0, 3, (12, 2))
    feats = rng.normal(size=(12, 16)).astype(np.float32)

    def frame_input(i: int):
        keep = rng.random(12) > 0.2  # misses
        d = dets(centres[keep] + i * velocity[keep] + rng.normal(0, 1, (keep.sum(), 2)))
        return d, feats[keep] + rng.normal(0, 0.05, (keep.sum(), 16)).astype(np.float32)

    inputs = [frame_input(i) for i in range(60)]
    original = DeepSORTTracker(gallery_budget=5)
    for i, (d, e) in enumerate(inputs[:30]):
        original.update(d, embeddings=e, frame_index=2 * i)
    path = tmp_path / "state.npz"
    np.savez(path, **original.state_dict())
    with np.load(path, allow_pickle=False) as loaded:
        restored = DeepSORTTracker(gallery_budget=5)
        restored.load_state_dict(dict(loaded))
    for i, (d, e) in enumerate(inputs[30:], start=30):
        a = original.update(d, embeddings=e, frame_index=2 * i).tracker_id
        b = restored.update(d, embeddings=e, frame_index=2 * i).tracker_id
        np.testing.assert_array_equal(a, b)
    for key, value in original.state_dict().items():
        np.testing.assert_array_equal(value, restored.state_dict()[key], err_msg=key)
    assert original.next_track_id > 5


def test_state_from_other_budget_is_refused() -> None:
    state = DeepSORTTracker(gallery_budget=5).state_dict()
    with pytest.raises(ValueError, match="gallery_budget"):
        DeepSORTTracker().load_state_dict(state)


def test_core_imports_no_torch_ray_or_kafka() -> None:
    import subprocess
    import sys

    code = (
        "import sys, ray_deepsort, ray_deepsort.core;"
        "bad=[m for m in ('torch','ray','kafka','timm','cv2') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lost_track_reaches_past_overlap_only_for_a_mutual_appearance_match() -> None:
    """A lost track may take a non-overlapping detection only if the two are each other's
    nearest neighbours in appearance; a stranger who merely resembles it does not get its ID."""
    e0, e1 = np.eye(2, 8, dtype=np.float32)
    stranger = (0.6 * e0 + 0.8 * e1)[None]  # distance 0.4 to track 1, 0.2 to track 2
    tracker = DeepSORTTracker()
    for _ in range(4):
        out = tracker.update(dets([[200, 200], [600, 200]]), embeddings=np.stack([e0, e1]))
    assert out.tracker_id.tolist() == [1, 2]
    for _ in range(3):
        tracker.update(Detections.empty())
    # Near track 1's position but not overlapping it (40 px right of a 40 px wide box).
    out = tracker.update(dets([[245, 200]]), embeddings=stranger)
    assert out.tracker_id.tolist() == [-1]  # a new, tentative track
    assert tracker.tracks.time_since_update[tracker.tracks.active()].tolist() == [4, 4, 0]
    out = tracker.update(dets([[245, 200]]), embeddings=e0[None])
    assert out.tracker_id.tolist() == [1]


def test_max_tracks_bounds_state_and_keeps_the_most_confident() -> None:
    tracker = DeepSORTTracker(max_tracks=3, minimum_consecutive_frames=1)
    centres = np.array([[100, 200], [300, 200], [500, 200], [700, 200], [900, 200]], float)
    d = dets(centres)
    d.confidence = np.array([0.5, 0.9, 0.4, 0.8, 0.95])
    out = tracker.update(d)
    assert len(tracker.tracks) == 3
    assert (out.tracker_id >= 0).tolist() == [False, True, False, True, True]
    assert tracker.tracks.capacity == 3  # the store's doubling stops at max_tracks
    roomy = DeepSORTTracker(max_tracks=20, minimum_consecutive_frames=1)
    roomy.update(dets(np.stack([np.arange(17) * 100.0 + 50, np.full(17, 200.0)], axis=1)))
    assert len(roomy.tracks) == 17 and roomy.tracks.capacity == 20
    with pytest.raises(ValueError, match="max_tracks"):
        DeepSORTTracker(max_tracks=0)


def test_store_shrinks_after_a_crowd_leaves_without_changing_output() -> None:
    rng = np.random.default_rng(3)
    crowd = rng.uniform(50, 2000, (200, 2))
    lone = np.array([[3000.0, 200.0]])
    compacting, reference = (
        DeepSORTTracker(lost_track_buffer=2),
        DeepSORTTracker(lost_track_buffer=2),
    )
    reference.tracks.compact = lambda *a, **k: None  # type: ignore[method-assign]
    for i in range(40):
        centres = np.concatenate([crowd, lone]) if i < 10 else lone
        centres = centres + np.array([2.0 * i, 0.0])
        a = compacting.update(dets(centres), frame_index=i).tracker_id
        b = reference.update(dets(centres), frame_index=i).tracker_id
        np.testing.assert_array_equal(a, b)
    assert reference.tracks.capacity >= 201
    assert compacting.tracks.capacity <= 16 < reference.tracks.capacity
    assert compacting.nbytes < reference.nbytes / 10


def test_state_round_trip_of_a_tracker_whose_tracks_all_died() -> None:
    tracker = DeepSORTTracker()
    tracker.update(dets([[100, 200]]), embeddings=np.ones((1, 8), np.float32))
    for _ in range(4):
        tracker.update(Detections.empty(), embeddings=np.zeros((0, 8), np.float32))
    restored = DeepSORTTracker()
    restored.load_state_dict(tracker.state_dict())
    assert len(restored.tracks) == 0 and restored.next_birth == tracker.next_birth


def _cascade_cost_by_definition(tracker: DeepSORTTracker, slots, xyah, classes, features):
    """The cascade cost computed over every pair, the way its docstring states it."""
    store = tracker.tracks
    mahalanobis = tracker.kalman_filter.gating_distance(
        store.mean[slots], store.covariance[slots], xyah, tracker.gate_position_only
    )
    iou = iou_matrix(xyah_to_xyxy(store.mean[slots, :4]), xyah_to_xyxy(xyah))
    appearance = store.gallery.distance(slots, features)
    ranked = np.where(np.isnan(appearance), np.inf, appearance)
    mutual = (ranked <= ranked.min(axis=0)) & (ranked <= ranked.min(axis=1, keepdims=True))
    allowed = (
        (mahalanobis <= tracker.gating_threshold)
        & (store.class_id[slots][:, None] == classes[None, :])
        & ~(appearance > tracker.appearance_threshold)
        & ((iou >= tracker.minimum_iou_threshold) | (mutual & np.isfinite(ranked)))
    )
    w = tracker.appearance_weight
    cost = np.where(np.isnan(appearance), 1 - iou, w * appearance + (1 - w) * (1 - iou))
    return np.where(allowed, cost, np.inf)


def test_cascade_cost_computes_appearance_only_where_gates_leave_a_choice() -> None:
    """The pruned cost (appearance only for gated pairs, mutual-nearest checks only where they
    decide) equals the cost over every pair, on crowded scenes with look-alikes and gaps."""
    rng = np.random.default_rng(7)
    looks = l2_normalize(rng.normal(size=(6, 32)))  # 30 people share 6 looks
    for trial in range(3):
        tracker = DeepSORTTracker(appearance_threshold=0.6)
        start = rng.uniform(0, 600, (30, 2))
        velocity = rng.normal(0, 6, (30, 2))
        checked = 0
        for t in range(40):
            seen = rng.random(30) > 0.25
            centres = (start + t * velocity)[seen] + rng.normal(0, 3, (int(seen.sum()), 2))
            features = looks[np.flatnonzero(seen) % 6] + rng.normal(0, 0.3, (int(seen.sum()), 32))
            d = dets(centres)
            d.class_id = (np.flatnonzero(seen) % 2).astype(np.int64)
            slots = tracker.tracks.active()
            confirmed = slots[tracker.tracks.confirmed[slots]]
            if len(confirmed):
                frame = FrameDetections.from_detections(d, valid_box_mask(d.xyxy), features)
                assert frame.features is not None and frame.has_feature.all()
                mean, cov = tracker.kalman_filter.predict(
                    tracker.tracks.mean[confirmed], tracker.tracks.covariance[confirmed]
                )
                saved = tracker.tracks.mean.copy(), tracker.tracks.covariance.copy()
                tracker.tracks.mean[confirmed], tracker.tracks.covariance[confirmed] = mean, cov
                got = tracker.cascade_cost(confirmed, frame)
                want = _cascade_cost_by_definition(
                    tracker, confirmed, frame.xyah, frame.class_id, frame.features
                )
                tracker.tracks.mean, tracker.tracks.covariance = saved
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
                checked += int(np.isfinite(want).sum())
            tracker.update(d, embeddings=features, frame_index=t)
        assert checked > 100, trial
