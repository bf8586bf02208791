"""DeepSORT (Wojke et al. 2017) behind the Roboflow `trackers` API.

One `update()` per frame: predict every track, match confirmed tracks to detections through the
matching cascade (appearance + Mahalanobis cost, both gated), match what is left by IoU, correct
matched tracks (confirming those with enough hits), age out missed ones, start tentative tracks
from confident unmatched detections.

Long-term re-identification: a confirmed track missed for more than `max_age` frames leaves the
cascade (its predicted box has long stopped meaning anything) but, if it has appearance features,
stays "long-lost" for `reid_window_seconds`. A tentative track about to be confirmed takes a
long-lost track's place (ID and gallery) if the two are mutual nearest neighbours in appearance,
within the gate, and it is near enough to where the lost one was last seen. A person hidden for
seconds behind a pillar thereby keeps their ID, the cascade still prefers recently seen tracks,
and a one-frame false detection cannot wake a lost track (it is never confirmed).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import numpy as np

from ray_deepsort.core.boxes import iou_matrix, valid_box_mask, xyah_to_xyxy, xyxy_to_xyah
from ray_deepsort.core.defaults import (
    DEFAULT_APPEARANCE_THRESHOLD,
    DEFAULT_APPEARANCE_WEIGHT,
    is_default,
    resolve_default,
)
from ray_deepsort.core.detections import to_native, with_tracker_ids
from ray_deepsort.core.kalman_filter import CHI2_95_2DOF, CHI2_95_4DOF, KalmanFilter
from ray_deepsort.core.linear_assignment import matching_cascade, min_cost_matching
from ray_deepsort.core.nn_matching import (
    AppearanceGallery,
    DistanceMetric,
    GalleryDtype,
    l2_normalize,
    ragged_positions,
)
from ray_deepsort.core.state import STATE_FORMAT_VERSION, state_checksum, validate_state
from ray_deepsort.core.tracks import TrackStore

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
        self.tracks = TrackStore(
            AppearanceGallery(self.gallery_budget, self.distance_metric, self.gallery_dtype),
            max_capacity=self.max_tracks,
        )
        self.frame_count = 0
        self.next_track_id = 1
        self.next_birth = 0
        self.last_frame_index: int | None = None
        self.last_timestamp: float | None = None

    # ------------------------------------------------------------------ per frame
    def update(
        self,
        detections: Any,
        frame: np.ndarray | None = None,
        embeddings: np.ndarray | None = None,
        frame_index: int | None = None,
        timestamp: float | None = None,
    ) -> Any:
        """Track one frame; returns a copy of `detections` (same type) with `tracker_id` set.

        `tracker_id` is -1 for boxes not matched to a confirmed track, including invalid boxes
        (non-finite, zero or negative size, or wholly outside `frame`), which are ignored.
        Appearance comes from `embeddings` [N, D] if given, else from `reid_model` on `frame`,
        else the frame is matched by motion alone. `frame_index` or `timestamp` (seconds) let the
        filter predict across dropped frames; they must increase from call to call.
        """
        native = to_native(detections)
        steps = self._steps(frame_index, timestamp)
        tracker_id = self._update(native, frame, embeddings, steps)
        return with_tracker_ids(detections, tracker_id)

    def _steps(self, frame_index: int | None, timestamp: float | None) -> int:
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

    def _update(
        self,
        detections: Any,
        frame: np.ndarray | None,
        embeddings: np.ndarray | None,
        steps: int,
    ) -> np.ndarray:
        self.frame_count += 1
        n = len(detections)
        store = self.tracks
        valid = valid_box_mask(detections.xyxy, None if frame is None else frame.shape)
        features, has_feature = self._features(detections.xyxy, valid, frame, embeddings)
        det_index = np.flatnonzero(valid)
        det_xyah = xyxy_to_xyah(detections.xyxy[det_index])
        det_class = detections.class_id_or_zeros()[det_index]
        det_conf = detections.confidence_or_ones()[det_index]
        det_features = None if features is None else features[det_index]
        det_has_feature = has_feature[det_index]

        # Long-lost tracks (missed for more than max_age frames at the end of the last frame) are
        # neither predicted nor in the cascade: re-identification re-initiates them. Tracks a gap
        # takes past max_age leave the cascade after this frame, so cap the prediction work.
        slots = store.active()
        long_lost = self._is_long_lost(slots)
        tracked = slots[~long_lost]
        store.mean[tracked], store.covariance[tracked] = self.kalman_filter.predict(
            store.mean[tracked], store.covariance[tracked], min(steps, self.max_age + 1)
        )
        store.age[slots] += steps
        store.time_since_update[slots] += steps

        matched, free = self._associate(
            tracked, steps, det_xyah, detections.xyxy[det_index], det_class, det_features,
            det_has_feature,
        )  # fmt: skip
        merged_from, merged_into = self._apply_matches(
            matched[:, 0], matched[:, 1], det_xyah, det_features, det_has_feature
        )
        matched[:, 0] = _remapped(matched[:, 0], merged_from, merged_into)
        is_matched = np.zeros(len(store.alive), np.bool_)
        is_matched[matched[:, 0]] = True
        unmatched = slots[~is_matched[slots]]
        self._age_out(unmatched[store.alive[unmatched]])
        new_slots, new_rows = self._start_tracks(
            free, det_xyah, det_class, det_conf, det_features, det_has_feature
        )

        tracker_id = np.full(n, -1, np.int64)
        out_slots = np.concatenate([matched[:, 0], new_slots])
        out_rows = np.concatenate([matched[:, 1], new_rows]).astype(np.int64)
        tracker_id[det_index[out_rows]] = np.where(
            store.confirmed[out_slots], store.track_id[out_slots], -1
        )
        store.compact()  # renumbers slots: only once no slot index is held any more
        return tracker_id

    def _associate(
        self,
        slots: np.ndarray,
        steps: int,
        det_xyah: np.ndarray,
        det_xyxy: np.ndarray,
        det_class: np.ndarray,
        det_features: np.ndarray | None,
        det_has_feature: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Matches [K, 2] of (slot, detection row) and the detection rows left free.

        Confirmed tracks go through the matching cascade; then tentative tracks and confirmed
        ones that were seen on the previous frame but missed by the cascade are matched by IoU.
        """
        store = self.tracks
        confirmed = slots[store.confirmed[slots]]
        cost = self._cascade_cost(confirmed, det_xyah, det_class, det_features, det_has_feature)
        cascade, missed_rows, free = matching_cascade(cost, store.time_since_update[confirmed])
        missed = confirmed[missed_rows]
        just_missed = missed[store.time_since_update[missed] == steps]
        iou_slots = np.concatenate([slots[~store.confirmed[slots]], just_missed])
        iou_cost = self._iou_cost(iou_slots, det_xyxy[free], det_class[free])
        iou_matches, _, still_free = min_cost_matching(iou_cost)
        matches = np.concatenate(
            [
                np.stack([confirmed[cascade[:, 0]], cascade[:, 1]], axis=1),
                np.stack([iou_slots[iou_matches[:, 0]], free[iou_matches[:, 1]]], axis=1),
            ]
        )
        return matches, free[still_free]

    @property
    def reid_enabled(self) -> bool:
        """Whether missed confirmed tracks outlive `max_age` as long-lost (see the class doc)."""
        return (
            self.reid_window_seconds > 0 and self.appearance_weight > 0 and self.max_lost_tracks > 0
        )

    def _is_long_lost(self, slots: np.ndarray) -> np.ndarray:
        """Which `slots` are long-lost: confirmed and missed for more than max_age frames.

        Between frames only long-lost tracks can be in that state: every other one was deleted.
        """
        store = self.tracks
        return store.confirmed[slots] & (store.time_since_update[slots] > self.max_age)

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
        lost = self._lost_slots()
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

    def _merge(self, found: np.ndarray, lost: np.ndarray) -> None:
        """Long-lost tracks take over the state and features of the tracks that found them."""
        store = self.tracks
        store.mean[lost], store.covariance[lost] = store.mean[found], store.covariance[found]
        store.last_xyah[lost] = store.last_xyah[found]
        store.time_since_update[lost] = 0
        store.hits[lost] += store.hits[found]
        gathered = store.gallery.export(found)
        counts = gathered["gallery_count"]
        starts = ragged_positions(counts)[1]
        for k in range(int(counts.max(initial=0))):  # at most minimum_consecutive_frames rounds
            has = counts > k
            store.gallery.add(lost[has], gathered["gallery_features"][starts[has] + k])
        store.delete(found)

    def _age_out(self, unmatched: np.ndarray) -> None:
        """Delete missed tentative tracks and expired confirmed ones; bound the long-lost.

        A confirmed track missed for more than max_age frames stays (long-lost) only while
        re-identification is on, it has an embedding to be found by, and the window is open.
        """
        store = self.tracks
        since = store.time_since_update[unmatched]
        expired = since > self.max_age
        if self.reid_enabled:
            expired &= (since / self.frame_rate > self.reid_window_seconds) | (
                store.gallery.count[unmatched] == 0
            )
        store.delete(unmatched[~store.confirmed[unmatched] | expired])
        if self.reid_enabled:  # otherwise no track outlives max_age: nothing to bound
            lost = store.alive & self._is_long_lost(np.arange(len(store.alive)))
            self._evict_lost(int(lost.sum()) - self.max_lost_tracks)

    def _lost_slots(self) -> np.ndarray:
        slots = self.tracks.active()
        return slots[self._is_long_lost(slots)]

    def _evict_lost(self, count: int) -> None:
        """Delete up to `count` long-lost tracks, those lost longest first (ties: oldest)."""
        if count <= 0:
            return
        lost = self._lost_slots()  # creation order, so the stable sort breaks ties by age
        order = np.argsort(-self.tracks.time_since_update[lost], kind="stable")
        self.tracks.delete(lost[order[:count]])

    def _features(
        self,
        xyxy: np.ndarray,
        valid: np.ndarray,
        frame: np.ndarray | None,
        embeddings: np.ndarray | None,
    ) -> tuple[np.ndarray | None, np.ndarray]:
        """Unit-length features [N, D] (or None) and which rows hold a usable one."""
        n = len(xyxy)
        if embeddings is not None:
            features = np.asarray(embeddings, dtype=np.float32)
            if features.ndim != 2 or len(features) != n:
                raise ValueError(
                    f"embeddings must have shape [{n}, D] for {n} detections, got {features.shape}"
                )
        elif frame is not None and self.reid_model is not None and self.appearance_weight > 0:
            features = None
            if valid.any():
                embedded = np.asarray(self.reid_model.embed(frame, xyxy[valid]), np.float32)
                features = np.zeros((n, embedded.shape[1]), np.float32)
                features[valid] = embedded
        else:
            return None, np.zeros(n, np.bool_)
        if features is None:
            return None, np.zeros(n, np.bool_)
        norms = np.linalg.norm(features, axis=1)
        has_feature = valid & np.isfinite(norms) & (norms > 0)
        features = np.where(has_feature[:, None], features, 0.0).astype(np.float32)
        return l2_normalize(features), has_feature

    def _cascade_cost(
        self,
        slots: np.ndarray,
        det_xyah: np.ndarray,
        det_class: np.ndarray,
        det_features: np.ndarray | None,
        det_has_feature: np.ndarray,
    ) -> np.ndarray:
        """Cost [tracks, detections] of the cascade, inf where a gate forbids the pair.

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
            store.mean[slots], store.covariance[slots], det_xyah, self.gate_position_only
        )
        iou = iou_matrix(xyah_to_xyxy(store.mean[slots, :4]), xyah_to_xyxy(det_xyah))
        cost = 1.0 - iou
        allowed = mahalanobis <= self.gating_threshold
        if not self.class_agnostic:
            allowed &= store.class_id[slots][:, None] == det_class[None, :]
        overlaps = iou >= self.minimum_iou_threshold
        if det_features is not None and self.appearance_weight > 0:
            # Appearance only where the gates leave a choice: the rest is inf whatever it costs.
            appearance = store.gallery.distance(
                slots, det_features, where=allowed & det_has_feature[None, :]
            )
            known = ~np.isnan(appearance)
            weight = self.appearance_weight
            cost = np.where(known, weight * appearance + (1 - weight) * cost, cost)
            allowed &= ~(known & (appearance > self.appearance_threshold))
            overlaps |= self._mutual_nearest(
                slots, det_features, det_has_feature, allowed & known & ~overlaps
            )
        return np.where(allowed & overlaps, cost, np.inf)

    def _mutual_nearest(
        self,
        slots: np.ndarray,
        det_features: np.ndarray,
        det_has_feature: np.ndarray,
        pairs: np.ndarray,
    ) -> np.ndarray:
        """Which of `pairs` [tracks, detections] are mutual nearest neighbours in appearance.

        Compared against every confirmed track and every detection with a feature, whatever
        the gates say; only the rows and columns that hold a pair are computed.
        """
        mutual = np.zeros_like(pairs)
        if not pairs.any():
            return mutual
        rows, cols = np.flatnonzero(pairs.any(axis=1)), np.flatnonzero(pairs.any(axis=0))
        dets = np.flatnonzero(det_has_feature)
        gallery = self.tracks.gallery
        by_track = _nan_to_inf(gallery.distance(slots[rows], det_features[dets]))
        by_detection = _nan_to_inf(gallery.distance(slots, det_features[cols]))
        nearest_detection = np.zeros_like(pairs)
        nearest_detection[np.ix_(rows, dets)] = by_track <= by_track.min(axis=1, keepdims=True)
        nearest_track = np.zeros_like(pairs)
        nearest_track[:, cols] = by_detection <= by_detection.min(axis=0, keepdims=True)
        return pairs & nearest_detection & nearest_track

    def _iou_cost(
        self, slots: np.ndarray, det_xyxy: np.ndarray, det_class: np.ndarray
    ) -> np.ndarray:
        predicted = xyah_to_xyxy(self.tracks.mean[slots, :4])
        iou = iou_matrix(predicted, det_xyxy)
        gated = iou < self.minimum_iou_threshold
        if not self.class_agnostic:
            gated |= self.tracks.class_id[slots][:, None] != det_class[None, :]
        return np.where(gated, np.inf, 1.0 - iou)

    def _apply_matches(
        self,
        slots: np.ndarray,
        rows: np.ndarray,
        det_xyah: np.ndarray,
        det_features: np.ndarray | None,
        det_has_feature: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Correct matched tracks; confirm those with enough hits (see `_confirm`)."""
        store = self.tracks
        store.mean[slots], store.covariance[slots] = self.kalman_filter.update(
            store.mean[slots], store.covariance[slots], det_xyah[rows]
        )
        store.hits[slots] += 1
        store.time_since_update[slots] = 0
        store.last_xyah[slots] = det_xyah[rows]
        if det_features is not None:
            with_feature = det_has_feature[rows]
            store.gallery.add(slots[with_feature], det_features[rows[with_feature]])
        ready = slots[
            ~store.confirmed[slots] & (store.hits[slots] >= self.minimum_consecutive_frames)
        ]
        return self._confirm(ready)

    def _confirm(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Confirm tentative tracks: re-identified ones merge into their long-lost track (and
        keep its ID), the others get public IDs in creation order.

        Returns (merged slots, the long-lost slots they merged into): the former are deleted.
        """
        store = self.tracks
        found, lost = self._reidentify(slots)
        self._merge(found, lost)
        slots = slots[~np.isin(slots, found)]
        slots = slots[np.argsort(store.birth[slots], kind="stable")]
        store.confirmed[slots] = True
        store.track_id[slots] = self.next_track_id + np.arange(len(slots))
        self.next_track_id += len(slots)
        return found, lost

    def _start_tracks(
        self,
        free_rows: np.ndarray,
        det_xyah: np.ndarray,
        det_class: np.ndarray,
        det_conf: np.ndarray,
        det_features: np.ndarray | None,
        det_has_feature: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        rows = free_rows[det_conf[free_rows] >= self.track_activation_threshold]
        store = self.tracks
        room = self.max_tracks - len(store)
        if len(rows) > room:  # a person in view is worth more than a long-lost track
            self._evict_lost(len(rows) - room)
            room = self.max_tracks - len(store)
        if len(rows) > room:  # keep the most confident (stable: ties in detection order)
            rows = np.sort(rows[np.argsort(-det_conf[rows], kind="stable")[: max(room, 0)]])
        slots = store.allocate(len(rows))
        store.mean[slots], store.covariance[slots] = self.kalman_filter.initiate(det_xyah[rows])
        store.confirmed[slots] = False
        store.hits[slots] = 1
        store.age[slots] = 1
        store.time_since_update[slots] = 0
        store.track_id[slots] = -1
        store.birth[slots] = self.next_birth + np.arange(len(rows))
        store.class_id[slots] = det_class[rows]
        store.last_xyah[slots] = det_xyah[rows]
        self.next_birth += len(rows)
        if det_features is not None:
            with_feature = det_has_feature[rows]
            store.gallery.add(slots[with_feature], det_features[rows[with_feature]])
        if self.minimum_consecutive_frames <= 1:
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
        state["state_checksum"] = np.asarray(state_checksum(state), np.int64)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()` output; later updates then match the original tracker's.

        The whole state is validated first (`ray_deepsort.core.state`): an incomplete or
        inconsistent one raises `InvalidTrackerState` (a ValueError naming the field) and leaves
        this tracker exactly as it was. The saved appearance gate replaces this tracker's unless
        the caller set it explicitly. Version-1 states (before long-term re-identification) load
        with each track's last observed box taken from its filter mean.
        """
        clean = validate_state(state, self.gallery_budget)
        tracks = TrackStore(
            AppearanceGallery(self.gallery_budget, self.distance_metric, self.gallery_dtype),
            max_capacity=self.max_tracks,
        )
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
