"""Long-term re-identification: confirmed tracks lost beyond max_age come back by appearance.

A returning person starts a tentative track like anyone else; when it is confirmed
(`minimum_consecutive_frames` hits, default 3) it is compared with the long-lost tracks and, if
re-identified, merged into one of them and keeps its old ID from the confirming frame on.
"""

import copy

import numpy as np
import pytest

from ray_deepsort.core import DeepSORTTracker, Detections
from ray_deepsort.core.boxes import xyxy_to_xyah
from ray_deepsort.core.tracks import TrackState

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
    """One frame with one detection; its tracker ID."""
    return int(tracker.update(dets([centre]), embeddings=np.asarray(feature)[None]).tracker_id[0])


def walk_in(tracker, centres, features, frames=3, step=(3.0, 0.0), class_id=0) -> list[list[int]]:
    """People walking `frames` frames (`step` px per frame) to end at `centres` on the last frame,
    the one that confirms them by default; the tracker IDs of every frame."""
    centres = np.asarray(centres, np.float64).reshape(-1, 2)
    features = np.asarray(features, np.float32).reshape(len(centres), -1)
    ids = []
    for k in range(frames - 1, -1, -1):
        at = centres - k * np.asarray(step, np.float64)
        ids.append(tracker.update(dets(at, class_id), embeddings=features).tracker_id.tolist())
    return ids


def come_back(tracker, centre, feature=E[0], frames=3, step=(3.0, 0.0), class_id=0) -> list[int]:
    """One person walking in for `frames` frames, ending at `centre`; their ID on each frame."""
    return [i[0] for i in walk_in(tracker, [centre], [feature], frames, step, class_id)]


def long_lost_ids(tracker: DeepSORTTracker) -> list[int]:
    return sorted(tracker.tracks.track_id[tracker.tracks.lost()].tolist())


def test_person_hidden_past_max_age_comes_back_with_the_same_id() -> None:
    tracker = DeepSORTTracker()  # max_age 30 frames, window 10 s
    last = seen_then_hidden(tracker, hidden=60)
    assert long_lost_ids(tracker) == [1]
    centre = last + np.array([40.0, 5.0])
    assert come_back(tracker, centre) == [-1, -1, 1]  # tentative, then the old ID on confirming
    assert long_lost_ids(tracker) == [] and len(tracker.tracks) == 1
    assert back(tracker, centre + np.array([3.0, 0.0])) == 1  # and it is tracked on from there
    assert tracker.next_track_id == 2

    disabled = DeepSORTTracker(reid_window_seconds=0)
    seen_then_hidden(disabled, hidden=60)
    assert len(disabled.tracks) == 0
    assert come_back(disabled, centre) == [-1, -1, 2]


def test_a_false_detection_shorter_than_confirmation_does_not_wake_a_long_lost_track() -> None:
    """A one-frame (and a two-frame) box that looks exactly like the lost person gets no ID and
    leaves the long-lost track as it was; the person coming back later still gets their ID."""
    tracker = DeepSORTTracker()
    last = seen_then_hidden(tracker, hidden=40)
    store = tracker.tracks
    slot = store.active()[0]
    hits, count = int(store.hits[slot]), int(store.gallery.count[slot])
    assert back(tracker, last + np.array([20.0, 0.0])) == -1  # one-frame ghost
    nothing(tracker, 1)
    assert come_back(tracker, last - np.array([20.0, 0.0]), frames=2) == [-1, -1]  # two frames
    nothing(tracker, 1)
    assert long_lost_ids(tracker) == [1] and store.active().tolist() == [slot]
    assert store.hits[slot] == hits and store.gallery.count[slot] == count
    assert store.time_since_update[slot] == 40 + 5
    np.testing.assert_array_equal(store.last_xyah[slot], xyxy_to_xyah(dets([last]).xyxy)[0])
    assert come_back(tracker, last + np.array([30.0, 0.0])) == [-1, -1, 1]
    assert tracker.next_track_id == 2


