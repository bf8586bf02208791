import numpy as np

from ray_deepsort.core.linear_assignment import matching_cascade, min_cost_matching

INF = np.inf


def test_min_cost_matching_is_optimal_and_respects_gates() -> None:
    cost = np.array([[0.1, 0.2, INF], [0.15, 0.9, INF], [INF, INF, INF]])
    matches, rows, cols = min_cost_matching(cost)
    assert sorted(map(tuple, matches)) == [(0, 1), (1, 0)]  # 0.35 beats the greedy 0.1 + 0.9
    assert rows.tolist() == [2] and cols.tolist() == [2]


def test_min_cost_matching_empty() -> None:
    matches, rows, cols = min_cost_matching(np.zeros((0, 3)))
    assert matches.shape == (0, 2) and rows.size == 0 and cols.tolist() == [0, 1, 2]


def test_cascade_gives_recently_seen_tracks_priority() -> None:
    # Track 0 was unseen for 5 frames and fits detection 0 best; track 1 was seen a frame ago.
    # A single Hungarian step would hand detection 0 to track 0; the cascade gives it to track 1.
    cost = np.array([[0.05, INF], [0.4, 0.6]])
    matches, rows, cols = matching_cascade(cost, np.array([5, 1]))
    assert matches.tolist() == [[1, 0]]
    assert rows.tolist() == [0] and cols.tolist() == [1]
    single, _, _ = min_cost_matching(cost)
    assert sorted(map(tuple, single)) == [(0, 0), (1, 1)]


def test_cascade_lower_levels_take_what_is_left() -> None:
    cost = np.array([[0.3, 0.2, INF], [0.1, INF, INF], [INF, INF, 0.5]])
    matches, rows, cols = matching_cascade(cost, np.array([2, 1, 3]))
    assert sorted(map(tuple, matches)) == [(0, 1), (1, 0), (2, 2)]
    assert rows.size == 0 and cols.size == 0
