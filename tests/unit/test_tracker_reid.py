"""Long-term re-identification: confirmed tracks lost beyond max_age come back by appearance."""

import numpy as np
import pytest

from ray_deepsort.core import DeepSORTTracker, Detections
from ray_deepsort.core.boxes import xyxy_to_xyah

E = np.eye(4, 8, dtype=np.float32)  # one-hot "people": distance 1 between any two
HEIGHT = 100.0


def dets(centres, class_id=0) -> Detections:
    centres = np.asarray(centres, np.float64).reshape(-1, 2)
    half = np.array([20.0, HEIGHT / 2])
    n = len(centres)
    return Detections(
        xyxy=np.concatenate([centres - half, centres + half], axis=1),
        confidence=np.full(n, 0.9),
        class_id=np.full(n, class_id),
    )


def nothing(tracker: DeepSORTTracker, frames: int, with_embeddings: bool = True) -> None:
    for _ in range(frames):
        tracker.update(Detections.empty(), embeddings=np.zeros((0, 8)) if with_embeddings else None)


def seen_then_hidden(tracker: DeepSORTTracker, hidden: int, feature=E[0]) -> np.ndarray:
    """Walk 5 frames right (3 px/frame) to be confirmed as ID 1, then hide; last centre out."""
    for i in range(5):
        out = tracker.update(dets([[100 + 3 * i, 200]]), embeddings=feature[None])
    assert out.tracker_id.tolist() == [1]
    nothing(tracker, hidden)
    return np.array([112.0, 200.0])


def back(tracker: DeepSORTTracker, centre, feature=E[0]) -> int:
    return int(tracker.update(dets([centre]), embeddings=np.asarray(feature)[None]).tracker_id[0])


def long_lost_ids(tracker: DeepSORTTracker) -> list[int]:
    slots = tracker.tracks.active()
    lost = slots[tracker._is_long_lost(slots)]
    return sorted(tracker.tracks.track_id[lost].tolist())


def test_person_hidden_past_max_age_comes_back_with_the_same_id() -> None:
    tracker = DeepSORTTracker()  # max_age 30 frames, window 10 s
    last = seen_then_hidden(tracker, hidden=60)
    assert long_lost_ids(tracker) == [1]
    slot = tracker.tracks.active()[0]
    hits, gallery = int(tracker.tracks.hits[slot]), int(tracker.tracks.gallery.count[slot])
    centre = last + np.array([40.0, 5.0])
    assert back(tracker, centre) == 1
    store = tracker.tracks
    assert long_lost_ids(tracker) == [] and bool(store.confirmed[slot])
    assert store.time_since_update[slot] == 0 and store.hits[slot] == hits + 1
    assert store.gallery.count[slot] == gallery + 1
    # The filter restarts at the detection with zero velocity: the drift while unseen is gone.
    xyah = xyxy_to_xyah(dets([centre]).xyxy)[0]
    np.testing.assert_allclose(store.mean[slot], np.concatenate([xyah, np.zeros(4)]))
    np.testing.assert_allclose(store.last_xyah[slot], xyah)
    assert back(tracker, centre + np.array([3.0, 0.0])) == 1  # and it is tracked on from there

    disabled = DeepSORTTracker(reid_window_seconds=0)
    seen_then_hidden(disabled, hidden=60)
    assert len(disabled.tracks) == 0
    assert back(disabled, centre) == -1


def test_window_is_in_seconds_and_long_lost_tracks_age_out_without_features() -> None:
    def hidden_for(frames: int) -> tuple[int, DeepSORTTracker]:
        tracker = DeepSORTTracker(reid_window_seconds=2.0)
        seen_then_hidden(tracker, hidden=0)
        nothing(tracker, frames, with_embeddings=False)  # frames without features still count
        return back(tracker, [130.0, 200.0]), tracker

    kept, tracker = hidden_for(60)  # 60 frames = 2 s at 30 fps: still within the window
    assert kept == 1
    lost, tracker = hidden_for(61)
    assert lost == -1 and tracker.next_track_id == 2  # the old track was deleted
    assert len(tracker.tracks) == 1 and not tracker.tracks.confirmed[tracker.tracks.active()[0]]


