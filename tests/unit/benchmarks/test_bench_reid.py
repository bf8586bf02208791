"""The person-ReID benchmarks' arithmetic: AUC, equal-error gate, pairs, acceptance lines."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"


@pytest.fixture(scope="module")
def gates() -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("appearance_gates")


def test_auc_counts_pairs_and_ties_like_the_definition(gates: ModuleType) -> None:
    rng = np.random.default_rng(0)
    same = np.round(rng.uniform(0, 1, 40), 1)  # rounded: plenty of ties
    different = np.round(rng.uniform(0.3, 1.3, 60), 1)
    brute = np.mean(
        (different[None, :] > same[:, None]) + 0.5 * (different[None, :] == same[:, None])
    )
    assert gates.auc(same, different) == pytest.approx(brute)
    assert gates.auc(np.array([0.1, 0.2]), np.array([0.5, 0.9])) == 1.0


def test_equal_error_gate_balances_the_two_mistakes(gates: ModuleType) -> None:
    rng = np.random.default_rng(1)
    same = rng.normal(0.3, 0.1, 20_000)
    different = rng.normal(0.8, 0.1, 20_000)
    assert gates.equal_error_gate(same, different) == pytest.approx(0.55, abs=0.01)
    shifted = gates.equal_error_gate(same, rng.normal(1.0, 0.1, 20_000))
    assert shifted == pytest.approx(0.65, abs=0.01)


def test_pairs_are_same_person_10_to_30_frames_apart_and_others_within_30(
    gates: ModuleType,
) -> None:
    features = np.eye(4, dtype=np.float32)[[0, 0, 0, 1]]
    frames = np.array([1, 5, 21, 21])
    ids = np.array([7, 7, 7, 8])
    same, different = gates.pair_distances(features, frames, ids)
    # (1, 21) and (5, 21) are 20 and 16 frames apart; (1, 5) only 4: not a same pair.
    np.testing.assert_allclose(same, [0.0, 0.0])
    # Every id-7 box against the id-8 box (all within 30 frames): distance 1.
    np.testing.assert_allclose(different, [1.0, 1.0, 1.0])
