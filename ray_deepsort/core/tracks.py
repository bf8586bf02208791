"""Tracks: every track's filter state and lifecycle as columns of arrays, and the lifecycle.

A track is TENTATIVE when started, CONFIRMED after `minimum_consecutive_frames` hits, LOST
(long-lost, out of the cascade but re-identifiable) when a confirmed track is missed for more
than `max_age` frames, and DELETED when its slot is freed (`TrackState`). The transitions are
methods of `TrackStore` named as in Wojke et al.'s code: `start`, `predict`, `mark_hit`,
`confirm`, `revive` (LOST back to CONFIRMED by re-identification), `mark_missed`, `delete`; each
acts on an array of slots at once, so a frame's tracks move in a few numpy calls.

Tracks live in slots; a deleted track frees its slot for a later one. `active()` lists live
slots in creation order, which fixes the row order of every cost matrix (and so tie-breaking),
making results reproducible and state round trips exact. The columns double when full (up to
`max_capacity`) and shrink again (`compact`) once most slots are free, so a crowd that has left
does not pin memory.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from ray_deepsort.core.frame_detections import FrameDetections
from ray_deepsort.core.kalman_filter import KalmanFilter
from ray_deepsort.core.nn_matching import AppearanceGallery, ragged_positions

# Columns saved by state_dict, with their dtypes and per-track trailing shapes.
_COLUMNS: dict[str, tuple[type, tuple[int, ...]]] = {
    "mean": (np.float64, (8,)),
    "covariance": (np.float64, (8, 8)),
    "confirmed": (np.bool_, ()),
    "hits": (np.int64, ()),
    "age": (np.int64, ()),
    "time_since_update": (np.int64, ()),
    "track_id": (np.int64, ()),
    "birth": (np.int64, ()),
    "class_id": (np.int64, ()),
    "last_xyah": (np.float64, (4,)),
}


class TrackState(enum.IntEnum):
    """Where a track is in its life (`TrackStore.state`); not stored, derived from the columns."""

    TENTATIVE = 0  # started, not yet confirmed: no public ID; deleted on its first miss
    CONFIRMED = 1  # has a public ID; in the matching cascade
    LOST = 2  # confirmed, missed for more than max_age frames: re-identifiable only
    DELETED = 3  # a free slot


@dataclass(frozen=True)
class Lifecycle:
    """When tracks change state; the tracker derives it from its parameters."""

    minimum_consecutive_frames: int  # hits that confirm a tentative track (paper: n_init)
    max_age: int  # frames a confirmed track may be missed and stay in the cascade
    frame_rate: float  # converts frames missed into seconds, for the window below
    reid_window_seconds: float  # how long a LOST track is kept; 0: deleted after max_age
    max_lost_tracks: int  # most LOST tracks kept; those lost longest go first

    @property
    def keeps_lost(self) -> bool:
        """Whether confirmed tracks missed for more than max_age can become LOST at all."""
        return self.reid_window_seconds > 0 and self.max_lost_tracks > 0


class TrackStore:
    """Columns of track state (struct of arrays), each track's appearance gallery, and the
    lifecycle transitions over them."""

    # One row per slot (`_COLUMNS` gives dtypes and shapes); `alive` marks the used slots.
    mean: np.ndarray  # Kalman state (cx, cy, a, h and their velocities)
    covariance: np.ndarray
    confirmed: np.ndarray
    hits: np.ndarray
    age: np.ndarray
    time_since_update: np.ndarray
    track_id: np.ndarray  # public ID; -1 until confirmed
    birth: np.ndarray  # creation counter: orders tracks deterministically
    class_id: np.ndarray
    # Last observed box (cx, cy, a, h): where a long-lost track may reappear is bounded from
    # what was seen, not from a Kalman prediction whose velocity drifts while nothing is.
    last_xyah: np.ndarray

    def __init__(
        self,
        gallery: AppearanceGallery,
        lifecycle: Lifecycle,
        capacity: int = 16,
        max_capacity: int | None = None,
    ) -> None:
        self.gallery = gallery
        self.lifecycle = lifecycle
        self.max_capacity = max_capacity  # most live tracks `start` keeps; doubling stops here
        self.alive = np.zeros(0, np.bool_)
        for name, (dtype, shape) in _COLUMNS.items():  # empty: `_grow` sizes them
            setattr(self, name, np.zeros((0, *shape), dtype))
        self._grow(capacity if max_capacity is None else min(capacity, max_capacity))

    def __len__(self) -> int:
        return int(self.alive.sum())

    @property
    def capacity(self) -> int:
        return len(self.alive)

    @property
    def nbytes(self) -> int:
        """Bytes held by the columns and the gallery."""
        columns = sum(getattr(self, name).nbytes for name in _COLUMNS) + self.alive.nbytes
        return columns + self.gallery.nbytes

    def compact(self, min_capacity: int = 16) -> None:
        """Shrink to twice the live tracks when fewer than a quarter of the slots are live.

        Slots are renumbered; nothing observable changes because `active()` orders by birth.
        """
        live = np.flatnonzero(self.alive)
        target = max(min_capacity, 2 * len(live))
        if self.capacity <= 2 * target:
            return
        keep = np.concatenate([live, np.flatnonzero(~self.alive)[: target - len(live)]])
        self.alive = self.alive[keep]
        for name in _COLUMNS:
            setattr(self, name, getattr(self, name)[keep])
        self.gallery.keep(keep)

    def _grow(self, capacity: int) -> None:
        old = len(self.alive)
        if capacity <= old:
            return
        self.alive = np.concatenate([self.alive, np.zeros(capacity - old, np.bool_)])
        for name, (dtype, shape) in _COLUMNS.items():
            column = getattr(self, name)
            grown = np.zeros((capacity, *shape), dtype)
            grown[:old] = column
            setattr(self, name, grown)
        self.gallery.resize(capacity)

    def active(self) -> np.ndarray:
        """Live slots in creation order."""
        slots = np.flatnonzero(self.alive)
        return slots[np.argsort(self.birth[slots], kind="stable")]

    def _allocate(self, count: int) -> np.ndarray:
        """Free slots for `count` new tracks (growing the columns when needed)."""
        free = np.flatnonzero(~self.alive)
        if len(free) < count:
            needed = len(self.alive) + count - len(free)
            doubled = 2 * len(self.alive)
            if self.max_capacity is not None:
                doubled = min(doubled, self.max_capacity)
            self._grow(max(doubled, needed))
            free = np.flatnonzero(~self.alive)
        slots = free[:count]
        self.alive[slots] = True
        self.gallery.clear(slots)
        return slots

    # ------------------------------------------------------------------ lifecycle
    def state(self, slots: np.ndarray) -> np.ndarray:
        """Each slot's `TrackState` (int8 codes).

        Between frames a track is LOST only while the lifecycle keeps it; within a frame, after
        `predict` and before `mark_missed`, LOST also covers confirmed tracks that have just
        been missed for more than max_age and are about to be deleted.
        """
        states = np.where(
            self.confirmed[slots], np.int8(TrackState.CONFIRMED), np.int8(TrackState.TENTATIVE)
        )
        states[self._is_lost(slots)] = TrackState.LOST
        states[~self.alive[slots]] = TrackState.DELETED
        return states

    def lost(self) -> np.ndarray:
        """LOST slots in creation order."""
        slots = self.active()
        return slots[self._is_lost(slots)]

    def start(
        self,
        detections: FrameDetections,
        rows: np.ndarray,
        kalman_filter: KalmanFilter,
        first_birth: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """New TENTATIVE tracks from detection `rows`; returns (their slots, the rows started).

        Births count on from `first_birth`, in row order. When `max_capacity` leaves too little
        room, LOST tracks go first (a person in view is worth more than one long gone), then
        the least confident rows start no track (ties: detection order).
        """
        if self.max_capacity is not None:
            room = self.max_capacity - len(self)
            if len(rows) > room:
                self._evict_lost(len(rows) - room)
                room = self.max_capacity - len(self)
            if len(rows) > room:
                keep = np.argsort(-detections.confidence[rows], kind="stable")[: max(room, 0)]
                rows = np.sort(rows[keep])
        slots = self._allocate(len(rows))
        self.mean[slots], self.covariance[slots] = kalman_filter.initiate(detections.xyah[rows])
        self.confirmed[slots] = False
        self.hits[slots] = 1
        self.age[slots] = 1
        self.time_since_update[slots] = 0
        self.track_id[slots] = -1
        self.birth[slots] = first_birth + np.arange(len(rows))
        self.class_id[slots] = detections.class_id[rows]
        self.last_xyah[slots] = detections.xyah[rows]
        self._remember(slots, detections, rows)
        return slots, rows

    def predict(self, slots: np.ndarray, kalman_filter: KalmanFilter, steps: int) -> np.ndarray:
        """Advance `slots` by `steps` frames; returns those still tracked (all but the LOST).

        A LOST track's predicted box has long stopped meaning anything: it is not predicted,
        and re-identification re-initiates it. A gap that takes a track past max_age makes it
        LOST after this frame, so no more than max_age + 1 steps are ever predicted.
        """
        tracked = slots[~self._is_lost(slots)]
        self.mean[tracked], self.covariance[tracked] = kalman_filter.predict(
            self.mean[tracked], self.covariance[tracked], min(steps, self.lifecycle.max_age + 1)
        )
        self.age[slots] += steps
        self.time_since_update[slots] += steps
        return tracked

    def mark_hit(
        self,
        slots: np.ndarray,
        detections: FrameDetections,
        rows: np.ndarray,
        kalman_filter: KalmanFilter,
    ) -> np.ndarray:
        """Correct `slots` with their detection `rows`; returns the TENTATIVE ones that now
        have enough hits to be confirmed (by `confirm`, or by `revive` of a LOST track)."""
        self.mean[slots], self.covariance[slots] = kalman_filter.update(
            self.mean[slots], self.covariance[slots], detections.xyah[rows]
        )
        self.hits[slots] += 1
        self.time_since_update[slots] = 0
        self.last_xyah[slots] = detections.xyah[rows]
        self._remember(slots, detections, rows)
        due = self.hits[slots] >= self.lifecycle.minimum_consecutive_frames
        return slots[~self.confirmed[slots] & due]

    def confirm(self, slots: np.ndarray, first_id: int) -> int:
        """TENTATIVE to CONFIRMED: public IDs from `first_id` in creation order (so IDs do not
        depend on slot numbering); returns the next free ID."""
        slots = slots[np.argsort(self.birth[slots], kind="stable")]
        self.confirmed[slots] = True
        self.track_id[slots] = first_id + np.arange(len(slots))
        return first_id + len(slots)

    def revive(self, lost: np.ndarray, found: np.ndarray) -> None:
        """LOST to CONFIRMED: each `lost` track takes over the filter state, hits and features
        of the confirming track in `found` that re-identified it, and keeps its own ID and
        gallery; the `found` tracks are deleted."""
        self.mean[lost], self.covariance[lost] = self.mean[found], self.covariance[found]
        self.last_xyah[lost] = self.last_xyah[found]
        self.time_since_update[lost] = 0
        self.hits[lost] += self.hits[found]
        gathered = self.gallery.export(found)
        counts = gathered["gallery_count"]
        starts = ragged_positions(counts)[1]
        for k in range(int(counts.max(initial=0))):  # at most minimum_consecutive_frames rounds
            has = counts > k
            self.gallery.add(lost[has], gathered["gallery_features"][starts[has] + k])
        self.delete(found)

    def mark_missed(self, slots: np.ndarray) -> None:
        """Tracks not matched this frame (`predict` counted the frames they were missed).

        TENTATIVE tracks are deleted: a detection must be matched on every frame until it is
        confirmed. A confirmed track missed for more than max_age frames becomes LOST if the
        lifecycle keeps lost tracks, it has a feature to be found by and the window is still
        open; otherwise it is deleted. Then LOST tracks beyond `max_lost_tracks` go, those
        lost longest first.
        """
        life = self.lifecycle
        since = self.time_since_update[slots]
        expired = since > life.max_age
        if life.keeps_lost:
            expired &= (since / life.frame_rate > life.reid_window_seconds) | (
                self.gallery.count[slots] == 0
            )
        self.delete(slots[~self.confirmed[slots] | expired])
        if life.keeps_lost:  # otherwise no track outlives max_age: nothing to bound
            lost = self.alive & self._is_lost(np.arange(self.capacity))
            self._evict_lost(int(lost.sum()) - life.max_lost_tracks)

    def delete(self, slots: np.ndarray) -> None:
        """Any state to DELETED: the slots are free for new tracks."""
        self.alive[slots] = False
        self.gallery.clear(slots)

    def _is_lost(self, slots: np.ndarray) -> np.ndarray:
        """Which live `slots` are LOST (a cheaper `state(slots) == LOST`)."""
        return self.confirmed[slots] & (self.time_since_update[slots] > self.lifecycle.max_age)

    def _evict_lost(self, count: int) -> None:
        """Delete up to `count` LOST tracks, those lost longest first (ties: oldest)."""
        if count <= 0:
            return
        lost = self.lost()  # creation order, so the stable sort breaks ties by age
        order = np.argsort(-self.time_since_update[lost], kind="stable")
        self.delete(lost[order[:count]])

    def _remember(self, slots: np.ndarray, detections: FrameDetections, rows: np.ndarray) -> None:
        """Add the usable features of detection `rows` to the galleries of `slots`."""
        if detections.features is not None:
            with_feature = detections.has_feature[rows]
            self.gallery.add(slots[with_feature], detections.features[rows[with_feature]])

    def export(self) -> dict[str, np.ndarray]:
        """Live tracks' columns and galleries in creation order (the `state_dict` format)."""
        slots = self.active()
        state = {name: getattr(self, name)[slots].copy() for name in _COLUMNS}
        state.update(self.gallery.export(slots))
        return state

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Replace every track with those of a validated `export()` (slots 0.. in its order)."""
        count = len(state["track_id"])
        self.alive[:] = False
        self._grow(count)
        slots = np.arange(count)
        self.alive[slots] = True
        for name, (dtype, _) in _COLUMNS.items():
            getattr(self, name)[slots] = np.asarray(state[name], dtype)
        self.gallery.restore(slots, state)
