"""Property tests: the tracker's invariants hold on any sequence of frames.

Two generators. `scenes` makes what the tracker is for: people walking smoothly (so tracks are
confirmed and continue across frames), hidden for a while (missed, lost, re-identified or
deleted), noisy boxes, false positives, low-confidence boxes, and a minority (at most ~10 %) of
invalid boxes (NaN, inf, empty, negative size, outside the picture); embeddings are each
person's vector plus noise, with NaN, inf, all-zero and duplicated rows mixed in, and some
frames without embeddings. `wild_frames` is the old fuzz: arbitrary coordinates (NaN, inf,
huge), mostly invalid boxes, which must never crash the tracker.

Invariants checked after every frame (`check_frame`):
- one tracker_id per input box, -1 for every invalid box;
- IDs unique within a frame, and among live confirmed tracks;
- every ID output belongs to a live confirmed track matched on this frame;
- IDs are issued consecutively from 1, and every new ID is output on the frame it is issued;
- an ID never comes back once its track is gone: an output ID is either new on this frame or
  belonged to a track alive before it (long-term re-identification gives back the ID of a
  long-lost track, which is still alive, by design);
- tentative tracks were all seen on this frame and have fewer hits than confirmation needs;
  tracks missed for more than max_age are only long-lost ones (confirmed, with features, inside
  the re-identification window, and re-identification on), at most `max_lost_tracks`;
- at most `max_tracks` tracks; filter state finite;
- galleries hold at most `gallery_budget` features, all finite and of unit length (unusable
  embedding rows never get in).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ray_deepsort.core import DeepSORTTracker, Detections

WIDTH, HEIGHT = 640, 480
IMAGE = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
DIM = 8


def expected_valid(xyxy: np.ndarray) -> np.ndarray:
    """Boxes the tracker may track: finite, positive size, overlapping the picture."""
    xyxy = np.asarray(xyxy, np.float64)
    with np.errstate(invalid="ignore"):
        return (
            np.isfinite(xyxy).all(axis=1)
            & (xyxy[:, 2] > xyxy[:, 0])
            & (xyxy[:, 3] > xyxy[:, 1])
            & (xyxy[:, 2] > 0)
            & (xyxy[:, 3] > 0)
            & (xyxy[:, 0] < WIDTH)
            & (xyxy[:, 1] < HEIGHT)
        )


def alive_confirmed_ids(tracker: DeepSORTTracker) -> np.ndarray:
    store = tracker.tracks
    slots = store.active()
    return store.track_id[slots[store.confirmed[slots]]]


def check_frame(
    tracker: DeepSORTTracker, xyxy: np.ndarray, out_ids: np.ndarray, alive_before: set[int],
    next_before: int,
) -> None:  # fmt: skip
    store = tracker.tracks
    assert out_ids.shape == (len(xyxy),)
    assert (out_ids[~expected_valid(xyxy)] == -1).all()
    assert (out_ids >= -1).all()
    ids = out_ids[out_ids >= 0]
    assert len(ids) == len(set(ids.tolist())), "two boxes share an ID"

    slots = store.active()
    confirmed = slots[store.confirmed[slots]]
    live_ids = store.track_id[confirmed]
    assert len(live_ids) == len(set(live_ids.tolist())), "two live tracks share an ID"
    assert (live_ids >= 1).all() and (live_ids < tracker.next_track_id).all()
    matched_now = set(store.track_id[confirmed[store.time_since_update[confirmed] == 0]].tolist())
    assert set(ids.tolist()) <= matched_now, "an output ID has no track matched on this frame"

    issued = set(range(next_before, tracker.next_track_id))
    assert issued <= set(ids.tolist()), "a new ID was issued but not output"
    assert set(ids.tolist()) <= alive_before | issued, "a gone track's ID came back"

    tentative = slots[~store.confirmed[slots]]
    assert (store.time_since_update[tentative] == 0).all()
    assert (store.hits[tentative] < tracker.minimum_consecutive_frames).all()
    assert (store.track_id[tentative] == -1).all()
    lost = slots[store.time_since_update[slots] > tracker.max_age]
    if len(lost):
        assert tracker.reid_enabled
        assert store.confirmed[lost].all()
        assert (store.gallery.count[lost] > 0).all()
        assert (
            store.time_since_update[lost] / tracker.frame_rate <= tracker.reid_window_seconds
        ).all()
    assert len(lost) <= tracker.max_lost_tracks
    assert len(store) <= tracker.max_tracks

    assert np.isfinite(store.mean[slots]).all() and np.isfinite(store.covariance[slots]).all()
    gallery = store.gallery
    assert (gallery.count[slots] <= tracker.gallery_budget).all()
    stored = gallery.export(slots)["gallery_features"].astype(np.float64)
    assert np.isfinite(stored).all(), "a non-finite feature entered a gallery"
    if len(stored):
        np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-3)


def track_and_check(
    tracker: DeepSORTTracker,
    frames: list[tuple[Detections, np.ndarray | None]],
) -> list[np.ndarray]:
    outputs = []
    for detections, embeddings in frames:
        alive_before = set(alive_confirmed_ids(tracker).tolist())
        next_before = tracker.next_track_id
        out = tracker.update(detections, IMAGE, embeddings=embeddings)
        check_frame(tracker, detections.xyxy, out.tracker_id, alive_before, next_before)
        outputs.append(out.tracker_id)
    return outputs


# ----------------------------------------------------------------------------- realistic scenes


@dataclass
class Scene:
    frames: list[tuple[Detections, np.ndarray | None]]
    tracker_kwargs: dict


def _invalid_box(rng: np.random.Generator, box: np.ndarray) -> np.ndarray:
    box = box.copy()
    kind = rng.integers(6)
    if kind == 0:
        box[rng.integers(4)] = np.nan
    elif kind == 1:
        box[rng.integers(4)] = np.inf if rng.random() < 0.5 else -np.inf
    elif kind == 2:
        box[2] = box[0]  # zero width
    elif kind == 3:
        box[[1, 3]] = box[[3, 1]]  # negative height
    elif kind == 4:
        box[[0, 2]] = WIDTH + 10 + np.array([0.0, 50.0])  # right of the picture
    else:
        box[[1, 3]] = -np.array([120.0, 20.0])  # above the picture
    return box


@st.composite
def scenes(draw) -> Scene:
    seed = draw(st.integers(0, 2**32 - 1))
    num_people = draw(st.integers(1, 7))
    num_frames = draw(st.integers(4, 40))
    invalid_rate = draw(st.sampled_from([0.0, 0.03, 0.1]))
    bad_row_rate = draw(st.sampled_from([0.0, 0.1, 0.3]))
    duplicate_rate = draw(st.sampled_from([0.0, 0.1, 0.3]))
    embedding_frames = draw(st.sampled_from([0.0, 0.7, 1.0]))  # share of frames with embeddings
    tracker_kwargs = {
        "minimum_consecutive_frames": draw(st.integers(1, 3)),
        "lost_track_buffer": draw(st.integers(1, 8)),
        "reid_window_seconds": draw(st.sampled_from([0.0, 0.2, 10.0])),
        "max_tracks": draw(st.sampled_from([4, 1000])),
        "max_lost_tracks": draw(st.sampled_from([1, 100])),
        "gallery_budget": draw(st.sampled_from([2, 100])),
        "class_agnostic": draw(st.booleans()),
    }
    rng = np.random.default_rng(seed)
    heights = rng.uniform(60, 160, num_people)
    widths = heights * rng.uniform(0.3, 0.6, num_people)
    start = np.column_stack(
        [rng.uniform(40, WIDTH - 40, num_people), rng.uniform(80, 400, num_people)]
    )
    velocity = np.column_stack([rng.uniform(-5, 5, num_people), rng.uniform(-2, 2, num_people)])
    hidden_from = rng.integers(0, num_frames, num_people)
    hidden_len = np.where(rng.random(num_people) < 0.5, rng.integers(1, 20, num_people), 0)
    classes = np.where(rng.random(num_people) < 0.2, 1, 0)
    identity = rng.normal(size=(num_people, DIM))

    frames = []
    for t in range(num_frames):
        hidden = (t >= hidden_from) & (t < hidden_from + hidden_len)
        seen = np.flatnonzero(~hidden & (rng.random(num_people) >= 0.05))
        centre = start[seen] + t * velocity[seen] + rng.normal(0, 2, (len(seen), 2))
        half = np.column_stack([widths[seen], heights[seen]]) / 2
        xyxy = np.concatenate([centre - half, centre + half], axis=1)
        embeddings = identity[seen] + rng.normal(0, 0.1, (len(seen), DIM))
        class_id = classes[seen]
        num_false = rng.poisson(0.4)
        false_centre = rng.uniform([0, 0], [WIDTH, HEIGHT], (num_false, 2))
        false_half = rng.uniform([15, 30], [40, 80], (num_false, 2))
        false_xyxy = np.concatenate([false_centre - false_half, false_centre + false_half], axis=1)
        xyxy = np.concatenate([xyxy, false_xyxy])
        embeddings = np.concatenate([embeddings, rng.normal(size=(num_false, DIM))])
        class_id = np.concatenate([class_id, np.zeros(num_false, np.int64)])
        n = len(xyxy)
        confidence = np.where(rng.random(n) < 0.1, rng.uniform(0, 0.25, n), rng.uniform(0.3, 1, n))
        for i in np.flatnonzero(rng.random(n) < invalid_rate):
            xyxy[i] = _invalid_box(rng, xyxy[i])
        for i in np.flatnonzero(rng.random(n) < bad_row_rate):
            embeddings[i] = (np.nan, np.inf, 0.0)[rng.integers(3)]
        if n > 1:
            for i in np.flatnonzero(rng.random(n) < duplicate_rate):
                embeddings[i] = embeddings[(i + 1 + rng.integers(n - 1)) % n]
        order = rng.permutation(n)
        detections = Detections(
            xyxy=xyxy[order].astype(np.float32),
            confidence=confidence[order].astype(np.float32),
            class_id=class_id[order],
        )
        with_embeddings = rng.random() < embedding_frames
        frames.append((detections, embeddings[order] if with_embeddings else None))
    return Scene(frames, tracker_kwargs)


@settings(max_examples=150, deadline=None)
@given(scenes())
def test_tracker_invariants_on_scenes_of_walking_people(scene: Scene) -> None:
    tracker = DeepSORTTracker(**scene.tracker_kwargs)
    outputs = track_and_check(tracker, scene.frames)
    # Deterministic: a fresh tracker gives the same IDs on the same frames.
    again = track_and_check(DeepSORTTracker(**scene.tracker_kwargs), scene.frames)
    for first, second in zip(outputs, again, strict=True):
        np.testing.assert_array_equal(first, second)


# ----------------------------------------------------------------------------- wild input

coordinate = st.floats(allow_nan=True, allow_infinity=True, width=32) | st.floats(-50, 700)
frame_boxes = st.integers(0, 8).flatmap(
    lambda n: st.tuples(
        arrays(np.float32, (n, 4), elements=coordinate),
        arrays(np.float32, (n,), elements=st.floats(0, 1, width=32)),
        arrays(np.int64, (n,), elements=st.integers(0, 2)),
        st.booleans(),
    )
)


@settings(max_examples=40, deadline=None)
@given(st.lists(frame_boxes, min_size=1, max_size=12))
def test_random_boxes_never_crash(frames) -> None:
    rng = np.random.default_rng(0)
    sequence = [
        (
            Detections(xyxy=xyxy, confidence=confidence, class_id=class_id),
            rng.normal(size=(len(xyxy), 6)) if with_embeddings else None,
        )
        for xyxy, confidence, class_id, with_embeddings in frames
    ]
    track_and_check(DeepSORTTracker(minimum_consecutive_frames=1), sequence)
