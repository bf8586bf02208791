"""DeepSORT (Wojke et al. 2017) behind the Roboflow `trackers` API.

One `update()` per frame, laid out like nwojke/deep_sort's `Tracker.predict` + `Tracker.update`:
predict every track; match confirmed tracks to detections through the matching cascade
(appearance + overlap cost, Mahalanobis and appearance gates); match what is left by IoU; mark
matched tracks hit (confirming those with enough hits); mark the others missed; start tentative
tracks from confident unmatched detections. The track lifecycle (states and transitions) is in
`tracks.py`; a frame's detections travel as one `FrameDetections` record.

Long-term re-identification: a confirmed track missed for more than `max_age` frames leaves the
cascade (its predicted box has long stopped meaning anything) but, if it has appearance features,
stays "long-lost" for `reid_window_seconds`. A tentative track about to be confirmed takes a
long-lost track's place (ID and gallery) if the two are mutual nearest neighbours in appearance,
within the gate, and it is near enough to where the lost one was last seen. A person hidden for
seconds behind a pillar thereby keeps their ID, the cascade still prefers recently seen tracks,
and a one-frame false detection cannot wake a lost track (it is never confirmed).

Differences from Wojke et al. 2017 (and nwojke/deep_sort), and why:
- The Mahalanobis gate covers the box centre only by default (χ²₀.₉₅ for 2 degrees of freedom,
  `gate_position_only`): noisy detector boxes fail the aspect/height part while overlapping.
- Cascade cost `w·appearance + (1−w)·(1 − IoU with the predicted box)` (`appearance_weight`),
  not appearance alone; Mahalanobis distance stays a gate only (the paper's λ = 0). Motion
  still ranks candidates when features are weak, and w = 0 gives a motion-only cascade.
- In the cascade a pair must also overlap (IoU ≥ `minimum_iou_threshold`) unless track and
  detection are mutual nearest neighbours in appearance: a track can come back after an
  occlusion, but a look-alike nearby cannot take its ID.
- The appearance gate defaults to 0.7, or to the ReID model's recommended gate: distances do
  not carry over between embedding models (nwojke's app uses 0.2 for its own network).
- Confirmed tracks missed for more than max_age become long-lost and re-identifiable at
  confirmation (above) instead of being deleted.
- `max_age` is `lost_track_buffer` frames at 30 fps scaled by `frame_rate / 30`; a gap in
  `frame_index` or `timestamp` is predicted across and counts as that many missed frames.
- Tracks and detections of different classes never match (unless `class_agnostic`).
- Low-confidence detections still continue tracks; only starting one needs
  `track_activation_threshold` (nwojke's app drops them before tracking).
- Public IDs are issued at confirmation, consecutively in creation order; tentative tracks have
  none (nwojke numbers every tentative track, so its confirmed IDs have gaps).
- Memory is bounded: `gallery_budget` features per track (float16 optional), at most
  `max_tracks` tracks (the least confident new detections start none) and `max_lost_tracks`.
- Invalid boxes (non-finite, empty, wholly outside the frame) are ignored, never tracked.
- The Kalman filter's aspect noise is relative to the aspect and its initial velocity prior is
  wider (`kalman_filter.py`).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import numpy as np

from ray_deepsort.core.boxes import iou_matrix, valid_box_mask, xyah_to_xyxy
from ray_deepsort.core.defaults import (
    DEFAULT_APPEARANCE_THRESHOLD,
    DEFAULT_APPEARANCE_WEIGHT,
    is_default,
    resolve_default,
)
from ray_deepsort.core.detections import to_native, with_tracker_ids
from ray_deepsort.core.frame_detections import FrameDetections
from ray_deepsort.core.kalman_filter import CHI2_95_2DOF, CHI2_95_4DOF, KalmanFilter
from ray_deepsort.core.linear_assignment import matching_cascade, min_cost_matching
from ray_deepsort.core.nn_matching import (
    AppearanceGallery,
    DistanceMetric,
    GalleryDtype,
    ragged_positions,
)
from ray_deepsort.core.state import STATE_FORMAT_VERSION, seal_state, validate_state
from ray_deepsort.core.tracks import Lifecycle, TrackStore

ThresholdSource = Literal["model", "default", "explicit"]


class Embedder(Protocol):
    """What the tracker needs of a ReID model (`ray_deepsort.reid.ReIDModel` is one)."""

    def embed(self, frame: np.ndarray, xyxy: np.ndarray) -> np.ndarray: ...


class DeepSORTTracker:
    """Multi-object tracker with per-instance state and IDs.

    Args:
        reid_model: appearance embedder; None tracks by motion unless `update` gets embeddings.
        device: if given, the ReID model is moved there (`reid_model.to(device)`).
        lost_track_buffer: frames (at 30 fps) a confirmed track survives without a detection.
        frame_rate: stream frame rate; scales `lost_track_buffer` by `frame_rate / 30`.
        track_activation_threshold: minimum confidence for a detection to start a track.
        minimum_consecutive_frames: consecutive hits before a track is confirmed and gets an ID.
        minimum_iou_threshold: minimum IoU for the IoU stage (new and just-missed tracks).
        appearance_threshold: largest appearance distance accepted in the cascade and for
            re-identification (gate). Left at its default (0.7), the gate a ReID model recommends
            (`reid_model.spec.appearance_threshold`, when not None) is used instead: gates do not
            carry over between embedding models. The effective value is `self.
            appearance_threshold`, and `self.appearance_threshold_source` says where it came
            from: "explicit" (passed by the caller), "model" or "default".
        appearance_weight: weight of appearance vs. overlap (1 - IoU) in the cascade cost; 0
            makes the cascade motion-only. Left at its default (0.5), a ReID model's
            recommended weight (`reid_model.spec.appearance_weight`) is used instead.
        distance_metric: "cosine" or "euclidean" (between unit-length embeddings).
        gallery_budget: features kept per track for nearest-neighbour matching (paper: 100).
        gallery_dtype: "float32", or "float16" to halve gallery memory (distances stay float32).
        max_tracks: most tracks (tentative, confirmed and lost) kept per tracker; when full, the
            least confident unmatched detections start no track. Bounds memory per stream to
            about max_tracks * gallery_budget * embedding_dim * 4 (or 2) bytes.
        gate_position_only: gate on the box centre alone (default) instead of centre, aspect and
            height as in the paper: noisy detector boxes (MOT15's public ones) otherwise fail
            the aspect/height part of the gate while still overlapping (docs/benchmarks.md).
        gating_threshold: squared Mahalanobis gate; None = χ²₀.₉₅ for the gated dimensions
            (5.9915 for the centre, 9.4877 for all four).
        class_agnostic: when False (default), tracks never match detections of another class.
        reid_window_seconds: how long a confirmed track missed for more than `max_age` frames
            stays re-identifiable by appearance alone ("long-lost"); in seconds, so it means the
            same at every frame rate. 0 disables it. Tracks that never had an embedding, and
            every track when `appearance_weight` is 0, are deleted after max_age as before.
        max_lost_tracks: most long-lost tracks kept (bounded memory and matching work); beyond
            it, and when `max_tracks` leaves no room for a new track, those lost longest go
            first. Long-lost tracks count against `max_tracks`.
        reid_max_speed: plausibility bound of re-identification, in box heights per second: a
            confirming track may take a long-lost one's place only if its centre lies within
            `h * (1 + reid_max_speed * seconds_lost)` of the track's last observed box centre
            (h: that box's height). The default, one height per second, is a brisk walk for a
            person; the last observation is used because the filter's velocity drifts unseen.
    """

    def __init__(
        self,
        reid_model: Embedder | None = None,
        device: str | None = None,
        lost_track_buffer: int = 30,
        frame_rate: float = 30.0,
        track_activation_threshold: float = 0.25,
        minimum_consecutive_frames: int = 3,
        minimum_iou_threshold: float = 0.3,
        appearance_threshold: float = DEFAULT_APPEARANCE_THRESHOLD,
        appearance_weight: float = DEFAULT_APPEARANCE_WEIGHT,
        distance_metric: DistanceMetric = "cosine",
        *,
        gallery_budget: int = 100,
        gallery_dtype: GalleryDtype = "float32",
        max_tracks: int = 1000,
        gate_position_only: bool = True,
        gating_threshold: float | None = None,
        class_agnostic: bool = False,
        reid_window_seconds: float = 10.0,
        max_lost_tracks: int = 100,
        reid_max_speed: float = 1.0,
    ) -> None:
        _check_range("lost_track_buffer", lost_track_buffer, 0, None)
        _check_range("frame_rate", frame_rate, 1e-9, None)
        _check_range("minimum_consecutive_frames", minimum_consecutive_frames, 1, None)
        _check_range("minimum_iou_threshold", minimum_iou_threshold, 0.0, 1.0)
        spec = getattr(reid_model, "spec", None)
        recommended = getattr(spec, "appearance_threshold", None)
        threshold = resolve_default(appearance_threshold, recommended)
        appearance_weight = resolve_default(
            appearance_weight, getattr(spec, "appearance_weight", None)
        )
        _check_range("appearance_weight", appearance_weight, 0.0, 1.0)
        _check_range("appearance_threshold", threshold, 0.0, None)
        _check_range("reid_window_seconds", reid_window_seconds, 0.0, None)
        _check_range("max_lost_tracks", max_lost_tracks, 0, None)
        _check_range("reid_max_speed", reid_max_speed, 0.0, None)
        if gating_threshold is None:
            gating_threshold = CHI2_95_2DOF if gate_position_only else CHI2_95_4DOF
        _check_range("gating_threshold", gating_threshold, 1e-9, None)
        _check_range("max_tracks", max_tracks, 1, None)
        if device is not None and reid_model is not None and hasattr(reid_model, "to"):
            reid_model.to(device)
        self.reid_model = reid_model
        self.lost_track_buffer = lost_track_buffer
        self.frame_rate = float(frame_rate)
        self.max_age = max(1, int(lost_track_buffer * frame_rate / 30.0))
        self.track_activation_threshold = track_activation_threshold
        self.minimum_consecutive_frames = minimum_consecutive_frames
        self.minimum_iou_threshold = minimum_iou_threshold
        self.appearance_threshold = threshold
        self.appearance_threshold_source: ThresholdSource = (
            "explicit"
            if not is_default(appearance_threshold)
            else "model"
            if recommended is not None
            else "default"
        )
        self.appearance_weight = appearance_weight
        self.distance_metric = distance_metric
        self.gallery_budget = gallery_budget
        self.gallery_dtype: GalleryDtype = gallery_dtype
        self.max_tracks = max_tracks
        self.gate_position_only = gate_position_only
        self.gating_threshold = gating_threshold
        self.class_agnostic = class_agnostic
        self.reid_window_seconds = float(reid_window_seconds)
        self.max_lost_tracks = max_lost_tracks
        self.reid_max_speed = float(reid_max_speed)
        self.kalman_filter = KalmanFilter(frame_rate=self.frame_rate)
        self.reset()

    def reset(self) -> None:
        """Forget every track and start IDs again at 1."""
        self.tracks = self._empty_store()
        self.frame_count = 0
        self.next_track_id = 1
        self.next_birth = 0
        self.last_frame_index: int | None = None
        self.last_timestamp: float | None = None

    def _empty_store(self) -> TrackStore:
        """No tracks, with this tracker's lifecycle and gallery settings (reset and restore)."""
        lifecycle = Lifecycle(
            minimum_consecutive_frames=self.minimum_consecutive_frames,
            max_age=self.max_age,
            frame_rate=self.frame_rate,
            reid_window_seconds=self.reid_window_seconds if self.reid_enabled else 0.0,
            max_lost_tracks=self.max_lost_tracks,
        )
        gallery = AppearanceGallery(self.gallery_budget, self.distance_metric, self.gallery_dtype)
        return TrackStore(gallery, lifecycle, max_capacity=self.max_tracks)

    # ------------------------------------------------------------------ per frame
    def update(
        self,
        detections: Any,
        frame: np.ndarray | None = None,
        embeddings: np.ndarray | None = None,
        frame_index: int | None = None,
        timestamp: float | None = None,
        *,
        frame_shape: tuple[int, int] | None = None,
    ) -> Any:
        """Track one frame; returns a copy of `detections` (same type) with `tracker_id` set.

        `tracker_id` is -1 for boxes not matched to a confirmed track, including invalid boxes
        (non-finite, zero or negative size, or wholly outside the frame), which are ignored.
        Appearance comes from `embeddings` [N, D] if given, else from `reid_model` on `frame`,
        else the frame is matched by motion alone. Without an image to embed, `frame_shape`
        (height, width) alone tells which boxes lie outside the picture; pass `frame` or
        `frame_shape`, not both. `frame_index` or `timestamp` (seconds) let the filter predict
        across dropped frames; they must increase from call to call.
        """
        if frame is not None and frame_shape is not None:
            raise ValueError("pass frame or frame_shape, not both")
        native = to_native(detections)
        steps = self._steps(frame_index, timestamp)
        self.frame_count += 1
        shape = frame_shape if frame is None else frame.shape
        valid = valid_box_mask(native.xyxy, shape)
        frame_detections = FrameDetections.from_detections(
            native, valid, self._embed(native.xyxy, valid, frame, embeddings)
        )
        tracker_id = np.full(len(native), -1, np.int64)
        tracker_id[frame_detections.index] = self._update(frame_detections, steps)
        return with_tracker_ids(detections, tracker_id)

    def _steps(self, frame_index: int | None, timestamp: float | None) -> int:
        """Frames since the last call (1 unless `frame_index` or `timestamp` says more)."""
        steps = 1
        if frame_index is not None:
            if self.last_frame_index is not None:
                steps = int(frame_index) - self.last_frame_index
                if steps < 1:
                    raise ValueError(
                        f"frame_index {frame_index} does not follow {self.last_frame_index}"
                    )
            self.last_frame_index = int(frame_index)
        elif timestamp is not None and self.last_timestamp is not None:
            elapsed = float(timestamp) - self.last_timestamp
            if not elapsed > 0:
                raise ValueError(f"timestamp {timestamp} does not follow {self.last_timestamp}")
            steps = max(1, round(elapsed * self.frame_rate))
        if timestamp is not None:
            self.last_timestamp = float(timestamp)
        return steps

    def _embed(
        self,
        xyxy: np.ndarray,
        valid: np.ndarray,
        frame: np.ndarray | None,
        embeddings: np.ndarray | None,
    ) -> np.ndarray | None:
        """Raw features [N, D] (zero rows for invalid boxes when embedded here), or None."""
        n = len(xyxy)
        if embeddings is not None:
            features = np.asarray(embeddings, dtype=np.float32)
            if features.ndim != 2 or len(features) != n:
                raise ValueError(
                    f"embeddings must have shape [{n}, D] for {n} detections, got {features.shape}"
                )
            return features
        if frame is None or self.reid_model is None or self.appearance_weight <= 0:
            return None  # motion only
        if not valid.any():
            return None  # nothing to embed: skip the model call
        embedded = np.asarray(self.reid_model.embed(frame, xyxy[valid]), np.float32)
        features = np.zeros((n, embedded.shape[1]), np.float32)
        features[valid] = embedded
        return features

    def _update(self, detections: FrameDetections, steps: int) -> np.ndarray:
        """The algorithm on one frame; the tracker ID of each row of `detections` (-1: none)."""
        store = self.tracks
        slots = store.active()
        tracked = store.predict(slots, self.kalman_filter, steps)
        matches, unmatched_rows = self._match(tracked, detections, steps)
        ready = store.mark_hit(matches[:, 0], detections, matches[:, 1], self.kalman_filter)
        matches[:, 0] = _remapped(matches[:, 0], *self._confirm(ready))
        hit = np.zeros(store.capacity, np.bool_)
        hit[matches[:, 0]] = True
        # Missed: every other track still alive (those merged into a LOST one are gone).
        store.mark_missed(slots[~hit[slots] & store.alive[slots]])
        new_slots, new_rows = self._start_tracks(detections, unmatched_rows)

        out_slots = np.concatenate([matches[:, 0], new_slots])
        out_rows = np.concatenate([matches[:, 1], new_rows]).astype(np.int64)
        tracker_id = np.full(len(detections), -1, np.int64)
        tracker_id[out_rows] = np.where(store.confirmed[out_slots], store.track_id[out_slots], -1)
        store.compact()  # renumbers slots: only once no slot index is held any more
        return tracker_id

    def _match(
        self, slots: np.ndarray, detections: FrameDetections, steps: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Matches [K, 2] of (slot, detection row) and the detection rows left unmatched.

        Confirmed tracks go through the matching cascade; then tentative tracks and confirmed
        ones that were seen on the previous frame but missed by the cascade are matched by IoU.
        """
        store = self.tracks
        confirmed = slots[store.confirmed[slots]]
        cost = self.cascade_cost(confirmed, detections)
        cascade, missed_rows, free = matching_cascade(cost, store.time_since_update[confirmed])
        missed = confirmed[missed_rows]
        just_missed = missed[store.time_since_update[missed] == steps]
        iou_slots = np.concatenate([slots[~store.confirmed[slots]], just_missed])
        iou_cost = self._iou_cost(iou_slots, detections, free)
        iou_matches, _, still_free = min_cost_matching(iou_cost)
        matches = np.concatenate(
            [
                np.stack([confirmed[cascade[:, 0]], cascade[:, 1]], axis=1),
                np.stack([iou_slots[iou_matches[:, 0]], free[iou_matches[:, 1]]], axis=1),
            ]
        )
        return matches, free[still_free]

    def cascade_cost(self, slots: np.ndarray, detections: FrameDetections) -> np.ndarray:
        """Cost [len(slots), len(detections)] of the matching cascade, inf where a gate forbids
        the pair; `slots` are confirmed tracks, already predicted to this frame.

        As in the paper, Mahalanobis distance is a gate, not a cost (its λ = 0). The cost is
        w·appearance + (1-w)·(1 - IoU with the predicted box). A pair must overlap (IoU at least
        `minimum_iou_threshold`) unless appearance vouches for it: both have embeddings and are
        mutual nearest neighbours (the detection looks more like this track than like any other,
        and the track more like it than like any other detection). That is what lets a track
        come back after an occlusion, while weak features (ImageNet backbones) cannot hand a
        lost track's ID to a nearby stranger who merely looks alike.
        """
        store = self.tracks
        mahalanobis = self.kalman_filter.gating_distance(
            store.mean[slots], store.covariance[slots], detections.xyah, self.gate_position_only
        )
        iou = iou_matrix(xyah_to_xyxy(store.mean[slots, :4]), xyah_to_xyxy(detections.xyah))
        cost = 1.0 - iou
        allowed = mahalanobis <= self.gating_threshold
        if not self.class_agnostic:
            allowed &= store.class_id[slots][:, None] == detections.class_id[None, :]
        overlaps = iou >= self.minimum_iou_threshold
        if detections.features is not None and self.appearance_weight > 0:
            # Appearance only where the gates leave a choice: the rest is inf whatever it costs.
            appearance = store.gallery.distance(
                slots, detections.features, where=allowed & detections.has_feature[None, :]
            )
            known = ~np.isnan(appearance)
            weight = self.appearance_weight
            cost = np.where(known, weight * appearance + (1 - weight) * cost, cost)
            allowed &= ~(known & (appearance > self.appearance_threshold))
            overlaps |= self._mutual_nearest(slots, detections, allowed & known & ~overlaps)
        return np.where(allowed & overlaps, cost, np.inf)

    def _mutual_nearest(
        self, slots: np.ndarray, detections: FrameDetections, pairs: np.ndarray
    ) -> np.ndarray:
        """Which of `pairs` [tracks, detections] are mutual nearest neighbours in appearance.

        Compared against every confirmed track and every detection with a feature, whatever
        the gates say; only the rows and columns that hold a pair are computed.
        """
        mutual = np.zeros_like(pairs)
        if not pairs.any():
            return mutual
        assert detections.features is not None  # pairs come from appearance distances
        rows, cols = np.flatnonzero(pairs.any(axis=1)), np.flatnonzero(pairs.any(axis=0))
        dets = np.flatnonzero(detections.has_feature)
        gallery = self.tracks.gallery
        by_track = _nan_to_inf(gallery.distance(slots[rows], detections.features[dets]))
        by_detection = _nan_to_inf(gallery.distance(slots, detections.features[cols]))
        nearest_detection = np.zeros_like(pairs)
        nearest_detection[np.ix_(rows, dets)] = by_track <= by_track.min(axis=1, keepdims=True)
        nearest_track = np.zeros_like(pairs)
        nearest_track[:, cols] = by_detection <= by_detection.min(axis=0, keepdims=True)
        return pairs & nearest_detection & nearest_track

    def _iou_cost(
        self, slots: np.ndarray, detections: FrameDetections, rows: np.ndarray
    ) -> np.ndarray:
        """Cost 1 - IoU [len(slots), len(rows)] of the IoU stage, inf below the threshold."""
        predicted = xyah_to_xyxy(self.tracks.mean[slots, :4])
        iou = iou_matrix(predicted, detections.xyxy[rows])
        gated = iou < self.minimum_iou_threshold
        if not self.class_agnostic:
            gated |= self.tracks.class_id[slots][:, None] != detections.class_id[rows][None, :]
        return np.where(gated, np.inf, 1.0 - iou)

    @property
    def reid_enabled(self) -> bool:
        """Whether missed confirmed tracks outlive `max_age` as long-lost (see the class doc)."""
        return (
            self.reid_window_seconds > 0 and self.appearance_weight > 0 and self.max_lost_tracks > 0
        )

    def _confirm(self, ready: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Confirm tentative tracks: re-identified ones revive their long-lost track (and keep
        its ID), the others get public IDs in creation order.

        Returns (re-identified slots, the long-lost slots they revived): the former are deleted.
        """
        found, lost = self._reidentify(ready)
        self.tracks.revive(lost, found)
        self.next_track_id = self.tracks.confirm(ready[~np.isin(ready, found)], self.next_track_id)
        return found, lost

    def _reidentify(self, ready: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which confirming tracks are long-lost ones come back: (ready slots, lost slots).

        A tentative track about to be confirmed is compared, through every feature it has
        gathered, with each long-lost track's gallery. A pair needs the same class (unless
        class-agnostic), appearance distance within the gate, the new track within reach of the
        lost one's last observed box (`reid_max_speed`), and the two to be mutual nearest
        neighbours in appearance among all long-lost and all confirming tracks, whatever the
        other gates say: weak features then cannot hand an ID to a stranger who merely looks
        alike. Waiting for confirmation keeps one-frame false detections from waking lost tracks.
        """
        none = np.zeros(0, np.int64)
        store = self.tracks
        if not self.reid_enabled or len(ready) == 0:
            return none, none
        lost = store.lost()
        ready = ready[store.gallery.count[ready] > 0]
        if len(lost) == 0 or len(ready) == 0:
            return none, none
        gathered = store.gallery.export(ready)
        counts = gathered["gallery_count"]
        per_feature = _nan_to_inf(store.gallery.distance(lost, gathered["gallery_features"]))
        appearance = np.minimum.reduceat(per_feature, ragged_positions(counts)[1], axis=1)
        last, now = store.last_xyah[lost], store.last_xyah[ready]
        reach = last[:, 3] * (
            1.0 + self.reid_max_speed * store.time_since_update[lost] / self.frame_rate
        )
        offset = np.hypot(now[None, :, 0] - last[:, None, 0], now[None, :, 1] - last[:, None, 1])
        allowed = (offset <= reach[:, None]) & (appearance <= self.appearance_threshold)
        if not self.class_agnostic:
            allowed &= store.class_id[lost][:, None] == store.class_id[ready][None, :]
        allowed &= appearance <= appearance.min(axis=0, keepdims=True)
        allowed &= appearance <= appearance.min(axis=1, keepdims=True)
        matches, _, _ = min_cost_matching(np.where(allowed, appearance, np.inf))
        return ready[matches[:, 1]], lost[matches[:, 0]]

    def _start_tracks(
        self, detections: FrameDetections, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Tentative tracks from the confident `rows`; returns (slots, rows started)."""
        rows = rows[detections.confidence[rows] >= self.track_activation_threshold]
        slots, rows = self.tracks.start(detections, rows, self.kalman_filter, self.next_birth)
        self.next_birth += len(rows)
        if self.minimum_consecutive_frames <= 1:  # one hit confirms: they are ready at once
            slots = _remapped(slots, *self._confirm(slots))
        return slots, rows

    # ------------------------------------------------------------------ state
    @property
    def nbytes(self) -> int:
        """Bytes of tracking state held in memory (track columns and galleries)."""
        return self.tracks.nbytes

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every bit of tracking state as plain numpy arrays (savable with np.savez, no pickle)."""
        state = {
            "format_version": np.asarray(STATE_FORMAT_VERSION, np.int64),
            "gallery_budget": np.asarray(self.gallery_budget, np.int64),
            "appearance_threshold": np.asarray(self.appearance_threshold, np.float64),
            "frame_count": np.asarray(self.frame_count, np.int64),
            "next_track_id": np.asarray(self.next_track_id, np.int64),
            "next_birth": np.asarray(self.next_birth, np.int64),
            "last_frame_index": np.asarray(
                -1 if self.last_frame_index is None else self.last_frame_index, np.int64
            ),
            "last_timestamp": np.asarray(
                np.nan if self.last_timestamp is None else self.last_timestamp, np.float64
            ),
        }
        state.update(self.tracks.export())
        return seal_state(state)  # + gallery fingerprint and checksum

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()` output; later updates then match the original tracker's.

        The whole state is validated first (`ray_deepsort.core.state`): an incomplete or
        inconsistent one raises `InvalidTrackerState` (a ValueError naming the field) and leaves
        this tracker exactly as it was. The saved appearance gate replaces this tracker's unless
        the caller set it explicitly. Version-1 states (before long-term re-identification) load
        with each track's last observed box taken from its filter mean.
        """
        clean = validate_state(state, self.gallery_budget)
        tracks = self._empty_store()
        tracks.restore(clean)
        # Nothing below can fail: the tracker changes all at once or not at all.
        self.tracks = tracks
        if self.appearance_threshold_source != "explicit" and "appearance_threshold" in clean:
            self.appearance_threshold = clean["appearance_threshold"]
        self.frame_count = clean["frame_count"]
        self.next_track_id = clean["next_track_id"]
        self.next_birth = clean["next_birth"]
        last_index = clean["last_frame_index"]
        self.last_frame_index = None if last_index < 0 else last_index
        last_timestamp = clean["last_timestamp"]
        self.last_timestamp = None if np.isnan(last_timestamp) else last_timestamp


def _remapped(slots: np.ndarray, old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """`slots` with each entry of `old` replaced by the matching entry of `new`."""
    if len(old) == 0:
        return slots
    order = np.argsort(old)
    at = np.minimum(np.searchsorted(old[order], slots), len(old) - 1)
    return np.where(old[order][at] == slots, new[order][at], slots)


def _nan_to_inf(values: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(values), np.inf, values)


def _check_range(name: str, value: float, low: float | None, high: float | None) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low}, {'inf' if high is None else high}]"
        raise ValueError(f"{name} must be in {bounds}, got {value}")