def test_spatial_bound_is_measured_from_the_last_observed_box() -> None:
    """Reach after 61 missed frames: one height plus one height per second lost. The filter's
    prediction drifted ~90 px right (3 px/frame for max_age frames), so a bound around the
    prediction would take the far right and refuse the far left; the observed box does not."""
    reach = HEIGHT * (1 + 61 / 30)
    results = {}
    for name, dx in (("left_inside", -(reach - 5)), ("right_outside", reach + 5)):
        tracker = DeepSORTTracker()
        last = seen_then_hidden(tracker, hidden=60)
        slot = tracker.tracks.active()[0]
        assert tracker.tracks.mean[slot, 0] > last[0] + 60  # the prediction did drift
        results[name] = back(tracker, last + np.array([dx, 0.0]))  # identical appearance
    assert results == {"left_inside": 1, "right_outside": -1}
    tracker = DeepSORTTracker()
    last = seen_then_hidden(tracker, hidden=60)
    assert back(tracker, last + np.array([reach - 5, 0.0])) == 1


def test_spatial_bound_grows_with_time_lost() -> None:
    """250 px is out of reach 32 frames after the last sighting (~207 px), within it after 61
    (~303 px)."""
    ids = {}
    for hidden in (31, 60):
        tracker = DeepSORTTracker()
        last = seen_then_hidden(tracker, hidden=hidden)
        assert long_lost_ids(tracker) == [1]
        ids[hidden] = back(tracker, last - np.array([250.0, 0.0]))
    assert ids == {31: -1, 60: 1}
    slow = DeepSORTTracker(reid_max_speed=0.5)  # half the speed: 60 frames reach ~202 px
    last = seen_then_hidden(slow, hidden=60)
    assert back(slow, last - np.array([250.0, 0.0])) == -1


def test_max_lost_tracks_keeps_the_most_recently_lost() -> None:
    tracker = DeepSORTTracker(max_lost_tracks=2)
    xs = np.array([100.0, 400.0, 700.0])
    for t in range(12):
        seen = np.array([t < 5, t < 8, t < 11])  # A, B and C leave one after another
        out = tracker.update(
            dets(np.stack([xs[seen], np.full(seen.sum(), 200.0)], axis=1)), embeddings=E[:3][seen]
        )
        if t == 4:
            assert out.tracker_id.tolist() == [1, 2, 3]
    nothing(tracker, 30)
    assert long_lost_ids(tracker) == [2, 3]  # A, lost longest, was evicted
    assert len(tracker.tracks) == 2
    assert back(tracker, [110.0, 200.0], E[0]) == -1
    assert back(tracker, [690.0, 200.0], E[2]) == 3


def test_a_person_in_view_takes_the_place_of_a_long_lost_track_when_max_tracks_is_full() -> None:
    tracker = DeepSORTTracker(max_tracks=2, minimum_consecutive_frames=1)
    tracker.update(dets([[100, 200], [500, 200]]), embeddings=E[:2])
    for _ in range(40):
        tracker.update(dets([[500, 200]]), embeddings=E[1:2])
    assert long_lost_ids(tracker) == [1] and len(tracker.tracks) == 2
    out = tracker.update(dets([[500, 200], [900, 200]]), embeddings=E[1:3])
    assert out.tracker_id.tolist() == [2, 3]
    assert long_lost_ids(tracker) == [] and len(tracker.tracks) == 2


