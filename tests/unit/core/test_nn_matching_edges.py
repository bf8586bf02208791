"""Edge cases of the appearance gallery: dtypes, empty inputs, stale ring entries, checkpoints."""

import numpy as np
import pytest

from ray_deepsort.core.nn_matching import AppearanceGallery, l2_normalize


def unit(*v: float) -> np.ndarray:
    return l2_normalize(np.asarray(v, np.float32).reshape(1, -1))


def test_l2_normalize_returns_float32_unit_rows_for_any_input_dtype() -> None:
    """Integer or float64 embeddings are normalised in float32, the dtype distances use."""
    for features in ([[3, 4], [0, 0]], np.array([[3.0, 4.0], [0.0, 0.0]], np.float64)):
        out = l2_normalize(features)  # type: ignore[arg-type]
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)


def test_distance_with_no_slots_is_an_empty_matrix() -> None:
    """A frame with no confirmed tracks asks for distances of zero slots, however spelled."""
    gallery = AppearanceGallery(budget=3)
    gallery.resize(2)
    gallery.add(np.array([0, 1]), np.eye(2, dtype=np.float32))
    for slots in (np.array([]), np.zeros(0, np.int64)):
        d = gallery.distance(slots, np.eye(2, dtype=np.float32))
        assert d.shape == (0, 2)


def test_euclidean_distance_at_a_known_angle() -> None:
    """Unit vectors 60 degrees apart are exactly 1 apart (cosine distance 0.5)."""
    query = unit(np.cos(np.pi / 3), np.sin(np.pi / 3))
    expected = {"euclidean": 1.0, "cosine": 0.5}
    for metric, value in expected.items():
        gallery = AppearanceGallery(budget=2, metric=metric)  # type: ignore[arg-type]
        gallery.resize(1)
        gallery.add(np.array([0]), unit(1.0, 0.0))
        assert gallery.distance(np.array([0]), query)[0, 0] == pytest.approx(value, abs=1e-6)


def test_euclidean_self_distance_is_zero_never_nan_from_rounding() -> None:
    """A float32 dot product of a unit vector with itself can exceed 1; that must not give NaN."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(64, 8)).astype(np.float32)
    gallery = AppearanceGallery(budget=2, metric="euclidean")
    gallery.resize(64)
    gallery.add(np.arange(64), features)
    d = gallery.distance(np.arange(64), features)
    assert not np.isnan(d).any()
    np.testing.assert_allclose(np.diag(d), 0.0, atol=1e-3)


def test_unfilled_ring_entries_never_match() -> None:
    """Only the features a slot holds count, not zero padding nor a previous track's leftovers.

    Slot 1 is deeper, so slot 0's galleries are read past its count: those entries must be
    ignored, whether never written (zeros) or written before a clear (a reused slot).
    """
    gallery = AppearanceGallery(budget=4)
    gallery.resize(2)
    gallery.add(np.array([0, 1]), np.vstack([unit(1.0, 0.0), unit(0.0, 1.0)]))
    gallery.add(np.array([1]), unit(0.0, 1.0))
    gallery.add(np.array([1]), unit(0.0, 1.0))
    # Slot 0 holds only [1, 0]: the opposite direction is 2 away, not 1 (a zero entry's distance).
    d = gallery.distance(np.array([0, 1]), unit(-1.0, 0.0))
    assert d[0, 0] == pytest.approx(2.0, abs=1e-6)

    gallery.add(np.array([0]), unit(0.0, -1.0))  # slot 0: [1, 0], [0, -1]
    gallery.clear(np.array([0]))  # the track left; a new one takes the slot
    gallery.add(np.array([0]), unit(1.0, 0.0))
    d = gallery.distance(np.array([0, 1]), unit(0.0, -1.0))
    assert d[0, 0] == pytest.approx(1.0, abs=1e-6)  # the old [0, -1] is forgotten


def test_keep_renumbers_slots_and_their_galleries() -> None:
    """After keep(), slot i is the i-th kept slot, with that slot's features."""
    gallery = AppearanceGallery(budget=3)
    gallery.resize(3)
    features = np.eye(3, dtype=np.float32)
    gallery.add(np.arange(3), features)
    gallery.keep(np.array([2, 0]))
    assert len(gallery.count) == 2
    d = gallery.distance(np.array([0, 1]), features)
    np.testing.assert_allclose(d, [[1, 1, 0], [0, 1, 1]], atol=1e-6)


