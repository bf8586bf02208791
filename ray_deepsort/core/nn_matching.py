"""Appearance galleries: the last `budget` features of every track, and nearest-neighbour distance.

Storage is one array [slots, budget, dim] with ring-buffer heads, so a frame's distances are one
gather and one matrix product, and a track's memory is bounded by `budget * dim` values
(float32, or float16 to halve it: distances are still computed in float32).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

DistanceMetric = Literal["cosine", "euclidean"]
GalleryDtype = Literal["float32", "float16"]


def l2_normalize(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


class AppearanceGallery:
    """Per-slot ring buffers of L2-normalised features.

    Distances: "cosine" is 1 - cosine similarity (0..2); "euclidean" is the Euclidean distance
    between unit vectors (0..2). Both take the nearest gallery entry, as in the paper.
    """

    def __init__(
        self,
        budget: int = 100,
        metric: DistanceMetric = "cosine",
        dtype: GalleryDtype = "float32",
    ) -> None:
        if budget < 1:
            raise ValueError(f"gallery budget must be >= 1, got {budget}")
        if metric not in ("cosine", "euclidean"):
            raise ValueError(f"distance_metric must be 'cosine' or 'euclidean', got {metric!r}")
        if dtype not in ("float32", "float16"):
            raise ValueError(f"gallery_dtype must be 'float32' or 'float16', got {dtype!r}")
        self.budget = budget
        self.metric: DistanceMetric = metric
        self.dtype = np.dtype(dtype)
        self.features: np.ndarray | None = None  # [capacity, budget, dim], allocated on first add
        self.count = np.zeros(0, np.int64)
        self.head = np.zeros(0, np.int64)

    @property
    def dim(self) -> int | None:
        return None if self.features is None else self.features.shape[2]

    @property
    def nbytes(self) -> int:
        features = 0 if self.features is None else self.features.nbytes
        return features + self.count.nbytes + self.head.nbytes

    def resize(self, capacity: int) -> None:
        """Grow to `capacity` slots (the track store calls this when it grows)."""
        old = len(self.count)
        if capacity <= old:
            return
        self.count = np.concatenate([self.count, np.zeros(capacity - old, np.int64)])
        self.head = np.concatenate([self.head, np.zeros(capacity - old, np.int64)])
        if self.features is not None:
            grown = np.zeros((capacity, self.budget, self.features.shape[2]), self.dtype)
            grown[:old] = self.features
            self.features = grown

    def keep(self, slots: np.ndarray) -> None:
        """Keep only `slots`, renumbered 0..len(slots)-1, in arrays of len(slots) (shrinking)."""
        self.count = self.count[slots]
        self.head = self.head[slots]
        if self.features is not None:
            self.features = self.features[slots]

    def clear(self, slots: np.ndarray) -> None:
        self.count[slots] = 0
        self.head[slots] = 0

    def add(self, slots: np.ndarray, features: np.ndarray) -> None:
        """Append one feature per slot (slots unique), overwriting the oldest when full."""
        if len(slots) == 0:
            return
        features = l2_normalize(features)
        if self.features is None:
            self.features = np.zeros((len(self.count), self.budget, features.shape[1]), self.dtype)
        elif features.shape[1] != self.features.shape[2]:
            raise ValueError(
                f"embedding dimension changed from {self.features.shape[2]} to {features.shape[1]}"
            )
        self.features[slots, self.head[slots]] = features
        self.head[slots] = (self.head[slots] + 1) % self.budget
        self.count[slots] = np.minimum(self.count[slots] + 1, self.budget)

    def distance(
        self, slots: np.ndarray, queries: np.ndarray, where: np.ndarray | None = None
    ) -> np.ndarray:
        """Nearest-neighbour distance [len(slots), len(queries)]; NaN for empty galleries.

        With a boolean mask `where` [len(slots), len(queries)], only those pairs are computed
        (the rest are NaN): each gallery is multiplied by its own few candidates, so gated
        association costs a fraction of the full product.
        """
        out = np.full((len(slots), len(queries)), np.nan)
        counts = self.count[slots] if len(slots) else np.zeros(0, np.int64)
        if self.features is None or len(queries) == 0 or not (counts > 0).any():
            return out
        queries = l2_normalize(queries)
        if where is None:
            where = np.ones(out.shape, np.bool_)
        where = where & (counts > 0)[:, None]
        rows = np.flatnonzero(where.any(axis=1))
        if len(rows) == 0:
            return out
        per_row = int(where[rows].sum(axis=1).max())
        if len(rows) * per_row * 2 > where.size:  # dense: one product over every pair
            best = self._best_similarity(slots[rows], queries)
            cols = np.broadcast_to(np.arange(len(queries)), (len(rows), len(queries)))
        else:  # sparse: each row's candidate columns first (stable), padded with non-candidates
            cols = np.argsort(~where[rows], axis=1, kind="stable")[:, :per_row]
            best = self._best_similarity(slots[rows], queries[cols])
        if self.metric == "cosine":
            distance = 1.0 - best
        else:
            distance = np.sqrt(np.clip(2.0 - 2.0 * best, 0.0, None))
        out[rows[:, None], cols] = distance
        out[~where] = np.nan
        return out

    def _best_similarity(self, slots: np.ndarray, queries: np.ndarray) -> np.ndarray:
        """Largest similarity of each slot's gallery to queries [Q, dim] (shared by every slot)
        or [len(slots), K, dim] (per slot); float64 [len(slots), Q or K]."""
        assert self.features is not None
        depth = int(self.count[slots].max())
        # Entries 0..count-1 of each ring buffer are valid (writes start at 0 and wrap at budget).
        first, stop = int(slots.min()), int(slots.max()) + 1
        if stop - first <= 2 * len(slots):
            # Mostly one run of slots (the track store hands out the lowest free slots): multiply
            # the galleries in place through a slice view, since copying them out costs more than
            # the product for 1280-d features; rows not asked for are computed and dropped.
            entries, counts = self.features[first:stop, :depth], self.count[first:stop]
            rows: np.ndarray | None = slots - first
            if queries.ndim == 3:
                padded = np.zeros((stop - first, *queries.shape[1:]), np.float32)
                padded[rows] = queries
                queries = padded
        else:
            entries, counts, rows = self.features[slots, :depth], self.count[slots], None
        entries = entries.astype(np.float32, copy=False)
        if queries.ndim == 2:
            similarity = np.matmul(entries, queries.T)  # [slots, depth, Q]
        else:
            similarity = np.matmul(entries, queries.transpose(0, 2, 1))  # [slots, depth, K]
        if counts.min() < depth:  # skipped in the steady state, when the galleries are full
            similarity[np.arange(depth)[None, :] >= counts[:, None]] = -np.inf
        best = similarity.max(axis=1).astype(np.float64)
        return best if rows is None else best[rows]

    def export(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """Valid entries of `slots` in storage order, plus counts and heads (exact round trip)."""
        counts = self.count[slots]
        dim = 0 if self.features is None else self.features.shape[2]
        if self.features is None or counts.sum() == 0:
            entries = np.zeros((0, dim), self.dtype)
        else:
            entries = self.features[np.repeat(slots, counts), ragged_positions(counts)[0]]
        return {
            "gallery_features": entries,
            "gallery_count": counts.copy(),
            "gallery_head": self.head[slots].copy(),
            "gallery_dim": np.asarray(dim, np.int64),
        }

    def restore(self, slots: np.ndarray, state: dict[str, np.ndarray]) -> None:
        counts = np.asarray(state["gallery_count"], np.int64)
        dim = int(state["gallery_dim"])
        if counts.size and counts.max() > self.budget:
            raise ValueError(
                f"state holds galleries of {counts.max()} features, budget is {self.budget}"
            )
        self.features = None
        if dim > 0:
            self.features = np.zeros((len(self.count), self.budget, dim), self.dtype)
            rows, cols = np.repeat(slots, counts), ragged_positions(counts)[0]
            self.features[rows, cols] = np.asarray(state["gallery_features"], self.dtype)
        self.count[:] = 0
        self.head[:] = 0
        self.count[slots] = counts
        self.head[slots] = np.asarray(state["gallery_head"], np.int64)


def ragged_positions(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For runs of the given lengths: each element's position in its run, and each run's start."""
    counts = np.asarray(counts, np.int64)
    starts = np.cumsum(counts) - counts
    return np.arange(int(counts.sum())) - np.repeat(starts, counts), starts
