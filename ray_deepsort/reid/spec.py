"""`ModelSpec`: what a ReID network expects of its input and what its distances mean.

A network is only half of an appearance model: the same weights give wrong features when crops
are cut, ordered or scaled differently from training, and a distance gate tuned for one model
is wrong for another (ImageNet MobileNetV2 puts the same person at cosine 0.23 and different
people at 0.32; Intel's person-ReID 0288 at 0.38 and 0.81). So every `ReIDModel` carries its
spec as plain data, printed by `repr` and checked when it is made.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
COLOR_ORDERS = ("bgr", "rgb")
# "stretch": resize the box to the input size (how the OMZ and torchreid models were trained);
# "pad": grow the box around its centre to the input aspect first (Wojke et al.), no distortion.
CROP_POLICIES = ("stretch", "pad")
# OpenVINO inference precisions; "auto" is OpenVINO's own choice (bf16 on CPUs that have it).
OPENVINO_PRECISIONS = ("auto", "f32", "bf16", "f16")


@dataclass(frozen=True)
class ModelSpec:
    """Input and output contract of a ReID network.

    `input_size` is (height, width); `input_color_order` is the channel order the network was
    trained on; `mean` and `std` normalise 0–1 pixel values, channel by channel in that order
    (a network that wants raw 0–255 values has mean 0 and std 1/255); `crop` is a
    `CROP_POLICIES` entry; `embedding_dim` is D of its output (None: found by a probe pass);
    `appearance_threshold` is the cosine-distance gate recommended for it and
    `appearance_weight` the weight of appearance in the tracker's cascade cost (None: the
    tracker's own defaults apply). `name` says where the spec came from, for messages and
    `repr`.
    """

    input_size: tuple[int, int] = (256, 128)
    input_color_order: str = "rgb"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop: str = "pad"
    embedding_dim: int | None = None
    appearance_threshold: float | None = None
    appearance_weight: float | None = None
    name: str = ""

    def __post_init__(self) -> None:
        size = tuple(int(v) for v in self.input_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"input_size must be (height, width) >= 1, got {self.input_size}")
        object.__setattr__(self, "input_size", size)
        if self.input_color_order not in COLOR_ORDERS:
            raise ValueError(
                f"input_color_order must be one of {COLOR_ORDERS}, got {self.input_color_order!r}"
            )
        for field_name in ("mean", "std"):
            values = tuple(float(v) for v in getattr(self, field_name))
            if len(values) != 3:
                raise ValueError(f"{field_name} must have 3 values, got {values}")
            object.__setattr__(self, field_name, values)
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        if self.crop not in CROP_POLICIES:
            raise ValueError(f"crop must be one of {CROP_POLICIES}, got {self.crop!r}")
        if self.embedding_dim is not None and int(self.embedding_dim) < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {self.embedding_dim}")
        if self.appearance_threshold is not None and not self.appearance_threshold > 0:
            raise ValueError(
                f"appearance_threshold must be positive, got {self.appearance_threshold}"
            )
        if self.appearance_weight is not None and not 0 <= self.appearance_weight <= 1:
            raise ValueError(f"appearance_weight must be in [0, 1], got {self.appearance_weight}")

    def replace(self, **overrides: Any) -> ModelSpec:
        """A copy with `overrides` applied (unknown field names are a ValueError)."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"unknown model spec fields {unknown}; known: {sorted(fields)}")
        return dataclasses.replace(self, **overrides)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