def test_export_of_an_empty_gallery_restores_to_a_usable_gallery() -> None:
    """Checkpointing before any embedding arrived must not fix the embedding dimension."""
    gallery = AppearanceGallery(budget=3)
    gallery.resize(2)
    state = gallery.export(np.arange(2))
    assert int(state["gallery_dim"]) == 0
    assert state["gallery_features"].shape == (0, 0)
    assert state["gallery_features"].dtype == np.float32  # same dtype as a non-empty export

    restored = AppearanceGallery(budget=3)
    restored.resize(2)
    restored.restore(np.arange(2), state)
    assert restored.dim is None
    restored.add(np.array([1]), unit(0.0, 0.0, 0.0, 1.0))
    assert restored.dim == 4
    assert restored.distance(np.array([1]), unit(0.0, 0.0, 0.0, 1.0))[0, 0] == pytest.approx(0.0)


def test_export_restore_round_trip_with_one_dimensional_embeddings() -> None:
    """Any embedding size round-trips, including the smallest."""
    gallery = AppearanceGallery(budget=2)
    gallery.resize(2)
    gallery.add(np.array([0, 1]), np.array([[1.0], [-1.0]], np.float32))
    state = gallery.export(np.arange(2))
    restored = AppearanceGallery(budget=2)
    restored.resize(2)
    restored.restore(np.arange(2), state)
    assert restored.dim == 1
    queries = np.array([[1.0], [-1.0]], np.float32)
    np.testing.assert_array_equal(
        restored.distance(np.arange(2), queries), gallery.distance(np.arange(2), queries)
    )


def test_restore_into_some_slots_leaves_the_others_empty() -> None:
    """Slots not named by the checkpoint start empty, and fill from their first entry."""
    gallery = AppearanceGallery(budget=3)
    gallery.resize(1)
    gallery.add(np.array([0]), unit(1.0, 0.0))
    state = gallery.export(np.array([0]))

    restored = AppearanceGallery(budget=3)
    restored.resize(3)
    restored.add(np.arange(3), np.tile(unit(0.0, 1.0), (3, 1)))  # history the restore replaces
    restored.restore(np.array([1]), state)
    np.testing.assert_array_equal(restored.count, [0, 1, 0])
    np.testing.assert_array_equal(restored.head, [0, 1, 0])
    d = restored.distance(np.arange(3), unit(1.0, 0.0))
    assert np.isnan(d[0, 0]) and np.isnan(d[2, 0])
    assert d[1, 0] == pytest.approx(0.0, abs=1e-6)

    restored.add(np.array([2]), unit(-1.0, 0.0))  # slot 2 holds exactly this one feature
    assert restored.distance(np.array([2]), unit(1.0, 0.0))[0, 0] == pytest.approx(2.0, abs=1e-6)


def test_restore_rejects_galleries_larger_than_the_budget() -> None:
    """A checkpoint from a tracker with a larger budget cannot be squeezed in silently."""
    gallery = AppearanceGallery(budget=4)
    gallery.resize(1)
    for _ in range(4):
        gallery.add(np.array([0]), unit(1.0, 0.0))
    state = gallery.export(np.array([0]))
    small = AppearanceGallery(budget=2)
    small.resize(1)
    with pytest.raises(ValueError, match="galleries of 4 features, budget is 2"):
        small.restore(np.array([0]), state)


def test_gallery_budget_defaults_to_100_and_may_be_1() -> None:
    """The documented default, and the smallest budget: one feature per track."""
    assert AppearanceGallery().budget == 100
    gallery = AppearanceGallery(budget=1)
    gallery.resize(1)
    gallery.add(np.array([0]), unit(1.0, 0.0))
    gallery.add(np.array([0]), unit(0.0, 1.0))  # replaces the first
    assert gallery.distance(np.array([0]), unit(0.0, 1.0))[0, 0] == pytest.approx(0.0, abs=1e-6)


def test_gallery_refuses_bad_settings_naming_them() -> None:
    with pytest.raises(ValueError, match=r"^gallery budget must be >= 1, got 0$"):
        AppearanceGallery(budget=0)
    with pytest.raises(ValueError, match=r"^distance_metric must be 'cosine' or 'euclidean'"):
        AppearanceGallery(metric="manhattan")  # type: ignore[arg-type]


def test_growing_a_float16_gallery_keeps_float16_and_one_head_per_slot() -> None:
    """Growth must not silently double the memory of a float16 gallery."""
    gallery = AppearanceGallery(budget=3, dtype="float16")
    gallery.resize(2)
    gallery.add(np.array([1]), unit(1.0, 0.0))
    gallery.resize(5)
    assert gallery.features is not None and gallery.features.dtype == np.float16
    assert gallery.features.shape == (5, 3, 2)
    assert gallery.head.shape == (5,) and gallery.count.tolist() == [0, 1, 0, 0, 0]
    assert gallery.distance(np.array([1]), unit(1.0, 0.0))[0, 0] == pytest.approx(0.0, abs=1e-3)