def test_merge_moves_the_confirming_track_into_the_long_lost_one() -> None:
    """The long-lost slot takes the confirming track's filter state, hits and gallery features;
    the confirming track's slot is freed. A twin without re-identification, fed the same
    frames, shows what that track held when it was confirmed."""
    tracker = DeepSORTTracker()
    twin = DeepSORTTracker(reid_window_seconds=0)
    last = seen_then_hidden(tracker, hidden=40)
    seen_then_hidden(twin, hidden=40)
    store = tracker.tracks
    slot = store.active()[0]
    hits = int(store.hits[slot])
    old_features = store.gallery.export(slot[None])["gallery_features"].copy()
    rng = np.random.default_rng(3)
    features = E[0] + rng.normal(0, 0.05, (3, 8)).astype(np.float32)  # distinct, all near E[0]
    start = last + np.array([30.0, 0.0])
    for k in range(2):
        at = start + np.array([3.0 * k, 0.0])
        for each in (tracker, twin):
            out = each.update(dets([at]), embeddings=features[k : k + 1])
            assert out.tracker_id.tolist() == [-1]
    active = store.active()
    (tentative,) = active[~store.confirmed[active]]
    confirming = dets([start + np.array([6.0, 0.0])])
    assert tracker.update(confirming, embeddings=features[2:]).tracker_id.tolist() == [1]
    assert twin.update(confirming, embeddings=features[2:]).tracker_id.tolist() == [2]
    found = twin.tracks
    (confirmed,) = found.active()
    assert found.state(confirmed[None]).tolist() == [TrackState.CONFIRMED]
    assert found.hits[confirmed] == 3

    assert store.active().tolist() == [slot]
    assert store.state(np.array([slot, tentative])).tolist() == [
        TrackState.CONFIRMED,
        TrackState.DELETED,
    ]
    assert store.track_id[slot] == 1
    assert store.time_since_update[slot] == 0 and store.hits[slot] == hits + 3
    for column in ("mean", "covariance", "last_xyah"):
        np.testing.assert_array_equal(
            getattr(store, column)[slot], getattr(found, column)[confirmed], err_msg=column
        )
    assert store.gallery.count[slot] == len(old_features) + 3
    np.testing.assert_array_equal(
        store.gallery.export(slot[None])["gallery_features"],
        np.concatenate([old_features, found.gallery.export(confirmed[None])["gallery_features"]]),
    )
    assert back(tracker, start + np.array([9.0, 0.0])) == 1  # tracked on from that state


def test_reidentification_at_the_start_frame_when_one_hit_confirms() -> None:
    tracker = DeepSORTTracker(minimum_consecutive_frames=1)
    for i in range(3):
        assert back(tracker, [100 + 3 * i, 200]) == 1
    nothing(tracker, 40)
    assert long_lost_ids(tracker) == [1]
    slot = tracker.tracks.active()[0]
    out = tracker.update(dets([[130, 200], [600, 200]]), embeddings=E[:2])
    assert out.tracker_id.tolist() == [1, 2]  # the lost person, and a stranger
    assert long_lost_ids(tracker) == [] and len(tracker.tracks) == 2
    assert tracker.tracks.hits[slot] == 4 and tracker.tracks.time_since_update[slot] == 0
    out = tracker.update(dets([[133, 200], [603, 200]]), embeddings=E[:2])
    assert out.tracker_id.tolist() == [1, 2]  # and both are tracked on


def test_reidentification_uses_the_appearance_gate_and_every_gathered_feature() -> None:
    """Distance 0.8 to the lost person is beyond the default gate (0.7) and within 0.9; a
    confirming track that looked like the person on one frame only (the middle one) is
    compared through that frame's feature too."""
    unlike = (0.2 * E[0] + np.sqrt(0.96) * E[1]).astype(np.float32)  # distance 0.8 to E[0]
    for settings, expected in (({}, 2), ({"appearance_threshold": 0.9}, 1)):
        tracker = DeepSORTTracker(**settings)
        last = seen_then_hidden(tracker, hidden=40)
        assert come_back(tracker, last, unlike) == [-1, -1, expected], settings

    tracker = DeepSORTTracker()
    last = seen_then_hidden(tracker, hidden=40)
    looks = [E[3], E[0], E[3]]  # like the lost person on the middle frame only
    ids = [back(tracker, last + np.array([3.0 * k, 0.0]), f) for k, f in enumerate(looks)]
    assert ids == [-1, -1, 1]


def test_window_is_in_seconds_and_long_lost_tracks_age_out_without_features() -> None:
    def unseen_for(frames: int) -> tuple[int, DeepSORTTracker]:
        """`frames` frames without the person before the one that confirms their return."""
        tracker = DeepSORTTracker(reid_window_seconds=2.0)
        seen_then_hidden(tracker, hidden=0)
        nothing(tracker, frames - 2, with_embeddings=False)  # frames without features count
        ids = come_back(tracker, [130.0, 200.0])  # 2 tentative frames count too
        assert ids[:2] == [-1, -1]
        return ids[-1], tracker

    kept, tracker = unseen_for(60)  # 60 frames = 2 s at 30 fps: still within the window
    assert kept == 1
    lost, tracker = unseen_for(61)
    assert lost == 2  # the old track was deleted: a new ID
    assert len(tracker.tracks) == 1