def _crowd(seed: int, frames: int = 80):
    """Six people walking; each vanishes for stretches longer than max_age (5 frames)."""
    rng = np.random.default_rng(seed)
    start = np.stack([np.arange(6) * 150.0 + 50, rng.uniform(150, 400, 6)], axis=1)
    velocity = rng.normal(0, 2, (6, 2))
    features = np.eye(6, 8) + rng.normal(0, 0.05, (6, 8))
    visible = np.ones((frames, 6), bool)
    for person in range(6):
        begin = rng.integers(5, 40)
        visible[begin : begin + rng.integers(8, 25), person] = False
    for t in range(frames):
        seen = visible[t]
        centres = start[seen] + t * velocity[seen] + rng.normal(0, 1, (int(seen.sum()), 2))
        yield dets(centres), features[seen].astype(np.float32)


@pytest.mark.parametrize("case", ["no_embeddings", "appearance_weight_0"])
def test_motion_only_tracking_is_unchanged(case: str) -> None:
    weight = 0.0 if case == "appearance_weight_0" else 0.5
    default = DeepSORTTracker(lost_track_buffer=5, appearance_weight=weight)
    disabled = DeepSORTTracker(lost_track_buffer=5, appearance_weight=weight, reid_window_seconds=0)
    with_reid = DeepSORTTracker(lost_track_buffer=5)  # the same scene with appearance
    most_lost = 0
    for d, e in _crowd(0):
        given = None if case == "no_embeddings" else e
        a = default.update(d, embeddings=given).tracker_id
        b = disabled.update(d, embeddings=given).tracker_id
        np.testing.assert_array_equal(a, b)
        assert long_lost_ids(default) == []
        with_reid.update(d, embeddings=e)
        most_lost = max(most_lost, len(long_lost_ids(with_reid)))
    for key, value in default.state_dict().items():
        np.testing.assert_array_equal(value, disabled.state_dict()[key], err_msg=key)
    assert most_lost > 0  # the scene does reach long-lost tracks where appearance counts


def test_frame_rate_independence() -> None:
    """The same walk, occlusion and return in seconds at 10 and 30 fps ends the same way."""

    def scenario(fps: float, hidden_seconds: float) -> list[int]:
        tracker = DeepSORTTracker(frame_rate=fps, reid_window_seconds=3.0)  # max_age = 1 s
        speed = 30.0 / fps  # 30 px/s
        frames = int(fps)
        ids = []
        for i in range(frames):
            ids.append(back(tracker, [100 + speed * i, 200]))
        nothing(tracker, round(hidden_seconds * fps))
        x = 100 + speed * frames + 30.0 * hidden_seconds
        ids.append(back(tracker, [x, 200]))
        return ids

    for fps in (10.0, 30.0):
        returned = scenario(fps, 2.0)
        assert returned[-1] == 1 and returned[2:-1] == [1] * (len(returned) - 3), fps
        assert scenario(fps, 4.0)[-1] == -1, fps


def test_mutual_nearest_protects_against_a_look_alike() -> None:
    """A stranger near lost A who looks even more like lost B (far away) does not get A's ID;
    nor does a near look-alike of A when A's double is in view elsewhere. The real A does."""
    tracker = DeepSORTTracker()
    for _ in range(4):
        out = tracker.update(dets([[200, 200], [800, 200]]), embeddings=E[:2])
    assert out.tracker_id.tolist() == [1, 2]
    nothing(tracker, 40)
    assert long_lost_ids(tracker) == [1, 2]
    stranger = 0.6 * E[0] + 0.8 * E[1]  # distance 0.4 to A (within the gate), 0.2 to B
    assert back(tracker, [230.0, 200.0], stranger) == -1
    assert back(tracker, [170.0, 200.0], E[0]) == 1

    tracker = DeepSORTTracker()
    for _ in range(4):
        tracker.update(dets([[200, 200]]), embeddings=E[:1])
    nothing(tracker, 40)
    look_alike = 0.8 * E[0] + 0.6 * E[1]  # distance 0.2 to A
    out = tracker.update(dets([[230, 200], [900, 200]]), embeddings=np.stack([look_alike, E[0]]))
    assert out.tracker_id.tolist() == [-1, -1]  # A's double is out of reach; A's nearest is it


