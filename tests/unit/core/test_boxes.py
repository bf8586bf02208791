"""Box geometry at its edges: disjoint, sub-pixel and empty boxes, the frame's borders."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ray_deepsort.core import Detections
from ray_deepsort.core.boxes import iou_matrix, valid_box_mask, xyah_to_xyxy, xyxy_to_xyah
from ray_deepsort.core.frame_detections import FrameDetections
from ray_deepsort.core.linear_assignment import matching_cascade, min_cost_matching


def test_iou_of_boxes_apart_is_zero_whichever_way_they_are_apart() -> None:
    # A negative gap is clipped in each direction, never multiplied into an area.
    a = np.array([[0, 0, 10, 10]], np.float64)
    apart = np.array([[20, 20, 30, 30], [20, 5, 30, 15], [5, 20, 15, 30]], np.float64)
    assert iou_matrix(a, apart).tolist() == [[0.0, 0.0, 0.0]]


def test_iou_of_sub_pixel_overlaps_and_tiny_boxes_is_exact() -> None:
    a = np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.5, 0.5]])
    b = np.array([[9.5, 0.0, 19.5, 10.0], [0.0, 0.0, 0.5, 0.5]])
    iou = iou_matrix(a, b)
    assert iou[0, 0] == pytest.approx(5.0 / 195.0)  # a 0.5-pixel-wide overlap
    assert iou[1, 1] == pytest.approx(1.0)  # identical boxes with a union of 0.25
    assert iou[0, 1] == pytest.approx(0.25 / 100.0)


def test_iou_with_an_empty_box_is_zero_without_warnings() -> None:
    empty = np.array([[5.0, 5.0, 5.0, 5.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert iou_matrix(empty, empty).tolist() == [[0.0]]
        assert iou_matrix(empty, np.array([[0.0, 0.0, 1.0, 1.0]])).tolist() == [[0.0]]


def test_iou_of_unsigned_integer_boxes_equals_that_of_floats() -> None:
    """Computed in float64 whatever comes in: uint8 differences would wrap around."""
    a = np.array([[10, 10, 30, 30]], np.uint8)
    b = np.array([[20, 5, 40, 25]], np.uint8)
    np.testing.assert_allclose(iou_matrix(a, b), iou_matrix(a.astype(float), b.astype(float)))
    assert iou_matrix(b, a)[0, 0] == pytest.approx(iou_matrix(a, b)[0, 0])


def test_box_forms_are_computed_in_float_whatever_comes_in() -> None:
    """uint8 input would wrap: an inverted box keeps its negative width, and aspect x height
    does not overflow."""
    inverted = xyxy_to_xyah(np.array([[10, 10, 5, 20]], np.uint8))
    np.testing.assert_allclose(inverted, [[7.5, 15.0, -0.5, 10.0]])
    np.testing.assert_allclose(
        xyah_to_xyxy(np.array([[100, 100, 2, 200]], np.uint8)), [[-100.0, 0.0, 300.0, 200.0]]
    )


def test_box_forms_round_trip() -> None:
    xyxy = np.array([[1.0, 2.0, 5.0, 10.0], [-3.0, 0.5, 0.0, 1.5]])
    xyah = xyxy_to_xyah(xyxy)
    np.testing.assert_allclose(xyah[0], [3.0, 6.0, 0.5, 8.0])
    np.testing.assert_allclose(xyah_to_xyxy(xyah), xyxy)


def test_valid_boxes_at_the_frame_borders() -> None:
    height, width = 100, 200
    boxes = np.array(
        [
            [-5.0, -5.0, 0.5, 0.5],  # reaches 0.5 pixel into the frame: usable
            [200.0, 10.0, 210.0, 20.0],  # starts at the right border: outside
            [10.0, 100.0, 20.0, 110.0],  # starts at the bottom border: outside
            [10.0, 10.0, 150.0, 50.0],  # right edge beyond the height, within the width
            [-5.0, -5.0, 0.0, 10.0],  # ends at the left border: outside
            [10.0, 10.0, 10.0, 20.0],  # no width
            [np.nan, 0.0, 1.0, 1.0],
        ]
    )
    assert valid_box_mask(boxes, (height, width, 3)).tolist() == [
        True,
        False,
        False,
        True,
        False,
        False,
        False,
    ]


def test_frame_detections_keep_their_contract_types_and_zero_bad_features() -> None:
    detections = Detections(
        xyxy=np.array([[0, 0, 10, 20], [5, 5, 15, 25], [1, 1, 9, 9]], np.float32),
        confidence=np.ones(3, np.float32),
    )
    valid = np.ones(3, bool)
    without = FrameDetections.from_detections(detections, valid)
    assert without.has_feature.dtype == np.bool_ and not without.has_feature.any()
    features = np.array([[3.0, 4.0], [np.nan, 1.0], [0.0, 0.0]])
    frame = FrameDetections.from_detections(detections, valid, features)
    assert frame.has_feature.tolist() == [True, False, False]
    assert frame.features is not None and frame.features.dtype == np.float32
    np.testing.assert_allclose(frame.features[0], [0.6, 0.8], rtol=1e-6)
    assert not frame.features[1:].any()  # unusable rows are zeros, never ones or NaN


def test_large_half_precision_features_are_normalised_not_lost() -> None:
    """float16 input is widened first: its squared norm would overflow float16 (max 65504)."""
    detections = Detections(xyxy=np.array([[0, 0, 10, 20]], np.float32))
    features = np.full((1, 8), 300.0, np.float16)
    frame = FrameDetections.from_detections(detections, np.ones(1, bool), features)
    assert frame.has_feature.tolist() == [True]
    assert frame.features is not None
    np.testing.assert_allclose(frame.features[0], np.full(8, 8**-0.5), rtol=1e-3)


def test_matchings_with_nothing_to_match_have_the_documented_shapes() -> None:
    matches, rows, cols = min_cost_matching(np.zeros((0, 3)))
    assert matches.shape == (0, 2) and rows.tolist() == [] and cols.tolist() == [0, 1, 2]
    matches, rows, cols = matching_cascade(np.zeros((0, 2)), np.zeros(0, np.int64))
    assert matches.shape == (0, 2) and rows.tolist() == [] and cols.tolist() == [0, 1]
    matches, rows, cols = matching_cascade(np.full((2, 1), np.inf), np.array([1, 2]))
    assert matches.shape == (0, 2) and rows.tolist() == [0, 1] and cols.tolist() == [0]
