"""Box geometry: conversions between corner and (centre, aspect, height) forms, IoU, validity."""

from __future__ import annotations

import numpy as np


def xyxy_to_xyah(xyxy: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) -> (cx, cy, width / height, height), the form the filter measures."""
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    width = xyxy[:, 2] - xyxy[:, 0]
    height = xyxy[:, 3] - xyxy[:, 1]
    return np.stack(
        [xyxy[:, 0] + width / 2, xyxy[:, 1] + height / 2, width / height, height], axis=1
    )


def xyah_to_xyxy(xyah: np.ndarray) -> np.ndarray:
    xyah = np.asarray(xyah, dtype=np.float64).reshape(-1, 4)
    height = xyah[:, 3]
    width = xyah[:, 2] * height
    x1 = xyah[:, 0] - width / 2
    y1 = xyah[:, 1] - height / 2
    return np.stack([x1, y1, x1 + width, y1 + height], axis=1)


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU [len(a), len(b)] of xyxy boxes; 0 where a union is empty."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(1, -1, 4)
    inter_w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    inter_h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = inter_w * inter_h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def valid_box_mask(xyxy: np.ndarray, frame_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Boxes the tracker can use: finite, positive width and height, overlapping the frame if known.

    Invalid boxes are never tracked and never embedded; they come back with tracker_id -1.
    """
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(xyxy).all(axis=1)
        valid &= (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        if frame_shape is not None:
            height, width = frame_shape[:2]
            valid &= (xyxy[:, 2] > 0) & (xyxy[:, 3] > 0)
            valid &= (xyxy[:, 0] < width) & (xyxy[:, 1] < height)
    return valid