def test_spatial_bound_is_measured_from_the_last_observed_box() -> None:
    """Reach at the confirming frame, 63 missed frames (60 hidden + 3 walking in) after the last
    sighting: one height plus one height per second lost. The filter's prediction drifted ~90 px
    right (3 px/frame for max_age frames), so a bound around the prediction would take the far
    right and refuse the far left; the observed box does not. Each walk-in goes away from the
    last box, so its first frames are nearer: only the confirming frame's box counts."""
    reach = HEIGHT * (1 + 63 / 30)
    results = {}
    for name, dx in (
        ("left_inside", -(reach - 3)),
        ("left_outside", -(reach + 3)),
        ("right_inside", reach - 3),
        ("right_outside", reach + 3),
    ):
        tracker = DeepSORTTracker()
        last = seen_then_hidden(tracker, hidden=60)
        slot = tracker.tracks.active()[0]
        assert tracker.tracks.mean[slot, 0] > last[0] + 60  # the prediction did drift
        ids = come_back(tracker, last + np.array([dx, 0.0]), step=(3.0 * np.sign(dx), 0.0))
        assert ids[:2] == [-1, -1], name
        results[name] = ids[-1]  # identical appearance
    assert results == {"left_inside": 1, "left_outside": 2, "right_inside": 1, "right_outside": 2}


def test_spatial_bound_grows_with_time_lost() -> None:
    """250 px is out of reach 34 frames after the last sighting (31 hidden + 3 walking in,
    ~213 px), within it after 63 (~310 px)."""
    ids = {}
    for hidden in (31, 60):
        tracker = DeepSORTTracker()
        last = seen_then_hidden(tracker, hidden=hidden)
        assert long_lost_ids(tracker) == [1]
        ids[hidden] = come_back(tracker, last - np.array([250.0, 0.0]), step=(-3.0, 0.0))
    assert ids == {31: [-1, -1, 2], 60: [-1, -1, 1]}
    slow = DeepSORTTracker(reid_max_speed=0.5)  # half the speed: 63 frames reach ~205 px
    last = seen_then_hidden(slow, hidden=60)
    assert come_back(slow, last - np.array([250.0, 0.0]), step=(-3.0, 0.0)) == [-1, -1, 2]


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
    ids = walk_in(tracker, [[110.0, 200.0], [690.0, 200.0]], E[[0, 2]])  # A and C return
    assert ids == [[-1, -1], [-1, -1], [4, 3]]  # A is a new person; C is known again
    assert long_lost_ids(tracker) == [2]


@pytest.mark.parametrize("confirm_after", [1, 3])
def test_a_person_in_view_takes_the_place_of_a_long_lost_track_when_max_tracks_is_full(
    confirm_after: int,
) -> None:
    tracker = DeepSORTTracker(max_tracks=2, minimum_consecutive_frames=confirm_after)
    for _ in range(confirm_after):
        out = tracker.update(dets([[100, 200], [500, 200]]), embeddings=E[:2])
    assert out.tracker_id.tolist() == [1, 2]
    for _ in range(40):
        tracker.update(dets([[500, 200]]), embeddings=E[1:2])
    assert long_lost_ids(tracker) == [1] and len(tracker.tracks) == 2
    ids = walk_in(tracker, [[500, 200], [900, 200]], E[1:3], frames=confirm_after, step=(0, 0))
    assert ids == [[2, -1]] * (confirm_after - 1) + [[2, 3]]
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
    """The same walk, occlusion and return in seconds at 10 and 30 fps ends the same way. The
    return is 250 px from the last sighting: within reach after ~2.1-2.3 s lost, out of it if
    the reach counted frames at 30 fps (~1.8 heights at 10 fps)."""

    def scenario(fps: float, hidden_seconds: float) -> list[int]:
        tracker = DeepSORTTracker(frame_rate=fps, reid_window_seconds=3.0)  # max_age = 1 s
        speed = 30.0 / fps  # 30 px/s
        frames = int(fps)
        ids = [back(tracker, [100 + speed * i, 200]) for i in range(frames)]
        nothing(tracker, round(hidden_seconds * fps))
        last = 100 + speed * (frames - 1)
        return ids + come_back(tracker, [last + 250.0, 200.0], step=(speed, 0.0))

    for fps in (10.0, 30.0):
        returned = scenario(fps, 2.0)
        frames = int(fps)
        assert returned[:frames] == [-1, -1] + [1] * (frames - 2), fps
        assert returned[frames:] == [-1, -1, 1], fps
        assert scenario(fps, 4.0)[frames:] == [-1, -1, 2], fps


