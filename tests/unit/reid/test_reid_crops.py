"""Crop geometry of the ReID model, checked against hand-computed values and OpenCV."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from ray_deepsort.reid.crops import (
    aspect_boxes,
    crop_boxes,
    frames_to_tensor,
    sample_region,
    validate_boxes,
)

HEIGHT, WIDTH = 200, 256


def gradient_frame() -> np.ndarray:
    """Channel 0 = x, channel 1 = y, channel 2 = 50: bilinear sampling of it is exact."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    return np.stack([x, y, np.full_like(x, 50)], axis=2).astype(np.uint8)


def crops_of(frame: np.ndarray, boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    tensor = frames_to_tensor([frame], torch.device("cpu"))
    out = crop_boxes(tensor, np.zeros(len(boxes)), aspect_boxes(boxes, size), size)
    return out.numpy()


def cv2_reference(frame: np.ndarray, box: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The same aspect-widened crop through cv2.warpAffine (bilinear, zero border), as CHW."""
    (x1, y1, x2, y2), (out_h, out_w) = box, size
    scale_x, scale_y = (x2 - x1) / out_w, (y2 - y1) / out_h
    # dst pixel centre (u + 0.5) -> src continuous x1 + (u + 0.5) * scale -> pixel index - 0.5
    matrix = np.array(
        [[scale_x, 0.0, x1 + 0.5 * scale_x - 0.5], [0.0, scale_y, y1 + 0.5 * scale_y - 0.5]]
    )
    warped = cv2.warpAffine(
        frame.astype(np.float32),
        matrix,
        (out_w, out_h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return warped.transpose(2, 0, 1)


def test_aspect_boxes_grow_the_short_side_around_the_centre() -> None:
    boxes = np.array([[40, 30, 80, 190], [100, 80, 220, 120], [10, 10, 30, 50]], np.float64)
    grown = aspect_boxes(boxes, (256, 128))
    # tall 40x160 -> widened to 80x160; wide 120x40 -> heightened to 120x240; exact 20x40 kept
    np.testing.assert_allclose(grown[0], [20, 30, 100, 190])
    np.testing.assert_allclose(grown[1], [100, -20, 220, 220])
    np.testing.assert_allclose(grown[2], [10, 10, 30, 50])
    centres = (grown[:, :2] + grown[:, 2:]) / 2
    np.testing.assert_allclose(centres, (boxes[:, :2] + boxes[:, 2:]) / 2)


def test_degenerate_boxes_become_one_pixel_boxes_and_nan_is_refused() -> None:
    grown = aspect_boxes(np.array([[5, 5, 5, 5], [30, 40, 10, 20]], np.float64), (256, 128))
    np.testing.assert_allclose(grown[0], [4.75, 4.5, 5.25, 5.5])
    np.testing.assert_allclose(grown[1], [19.75, 29.5, 20.25, 30.5])
    with pytest.raises(ValueError, match="non-finite"):
        validate_boxes(np.array([[0, 0, 10, 10], [0, np.nan, 10, 10]]))
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        validate_boxes(np.zeros((3, 5)))
    assert validate_boxes([]).shape == (0, 4)


@pytest.mark.parametrize("size", [(32, 16), (256, 128)], ids=["downscale", "upscale"])
def test_crop_matches_hand_computed_sampling_and_cv2(size: tuple[int, int]) -> None:
    frame = gradient_frame()
    boxes = np.array([[40.0, 30.0, 80.0, 190.0], [100.0, 80.0, 220.0, 120.0]])
    crops = crops_of(frame, boxes, size)
    assert crops.shape == (2, 3, *size)
    out_h, out_w = size
    for crop, box in zip(crops, aspect_boxes(boxes, size), strict=True):
        x1, y1, x2, y2 = box
        # Hand computation: sample centres in pixel-index coordinates.
        xs = x1 + (np.arange(out_w) + 0.5) * (x2 - x1) / out_w - 0.5
        ys = y1 + (np.arange(out_h) + 0.5) * (y2 - y1) / out_h - 0.5
        half_bin_x, half_bin_y = 0.5 * (x2 - x1) / out_w, 0.5 * (y2 - y1) / out_h
        inside_x = (xs - half_bin_x >= 0) & (xs + half_bin_x <= WIDTH - 1)
        inside_y = (ys - half_bin_y >= 0) & (ys + half_bin_y <= HEIGHT - 1)
        inside = inside_y[:, None] & inside_x[None, :]
        assert inside.sum() > 0.5 * inside.size
        np.testing.assert_allclose(
            crop[0][inside], np.broadcast_to(xs, inside.shape)[inside], atol=1e-3
        )
        np.testing.assert_allclose(
            crop[1][inside], np.broadcast_to(ys[:, None], inside.shape)[inside], atol=1e-3
        )
        np.testing.assert_allclose(crop[2][inside], 50.0, atol=1e-3)
        # Beyond one pixel outside the frame: zero padding.
        outside_y = (ys + half_bin_y < -1) | (ys - half_bin_y > HEIGHT)
        np.testing.assert_array_equal(crop[:, outside_y, :], 0.0)
        # OpenCV agrees wherever both sample real pixels (its weights are quantised to 1/32).
        reference = cv2_reference(frame, box, size)
        np.testing.assert_allclose(crop[:, inside], reference[:, inside], atol=0.05)
    # The wide box reaches 20 px above and below the frame: its crop has zero rows there.
    assert (crops[1, :, 0, :] == 0).all() and (crops[1, :, -1, :] == 0).all()


def test_upscaled_crop_equals_cv2_resize_on_a_textured_image() -> None:
    rng = np.random.default_rng(3)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (0, 0), 1.5)
    box = np.array([[30.0, 20.0, 50.0, 60.0]])  # already 2:1, so not widened
    crop = crops_of(frame, box, (256, 128))[0]
    reference = cv2.resize(
        frame[20:60, 30:50].astype(np.float32), (128, 256), interpolation=cv2.INTER_LINEAR
    ).transpose(2, 0, 1)
    # cv2.resize replicates the crop's edge where roi_align reads the neighbouring pixels.
    inner = (slice(None), slice(8, -8), slice(8, -8))
    np.testing.assert_allclose(crop[inner], reference[inner], atol=1e-3)


def test_box_fully_outside_the_frame_is_all_zero() -> None:
    crops = crops_of(gradient_frame(), np.array([[300.0, 250.0, 340.0, 330.0]]), (32, 16))
    assert crops.shape == (1, 3, 32, 16)
    np.testing.assert_array_equal(crops, 0.0)


def test_crops_from_a_batch_of_frames_use_each_box_frame() -> None:
    first, second = gradient_frame(), 255 - gradient_frame()
    frames = frames_to_tensor([first, second], torch.device("cpu"))
    boxes = aspect_boxes(np.array([[40.0, 30.0, 80.0, 190.0]] * 2), (32, 16))
    crops = crop_boxes(frames, np.array([0, 1]), boxes, (32, 16)).numpy()
    np.testing.assert_allclose(crops[0], crops_of(first, boxes[:1], (32, 16))[0])
    np.testing.assert_allclose(crops[1], crops_of(second, boxes[:1], (32, 16))[0])
    assert not np.allclose(crops[0], crops[1])


def test_cropping_from_the_sampled_window_equals_cropping_from_the_frame() -> None:
    """Only the window the crops read is converted to float: it must not change any value."""
    rng = np.random.default_rng(11)
    frame = rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)
    full = frames_to_tensor([frame], torch.device("cpu"))
    x1, y1 = rng.uniform(-60, 150, 40), rng.uniform(-60, 110, 40)
    boxes = np.stack([x1, y1, x1 + rng.uniform(0, 50, 40), y1 + rng.uniform(0, 70, 40)], axis=1)
    rois = aspect_boxes(boxes, (16, 8))
    expected = crop_boxes(full, np.zeros(len(rois)), rois, (16, 8))
    for index in range(len(rois)):  # one window per box: the tightest windows
        y0, y_end, x0, x_end = region = sample_region(rois[index : index + 1], 90, 130)
        assert 0 <= y0 < y_end <= 90 and 0 <= x0 < x_end <= 130
        window = frames_to_tensor([frame], torch.device("cpu"), region)
        shifted = rois[index : index + 1] - np.array([x0, y0, x0, y0])
        cropped = crop_boxes(window, np.zeros(1), shifted, (16, 8))
        torch.testing.assert_close(cropped[0], expected[index], atol=1e-3, rtol=0)
