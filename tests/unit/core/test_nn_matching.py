import numpy as np
import pytest

from ray_deepsort.core.nn_matching import AppearanceGallery, l2_normalize


def unit(v) -> np.ndarray:
    return l2_normalize(np.asarray(v, np.float32).reshape(1, -1))


def test_nearest_neighbour_cosine_and_euclidean() -> None:
    for metric in ("cosine", "euclidean"):
        gallery = AppearanceGallery(budget=10, metric=metric)
        gallery.resize(2)
        gallery.add(np.array([0, 1]), np.array([[1, 0, 0], [0, 1, 0]], np.float32))
        gallery.add(np.array([0]), np.array([[0, 0, 2]], np.float32))  # scale is normalised away
        d = gallery.distance(np.array([0, 1]), np.array([[0, 0, 1], [0, 1, 0]], np.float32))
        if metric == "cosine":
            np.testing.assert_allclose(d, [[0, 1], [1, 0]], atol=1e-6)
        else:
            np.testing.assert_allclose(d, [[0, np.sqrt(2)], [np.sqrt(2), 0]], atol=1e-6)


def test_budget_keeps_only_latest_features() -> None:
    gallery = AppearanceGallery(budget=3)
    gallery.resize(1)
    basis = np.eye(5, dtype=np.float32)
    for i in range(5):
        gallery.add(np.array([0]), basis[i : i + 1])
    assert gallery.count[0] == 3
    d = gallery.distance(np.array([0]), basis)[0]
    np.testing.assert_allclose(d, [1, 1, 0, 0, 0], atol=1e-6)  # 0 and 1 were evicted


def test_empty_gallery_rows_are_nan_and_clear_forgets() -> None:
    gallery = AppearanceGallery(budget=4)
    gallery.resize(3)
    gallery.add(np.array([1]), unit([1, 0]))
    d = gallery.distance(np.array([0, 1, 2]), unit([1, 0]))
    assert np.isnan(d[0, 0]) and np.isnan(d[2, 0]) and d[1, 0] == pytest.approx(0)
    gallery.clear(np.array([1]))
    assert np.isnan(gallery.distance(np.array([1]), unit([1, 0]))).all()


def test_dimension_change_is_an_error() -> None:
    gallery = AppearanceGallery()
    gallery.resize(1)
    gallery.add(np.array([0]), unit([1, 0, 0]))
    with pytest.raises(ValueError, match="dimension"):
        gallery.add(np.array([0]), unit([1, 0]))


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        AppearanceGallery(budget=0)
    with pytest.raises(ValueError):
        AppearanceGallery(metric="manhattan")  # type: ignore[arg-type]


def test_float16_gallery_halves_memory_and_keeps_distances() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(4, 64)).astype(np.float32)
    queries = rng.normal(size=(3, 64)).astype(np.float32)
    galleries = {
        dtype: AppearanceGallery(budget=8, dtype=dtype) for dtype in ("float32", "float16")
    }
    for gallery in galleries.values():
        gallery.resize(4)
        gallery.add(np.arange(4), features)
    full, half = galleries["float32"], galleries["float16"]
    assert half.features is not None and half.features.dtype == np.float16
    assert full.features is not None and half.features.nbytes * 2 == full.features.nbytes
    slots = np.arange(4)
    np.testing.assert_allclose(
        half.distance(slots, queries), full.distance(slots, queries), atol=2e-3
    )
    state = half.export(slots)
    assert state["gallery_features"].dtype == np.float16  # checkpoints shrink too
    restored = AppearanceGallery(budget=8, dtype="float16")
    restored.resize(4)
    restored.restore(slots, state)
    np.testing.assert_array_equal(restored.distance(slots, queries), half.distance(slots, queries))
    with pytest.raises(ValueError, match="gallery_dtype"):
        AppearanceGallery(dtype="int8")  # type: ignore[arg-type]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("density", [0.05, 0.3, 0.9])  # sparse (per-track candidates) and dense
def test_masked_distance_equals_full_distance_on_the_mask(metric, density) -> None:
    rng = np.random.default_rng(1)
    gallery = AppearanceGallery(budget=6, metric=metric)
    gallery.resize(12)
    for _ in range(8):  # uneven fill: some rings wrapped, some partly filled, two empty
        slots = np.sort(rng.choice(10, size=rng.integers(1, 10), replace=False))
        gallery.add(slots, rng.normal(size=(len(slots), 16)).astype(np.float32))
    slots = rng.permutation(12)
    queries = rng.normal(size=(9, 16)).astype(np.float32)
    where = rng.random((12, 9)) < density
    full = gallery.distance(slots, queries)
    masked = gallery.distance(slots, queries, where=where)
    has_gallery = gallery.count[slots] > 0
    expected = np.where(where & has_gallery[:, None], full, np.nan)
    np.testing.assert_allclose(masked, expected, rtol=1e-6, atol=1e-6)
    assert np.isnan(masked[~where]).all()
    assert np.isnan(gallery.distance(slots, queries, where=np.zeros_like(where))).all()


@pytest.mark.parametrize(
    "slots",
    [[11, 3, 0, 7, 5, 1, 9, 2, 10, 4, 8, 6], [4, 1, 2, 3], [0, 9, 11], [6]],
    ids=["all-permuted", "one-run-unsorted", "scattered", "single"],
)
@pytest.mark.parametrize("density", [1.0, 0.3])
def test_distance_matches_brute_force_for_any_slot_set(slots, density) -> None:
    """Runs of slots are read through a view, scattered ones copied: both equal a plain loop."""
    rng = np.random.default_rng(2)
    gallery = AppearanceGallery(budget=5)
    gallery.resize(12)
    for _ in range(9):
        chosen = np.sort(rng.choice(12, size=rng.integers(1, 12), replace=False))
        gallery.add(chosen, rng.normal(size=(len(chosen), 8)).astype(np.float32))
    gallery.clear(np.array([2]))
    slots = np.array(slots)
    queries = l2_normalize(rng.normal(size=(7, 8)).astype(np.float32))
    where = rng.random((len(slots), 7)) < density
    got = gallery.distance(slots, queries, where=where)
    assert gallery.features is not None
    for i, slot in enumerate(slots):
        entries = gallery.features[slot, : gallery.count[slot]]
        for j in range(len(queries)):
            if not where[i, j] or len(entries) == 0:
                assert np.isnan(got[i, j])
            else:
                nearest = float((entries @ queries[j]).max())
                assert got[i, j] == pytest.approx(1.0 - nearest, abs=1e-6)
