"""Assignment: Hungarian matching with infeasible pairs, and the paper's matching cascade."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

# Stand-in cost for gated (infeasible) pairs; any real cost is far below it.
_INFEASIBLE = 1e6


def min_cost_matching(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Optimal matching on `cost` [rows, cols] where non-finite entries are forbidden.

    Returns (matches [K, 2] of (row, col), unmatched rows, unmatched cols).
    """
    rows, cols = cost.shape
    if rows == 0 or cols == 0:
        return np.zeros((0, 2), np.int64), np.arange(rows), np.arange(cols)
    feasible = np.isfinite(cost)
    row_ind, col_ind = linear_sum_assignment(np.where(feasible, cost, _INFEASIBLE))
    keep = feasible[row_ind, col_ind]
    matches = np.stack([row_ind[keep], col_ind[keep]], axis=1).astype(np.int64)
    return matches, _unused(rows, matches[:, 0]), _unused(cols, matches[:, 1])


def _unused(count: int, used: np.ndarray) -> np.ndarray:
    """Indices in range(count) not in `used`, ascending."""
    free = np.ones(count, np.bool_)
    free[used] = False
    return np.flatnonzero(free)


def matching_cascade(
    cost: np.ndarray, time_since_update: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match tracks level by level, most recently seen first (Wojke et al. 2017, Listing 1).

    A track unseen for longer has a wider predicted distribution; matching it first would let it
    steal detections from tracks seen a frame ago. Each level is solved optimally on the
    detections still free. Returns (matches [K, 2] of (row, col), unmatched rows, unmatched cols).
    """
    rows, cols = cost.shape
    matched: list[np.ndarray] = []
    free_cols = np.arange(cols)
    for level in np.unique(time_since_update):
        if len(free_cols) == 0:
            break
        level_rows = np.flatnonzero(time_since_update == level)
        level_matches, _, unmatched = min_cost_matching(cost[np.ix_(level_rows, free_cols)])
        matched.append(
            np.stack([level_rows[level_matches[:, 0]], free_cols[level_matches[:, 1]]], axis=1)
        )
        free_cols = free_cols[unmatched]
    matches = np.concatenate(matched) if matched else np.zeros((0, 2), np.int64)
    return matches.astype(np.int64), _unused(rows, matches[:, 0]), free_cols
