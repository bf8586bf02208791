"""Property test: no sequence of boxes, however wild, crashes the tracker."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ray_deepsort.core import DeepSORTTracker, Detections

coordinate = st.floats(allow_nan=True, allow_infinity=True, width=32) | st.floats(-50, 700)
frame_boxes = st.integers(0, 8).flatmap(
    lambda n: st.tuples(
        arrays(np.float32, (n, 4), elements=coordinate),
        arrays(np.float32, (n,), elements=st.floats(0, 1, width=32)),
        arrays(np.int64, (n,), elements=st.integers(0, 2)),
        st.booleans(),
    )
)


@settings(max_examples=60, deadline=None)
@given(st.lists(frame_boxes, min_size=1, max_size=12))
def test_random_boxes_never_crash(frames) -> None:
    tracker = DeepSORTTracker(minimum_consecutive_frames=1)
    image = np.zeros((480, 640, 3), np.uint8)
    rng = np.random.default_rng(0)
    for xyxy, confidence, class_id, with_embeddings in frames:
        detections = Detections(xyxy=xyxy, confidence=confidence, class_id=class_id)
        embeddings = rng.normal(size=(len(xyxy), 6)) if with_embeddings else None
        out = tracker.update(detections, image, embeddings=embeddings)
        assert out.tracker_id.shape == (len(xyxy),)
        valid = (
            np.isfinite(xyxy).all(axis=1) & (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        )
        assert (out.tracker_id[~valid] == -1).all()
        ids = out.tracker_id[out.tracker_id >= 0]
        assert len(ids) == len(set(ids.tolist()))  # one detection per track
        assert np.isfinite(tracker.tracks.mean[tracker.tracks.active()]).all()