def test_classes_do_not_mix_in_reidentification() -> None:
    for agnostic, expected in ((False, -1), (True, 1)):
        tracker = DeepSORTTracker(class_agnostic=agnostic)
        last = seen_then_hidden(tracker, hidden=40)
        out = tracker.update(dets([last], class_id=1), embeddings=E[:1])
        assert out.tracker_id.tolist() == [expected]


def _comings_and_goings(frames: int = 110):
    """Four one-hot people, each hidden for 45 frames (past max_age) at staggered times."""
    rng = np.random.default_rng(5)
    start = np.stack([np.arange(4) * 200.0 + 100, np.full(4, 250.0)], axis=1)
    for t in range(frames):
        seen = np.array([not (10 + 5 * k <= t < 55 + 5 * k) for k in range(4)])
        centres = start[seen] + t * np.array([1.0, 0.0]) + rng.normal(0, 1, (int(seen.sum()), 2))
        yield t, seen, dets(centres), E[:4][seen] + rng.normal(0, 0.02, (int(seen.sum()), 8))


def test_state_round_trip_mid_loss_continues_identically(tmp_path) -> None:
    inputs = list(_comings_and_goings())
    original = DeepSORTTracker(gallery_budget=8)
    first_ids: list[int] = []
    for t, _, d, e in inputs[:50]:
        out = original.update(d, embeddings=e, frame_index=t)
        if t == 5:  # everyone in view, as on the last frame
            first_ids = out.tracker_id.tolist()
    assert len(long_lost_ids(original)) >= 2
    path = tmp_path / "state.npz"
    np.savez(path, **original.state_dict())
    restored = DeepSORTTracker(gallery_budget=8)
    with np.load(path, allow_pickle=False) as loaded:
        restored.load_state_dict(dict(loaded))
    for key, value in original.state_dict().items():
        np.testing.assert_array_equal(value, restored.state_dict()[key], err_msg=key)
    for t, _, d, e in inputs[50:]:
        a = original.update(d, embeddings=e, frame_index=t).tracker_id
        b = restored.update(d, embeddings=e, frame_index=t).tracker_id
        np.testing.assert_array_equal(a, b)
    assert inputs[-1][1].all() and a.tolist() == first_ids == [1, 2, 3, 4]  # all came back
    for key, value in original.state_dict().items():
        np.testing.assert_array_equal(value, restored.state_dict()[key], err_msg=key)


def test_version_1_state_loads_with_last_box_from_the_filter() -> None:
    tracker = DeepSORTTracker()
    for i in range(6):
        tracker.update(dets([[100 + 3 * i, 200], [500, 300 + 2 * i]]), embeddings=E[:2])
    state = tracker.state_dict()
    assert int(state["format_version"]) == 2
    old = {k: v for k, v in state.items() if k not in ("last_xyah", "appearance_threshold")}
    old["format_version"] = np.asarray(1)
    restored = DeepSORTTracker()
    restored.load_state_dict(old)
    slots = restored.tracks.active()
    np.testing.assert_array_equal(restored.tracks.last_xyah[slots], state["mean"][:, :4])
    for i in range(6, 10):
        d = dets([[100 + 3 * i, 200], [500, 300 + 2 * i]])
        a = tracker.update(d, embeddings=E[:2]).tracker_id
        np.testing.assert_array_equal(restored.update(d, embeddings=E[:2]).tracker_id, a)
    assert a.tolist() == [1, 2]
    with pytest.raises(ValueError, match="format"):
        DeepSORTTracker().load_state_dict({**state, "format_version": np.asarray(3)})


@pytest.mark.parametrize(
    "name,value", [("reid_window_seconds", -1.0), ("max_lost_tracks", -1), ("reid_max_speed", -0.5)]
)
def test_reid_parameter_validation(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=name):
        DeepSORTTracker(**{name: value})
