"""`Detections` normalises what callers pass (dtypes, shapes) and adapts supervision's type."""

from __future__ import annotations

import numpy as np
import pytest

from ray_deepsort.core import Detections
from ray_deepsort.core.detections import is_supervision_detections, to_native, with_tracker_ids


def test_arrays_are_normalised_to_the_documented_dtypes() -> None:
    """Integer boxes, float64 scores, float class IDs and int32 IDs all land in one layout."""
    d = Detections(
        xyxy=[[0, 0, 10, 20], [5, 5, 15, 25]],  # type: ignore[arg-type]
        confidence=np.array([0.9, 0.4], np.float64),
        class_id=np.array([1.0, 2.0]),
        tracker_id=np.array([3, 4], np.int32),
    )
    assert d.xyxy.dtype == np.float32 and d.xyxy.shape == (2, 4)
    assert d.confidence is not None and d.confidence.dtype == np.float32
    assert d.class_id is not None and d.class_id.dtype == np.int64
    assert d.class_id.tolist() == [1, 2]
    assert d.tracker_id is not None and d.tracker_id.dtype == np.int64
    assert Detections(xyxy=np.ones((1, 4), np.float64)).xyxy.dtype == np.float32


def test_column_vectors_are_flattened_to_one_value_per_box() -> None:
    """An [N, 1] score column (as some detectors emit) is accepted as [N]."""
    d = Detections(
        xyxy=np.zeros((2, 4)),
        confidence=np.array([[0.9], [0.4]]),
        class_id=np.array([[0], [3]]),
    )
    assert d.confidence is not None and d.confidence.shape == (2,)
    assert d.class_id is not None and d.class_id.tolist() == [0, 3]


@pytest.mark.parametrize("name", ["confidence", "class_id", "tracker_id"])
def test_mismatched_per_box_array_names_the_field(name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} has 3 entries for 2 boxes$"):
        Detections(xyxy=np.zeros((2, 4)), **{name: np.ones(3)})


def test_defaults_for_missing_scores_and_classes_have_the_column_dtypes() -> None:
    """Filling in absent columns must give what a caller-supplied column would have."""
    d = Detections(xyxy=np.zeros((3, 4)))
    ones, zeros = d.confidence_or_ones(), d.class_id_or_zeros()
    assert ones.dtype == np.float32 and ones.tolist() == [1.0, 1.0, 1.0]
    assert zeros.dtype == np.int64 and zeros.tolist() == [0, 0, 0]


def test_with_tracker_ids_returns_an_independent_copy_with_int64_ids() -> None:
    """The caller's detections are never changed through the returned copy."""
    original = Detections(xyxy=np.zeros((2, 4)), data={"gt": np.array([1, 2])})
    result = with_tracker_ids(original, np.array([5.0, 6.0]))
    assert result.tracker_id is not None and result.tracker_id.dtype == np.int64
    assert result.tracker_id.tolist() == [5, 6]
    result.xyxy[0, 0] = 99.0
    result.data["gt"][0] = 42
    assert original.tracker_id is None
    assert original.xyxy[0, 0] == 0.0 and original.data["gt"].tolist() == [1, 2]


def test_only_supervision_detections_are_recognised_as_such() -> None:
    """Our own class is also named Detections: the module must match too."""
    assert not is_supervision_detections(Detections.empty())
    sv = pytest.importorskip("supervision")
    assert is_supervision_detections(sv.Detections.empty())


def test_to_native_keeps_supervision_scores_and_classes() -> None:
    sv = pytest.importorskip("supervision")
    theirs = sv.Detections(
        xyxy=np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float32),
        confidence=np.array([0.8, 0.3]),
        class_id=np.array([2, 7]),
    )
    ours = to_native(theirs)
    assert isinstance(ours, Detections)
    np.testing.assert_array_equal(ours.xyxy, theirs.xyxy)
    assert ours.confidence is not None
    np.testing.assert_allclose(ours.confidence, [0.8, 0.3], rtol=1e-6)
    assert ours.class_id is not None and ours.class_id.tolist() == [2, 7]


def test_to_native_rejects_other_types_naming_them() -> None:
    with pytest.raises(
        TypeError,
        match=r"^detections must be ray_deepsort\.Detections or supervision\.Detections, got list$",
    ):
        to_native([[0, 0, 1, 1]])
