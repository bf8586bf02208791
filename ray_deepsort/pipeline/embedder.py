"""Batched ReID embedding of encoded frames from many streams (the body of the embedder actor)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ray_deepsort.core.boxes import valid_box_mask
from ray_deepsort.pipeline.types import EmbedBatchResult, EmbedItem, EmbedOutcome

# Decoded-image flags for cv2.imdecode: 3-channel BGR, the order ReIDModel expects by default.
_IMREAD_COLOR = 1


# Crops per CNN forward pass on CPU embedders. Small passes keep activations in cache: with
# mobilenetv2_100 at 256x128 on one thread, passes of 8 crops ran about twice as fast per crop as
# passes of 128 (16 vs 35 ms). A GPU wants the whole embed request in one pass.
DEFAULT_CPU_FORWARD_BATCH = 8


def forward_batch_size(requested: int, on_gpu: bool, request_crops: int) -> int:
    """Crops per forward pass: `requested` if set (> 0), else all of a request's
    `request_crops` on a GPU and `DEFAULT_CPU_FORWARD_BATCH` on CPU."""
    if requested > 0:
        return requested
    return request_crops if on_gpu else DEFAULT_CPU_FORWARD_BATCH


class BatchEmbedder(Protocol):
    """What `FrameEmbedder` needs: `ray_deepsort.reid.ReIDModel` is one."""

    @property
    def embedding_dim(self) -> int: ...

    def embed_batch(
        self, frames: Sequence[np.ndarray], boxes: Sequence[np.ndarray]
    ) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class ModelSpec:
    """Which ReID model an embedder loads (built inside the actor, never shipped pickled).

    `name`: a timm model name; "mobilenetv2_100" without `checkpoint` loads the bundled ImageNet
    trunk (offline). `checkpoint`: local state_dict file (loaded with weights_only=True).
    `pretrained`: for other names without a checkpoint, fetch timm's weights (needs internet);
    False gives random weights (timing only). `device`: "auto", "cpu", "cuda", "cuda:1", ...
    """

    name: str = "mobilenetv2_100"
    checkpoint: str = ""
    pretrained: bool = True
    device: str = "auto"
    max_batch_size: int = 128
    input_size: tuple[int, int] = (256, 128)


def load_reid_model(spec: ModelSpec) -> Any:
    """Build the `ReIDModel` described by `spec` (imports torch; call inside the worker)."""
    from ray_deepsort.reid import ReIDModel

    if spec.name == "mobilenetv2_100" and not spec.checkpoint:
        return ReIDModel.mobilenetv2_imagenet(
            device=spec.device, input_size=spec.input_size, max_batch_size=spec.max_batch_size
        )
    return ReIDModel.from_timm(
        spec.name,
        pretrained=spec.pretrained and not spec.checkpoint,
        checkpoint_path=spec.checkpoint or None,
        input_size=spec.input_size,
        device=spec.device,
        max_batch_size=spec.max_batch_size,
    )


class FrameEmbedder:
    """Decode many frames, crop every box and embed all crops in shared forward passes.

    Per-frame problems (an image that does not decode, or decodes to another size than declared)
    become `EmbedOutcome.error` so the caller can dead-letter that frame and keep the others.
    Boxes the tracker would ignore (wholly outside the picture) get all-zero rows, which the
    tracker treats as "no appearance", exactly as when it embeds a frame itself.
    """

    def __init__(self, model: BatchEmbedder) -> None:
        self.model = model

    def embed(self, items: Sequence[EmbedItem]) -> EmbedBatchResult:
        import cv2

        started = time.perf_counter()
        outcomes: list[EmbedOutcome | None] = [None] * len(items)
        frames: list[np.ndarray] = []
        boxes: list[np.ndarray] = []
        slots: list[tuple[int, np.ndarray]] = []
        for i, item in enumerate(items):
            image = cv2.imdecode(np.frombuffer(item.image, np.uint8), _IMREAD_COLOR)
            if image is None:
                outcomes[i] = EmbedOutcome(
                    None, f"bad_image: the {item.image_format} does not decode"
                )
                continue
            height, width = image.shape[:2]
            if item.width is not None and (width, height) != (item.width, item.height):
                outcomes[i] = EmbedOutcome(
                    None,
                    f"bad_image: decoded {width}x{height}, header says {item.width}x{item.height}",
                )
                continue
            xyxy = np.asarray(item.xyxy, np.float32).reshape(-1, 4)
            valid = valid_box_mask(xyxy, image.shape)
            frames.append(image)
            boxes.append(xyxy[valid])
            slots.append((i, valid))
        decoded = time.perf_counter()
        embedded = self.model.embed_batch(frames, boxes) if frames else []
        dim = int(self.model.embedding_dim)
        for (i, valid), rows in zip(slots, embedded, strict=True):
            full = np.zeros((len(valid), dim), np.float32)
            full[valid] = rows
            outcomes[i] = EmbedOutcome(full)
        finished = time.perf_counter()
        return EmbedBatchResult(
            outcomes=[outcome for outcome in outcomes if outcome is not None],
            num_crops=int(sum(len(b) for b in boxes)),
            decode_seconds=decoded - started,
            embed_seconds=finished - decoded,
        )
