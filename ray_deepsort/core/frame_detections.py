"""One frame's usable detections as one record, in every form association and the tracks need.

The tracker builds it once per frame, so matching, correcting and starting tracks all read the
same rows instead of a handful of parallel arrays passed from method to method.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ray_deepsort.core.boxes import xyxy_to_xyah
from ray_deepsort.core.detections import Detections
from ray_deepsort.core.nn_matching import l2_normalize


@dataclass(frozen=True)
class FrameDetections:
    """The valid boxes of one frame; row i of every field is the same box (Wojke's Detection,
    batched)."""

    index: np.ndarray  # int64 [N]: each row's position in the caller's detections
    xyxy: np.ndarray  # float32 [N, 4], as given: the IoU stage compares corners
    xyah: np.ndarray  # float64 [N, 4] (cx, cy, aspect, height): the filter's measurement
    confidence: np.ndarray  # float32 [N]; ones when the detector gave none
    class_id: np.ndarray  # int64 [N]; zeros when the detector gave none
    features: np.ndarray | None  # float32 [N, D] unit length; None: no appearance this frame
    has_feature: np.ndarray  # bool [N]: rows whose feature is usable (finite, non-zero)

    @classmethod
    def from_detections(
        cls, detections: Detections, valid: np.ndarray, features: np.ndarray | None = None
    ) -> FrameDetections:
        """The `valid` rows of `detections`, with their `features` (float32 [len(detections), D]).

        A feature row that is non-finite or all zero is unusable: it is zeroed and never enters
        a gallery or a distance, so one bad embedding cannot poison a track. The others are
        scaled to unit length, which both distance metrics assume.
        """
        index = np.flatnonzero(valid)
        has_feature = np.zeros(len(detections), np.bool_)
        if features is not None:
            features = np.asarray(features, np.float32)
            norms = np.linalg.norm(features, axis=1)
            has_feature = valid & np.isfinite(norms) & (norms > 0)
            cleaned = np.where(has_feature[:, None], features, 0.0).astype(np.float32)
            features = l2_normalize(cleaned)[index]
        xyxy = detections.xyxy[index]
        return cls(
            index=index,
            xyxy=xyxy,
            xyah=xyxy_to_xyah(xyxy),
            confidence=detections.confidence_or_ones()[index],
            class_id=detections.class_id_or_zeros()[index],
            features=features,
            has_feature=has_feature[index],
        )

    def __len__(self) -> int:
        return len(self.index)
