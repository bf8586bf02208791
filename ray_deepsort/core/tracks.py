"""Track store: every track's filter state and lifecycle counters as columns of arrays.

Tracks live in slots; a deleted track frees its slot for a later one. `active()` lists live
slots in creation order, which fixes the row order of every cost matrix (and so tie-breaking),
making results reproducible and state round trips exact. The columns double when full (up to
`max_capacity`) and shrink again (`compact`) once most slots are free, so a crowd that has left
does not pin memory.
"""

from __future__ import annotations

import numpy as np

from ray_deepsort.core.nn_matching import AppearanceGallery

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


class TrackStore:
    """Columns of track state (struct of arrays) plus each track's appearance gallery."""

    def __init__(
        self, gallery: AppearanceGallery, capacity: int = 16, max_capacity: int | None = None
    ) -> None:
        self.gallery = gallery
        self.max_capacity = max_capacity  # doubling stops here; more slots only when asked for
        self.alive = np.zeros(0, np.bool_)
        self.mean = np.zeros((0, 8))
        self.covariance = np.zeros((0, 8, 8))
        self.confirmed = np.zeros(0, np.bool_)
        self.hits = np.zeros(0, np.int64)
        self.age = np.zeros(0, np.int64)
        self.time_since_update = np.zeros(0, np.int64)
        self.track_id = np.zeros(0, np.int64)  # public ID; -1 until confirmed
        self.birth = np.zeros(0, np.int64)  # creation counter: orders tracks deterministically
        self.class_id = np.zeros(0, np.int64)
        # Last observed box (cx, cy, a, h): where a long-lost track may reappear is bounded from
        # what was seen, not from a Kalman prediction whose velocity drifts while nothing is.
        self.last_xyah = np.zeros((0, 4))
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

    def allocate(self, count: int) -> np.ndarray:
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

    def delete(self, slots: np.ndarray) -> None:
        self.alive[slots] = False
        self.gallery.clear(slots)

    def export(self) -> dict[str, np.ndarray]:
        slots = self.active()
        state = {name: getattr(self, name)[slots].copy() for name in _COLUMNS}
        state.update(self.gallery.export(slots))
        return state

    def restore(self, state: dict[str, np.ndarray]) -> None:
        count = len(state["track_id"])
        self.alive[:] = False
        self._grow(count)
        slots = np.arange(count)
        self.alive[slots] = True
        for name, (dtype, _) in _COLUMNS.items():
            getattr(self, name)[slots] = np.asarray(state[name], dtype)
        self.gallery.restore(slots, state)
