"""A light detections container, and adapters to and from `supervision.Detections`.

The tracker works on this container internally; callers may pass either type and get the same
type back. Supervision is never imported here: its objects are recognised by their attributes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Detections:
    """Boxes of one frame: `xyxy` float32 [N, 4] in pixels, plus per-box arrays of length N."""

    xyxy: np.ndarray
    confidence: np.ndarray | None = None
    class_id: np.ndarray | None = None
    tracker_id: np.ndarray | None = None
    data: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        n = len(self.xyxy)
        if self.confidence is not None:
            self.confidence = _per_box(self.confidence, n, np.float32, "confidence")
        if self.class_id is not None:
            self.class_id = _per_box(self.class_id, n, np.int64, "class_id")
        if self.tracker_id is not None:
            self.tracker_id = _per_box(self.tracker_id, n, np.int64, "tracker_id")
        for key, value in self.data.items():
            if len(value) != n:
                raise ValueError(f"data[{key!r}] has {len(value)} entries for {n} boxes")

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls) -> Detections:
        return cls(xyxy=np.zeros((0, 4), np.float32))

    def __getitem__(self, index: Any) -> Detections:
        """Select boxes by mask, index array or slice (as `supervision.Detections` does)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(
            xyxy=self.xyxy[index],
            confidence=None if self.confidence is None else self.confidence[index],
            class_id=None if self.class_id is None else self.class_id[index],
            tracker_id=None if self.tracker_id is None else self.tracker_id[index],
            data={k: np.asarray(v)[index] for k, v in self.data.items()},
        )

    def copy(self) -> Detections:
        return copy.deepcopy(self)

    def confidence_or_ones(self) -> np.ndarray:
        if self.confidence is None:
            return np.ones(len(self), np.float32)
        return self.confidence

    def class_id_or_zeros(self) -> np.ndarray:
        if self.class_id is None:
            return np.zeros(len(self), np.int64)
        return self.class_id


def _per_box(values: Any, n: int, dtype: type, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=dtype).reshape(-1)
    if len(array) != n:
        raise ValueError(f"{name} has {len(array)} entries for {n} boxes")
    return array


def is_supervision_detections(obj: object) -> bool:
    """True for a `supervision.Detections` (checked by type name, so supervision stays optional)."""
    cls = type(obj)
    return cls.__name__ == "Detections" and cls.__module__.split(".")[0] == "supervision"


def to_native(detections: Any) -> Detections:
    """Our container for either input type, for reading only (it may share the caller's arrays)."""
    if isinstance(detections, Detections):
        return detections
    if is_supervision_detections(detections):
        return Detections(
            xyxy=detections.xyxy,
            confidence=detections.confidence,
            class_id=detections.class_id,
        )
    raise TypeError(
        "detections must be ray_deepsort.Detections or supervision.Detections, "
        f"got {type(detections).__name__}"
    )


def with_tracker_ids(original: Any, tracker_id: np.ndarray) -> Any:
    """A copy of the caller's detections, of the caller's type, with `tracker_id` set."""
    result = copy.deepcopy(original)
    result.tracker_id = np.asarray(tracker_id, dtype=np.int64).copy()
    return result
