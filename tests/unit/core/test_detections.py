"""`Detections`: selecting boxes keeps every per-box array aligned, like supervision's."""

from __future__ import annotations

import numpy as np
import pytest

from ray_deepsort.core import Detections


def _three() -> Detections:
    return Detections(
        xyxy=np.arange(12, dtype=np.float32).reshape(3, 4),
        confidence=np.array([0.9, 0.5, 0.1]),
        class_id=np.array([0, 1, 2]),
        tracker_id=np.array([7, -1, 9]),
        data={"gt_id": np.array([11, 12, 13])},
    )


@pytest.mark.parametrize(
    ("index", "rows"),
    [
        (1, [1]),
        (np.int64(2), [2]),
        (np.array([True, False, True]), [0, 2]),
        (np.array([2, 0]), [2, 0]),
        (slice(1, None), [1, 2]),
    ],
)
def test_selection_keeps_every_array_aligned(index: object, rows: list[int]) -> None:
    picked = _three()[index]
    assert len(picked) == len(rows)
    np.testing.assert_array_equal(picked.xyxy, _three().xyxy[rows])
    np.testing.assert_allclose(picked.confidence, np.array([0.9, 0.5, 0.1])[rows], rtol=1e-6)
    assert picked.class_id.tolist() == [[0, 1, 2][r] for r in rows]
    assert picked.tracker_id.tolist() == [[7, -1, 9][r] for r in rows]
    assert picked.data["gt_id"].tolist() == [[11, 12, 13][r] for r in rows]


def test_selection_without_optional_arrays_keeps_them_absent() -> None:
    picked = Detections(xyxy=np.zeros((2, 4)))[np.array([True, False])]
    assert len(picked) == 1
    assert picked.confidence is None and picked.class_id is None and picked.tracker_id is None


def test_empty_has_no_boxes_in_the_float32_layout() -> None:
    empty = Detections.empty()
    assert len(empty) == 0 and empty.xyxy.shape == (0, 4) and empty.xyxy.dtype == np.float32
    assert empty.confidence is None and empty.data == {}


def test_per_box_arrays_must_match_the_boxes() -> None:
    with pytest.raises(ValueError, match="confidence"):
        Detections(xyxy=np.zeros((2, 4)), confidence=np.ones(3))
    with pytest.raises(ValueError, match=r"data\['gt_id'\] has 1 entries for 2 boxes"):
        Detections(xyxy=np.zeros((2, 4)), data={"gt_id": np.ones(1)})