def test_mutual_nearest_protects_against_a_look_alike() -> None:
    """A stranger near lost A who looks even more like lost B (far away) does not get A's ID;
    nor does a near look-alike of A when A's double (out of reach) is confirmed in the same
    frame. The real A does get it."""
    tracker = DeepSORTTracker()
    for _ in range(4):
        out = tracker.update(dets([[200, 200], [800, 200]]), embeddings=E[:2])
    assert out.tracker_id.tolist() == [1, 2]
    nothing(tracker, 40)
    assert long_lost_ids(tracker) == [1, 2]
    real = copy.deepcopy(tracker)
    stranger = 0.6 * E[0] + 0.8 * E[1]  # distance 0.4 to A (within the gate), 0.2 to B
    assert come_back(tracker, [230.0, 200.0], stranger) == [-1, -1, 3]
    assert long_lost_ids(tracker) == [1, 2]
    assert come_back(real, [170.0, 200.0], E[0]) == [-1, -1, 1]

    tracker = DeepSORTTracker()
    for _ in range(4):
        tracker.update(dets([[200, 200]]), embeddings=E[:1])
    nothing(tracker, 40)
    look_alike = 0.8 * E[0] + 0.6 * E[1]  # distance 0.2 to A
    ids = walk_in(tracker, [[230, 200], [900, 200]], np.stack([look_alike, E[0]]))
    assert ids == [[-1, -1], [-1, -1], [2, 3]]  # A's double is out of reach; A's nearest is it
    assert long_lost_ids(tracker) == [1]


def test_classes_do_not_mix_in_reidentification() -> None:
    for agnostic, expected in ((False, 2), (True, 1)):
        tracker = DeepSORTTracker(class_agnostic=agnostic)
        last = seen_then_hidden(tracker, hidden=40)
        assert come_back(tracker, last, class_id=1) == [-1, -1, expected]


def _comings_and_goings(frames: int = 110):
    """Four one-hot people, each hidden for 45 frames (past max_age) at staggered times."""
    rng = np.random.default_rng(5)
    start = np.stack([np.arange(4) * 200.0 + 100, np.full(4, 250.0)], axis=1)
    for t in range(frames):
        seen = np.array([not (10 + 5 * k <= t < 55 + 5 * k) for k in range(4)])
        centres = start[seen] + t * np.array([1.0, 0.0]) + rng.normal(0, 1, (int(seen.sum()), 2))
        yield t, seen, dets(centres), E[:4][seen] + rng.normal(0, 0.02, (int(seen.sum()), 8))


def test_state_round_trip_mid_loss_continues_identically(tmp_path) -> None:
    """Saved at frame 56: everyone is long-lost, and person 0 is walking back in as a tentative
    track (confirmed, and merged, at frame 57)."""
    inputs = list(_comings_and_goings())
    original = DeepSORTTracker(gallery_budget=8)
    first_ids: list[int] = []
    for t, _, d, e in inputs[:57]:
        out = original.update(d, embeddings=e, frame_index=t)
        if t == 5:  # everyone in view, as on the last frame
            first_ids = out.tracker_id.tolist()
    assert long_lost_ids(original) == [1, 2, 3, 4]
    active = original.tracks.active()
    assert original.tracks.hits[active[~original.tracks.confirmed[active]]].tolist() == [2]
    path = tmp_path / "state.npz"
    np.savez(path, **original.state_dict())
    restored = DeepSORTTracker(gallery_budget=8)
    with np.load(path, allow_pickle=False) as loaded:
        restored.load_state_dict(dict(loaded))
    for key, value in original.state_dict().items():
        np.testing.assert_array_equal(value, restored.state_dict()[key], err_msg=key)
    for t, _, d, e in inputs[57:]:
        a = original.update(d, embeddings=e, frame_index=t).tracker_id
        b = restored.update(d, embeddings=e, frame_index=t).tracker_id
        np.testing.assert_array_equal(a, b)
        if t == 57:
            assert a[0] == 1  # person 0 re-identified on the confirming frame
    assert inputs[-1][1].all() and a.tolist() == first_ids == [1, 2, 3, 4]  # all came back
    assert original.next_track_id == 5
    for key, value in original.state_dict().items():
        np.testing.assert_array_equal(value, restored.state_dict()[key], err_msg=key)


def test_version_1_state_loads_with_last_box_from_the_filter() -> None:
    tracker = DeepSORTTracker()
    for i in range(6):
        tracker.update(dets([[100 + 3 * i, 200], [500, 300 + 2 * i]]), embeddings=E[:2])
    state = tracker.state_dict()
    assert int(state["format_version"]) == 3
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
        DeepSORTTracker().load_state_dict({**state, "format_version": np.asarray(4)})


@pytest.mark.parametrize(
    "name,value", [("reid_window_seconds", -1.0), ("max_lost_tracks", -1), ("reid_max_speed", -0.5)]
)
def test_reid_parameter_validation(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=name):
        DeepSORTTracker(**{name: value})
