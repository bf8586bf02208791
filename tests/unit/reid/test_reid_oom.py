"""Out-of-memory forward passes are split in halves and retried: no crop is dropped."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ray_deepsort.pipeline.embedder import FrameEmbedder
from ray_deepsort.pipeline.types import EmbedItem
from ray_deepsort.reid import ReIDModel
from ray_deepsort.reid.model import is_out_of_memory


class _MemoryLimited(nn.Module):
    """A small real CNN that raises `error` for passes of more than `limit` crops."""

    def __init__(self, limit: int, error: Exception) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.limit = limit
        self.error = error
        self.pass_sizes: list[int] = []

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.pass_sizes.append(int(batch.shape[0]))
        if batch.shape[0] > self.limit:
            raise self.error
        return self.net(batch)


def _model(limit: int, error: Exception, max_batch_size: int = 64) -> ReIDModel:
    backbone = _MemoryLimited(1, error)
    model = ReIDModel(backbone, input_size=(32, 16), device="cpu", max_batch_size=max_batch_size)
    _ = model.embedding_dim  # the one-crop probe pass, before the limit and the counting
    backbone.limit = limit
    backbone.pass_sizes.clear()
    return model


def _frames_and_boxes() -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (90, 120, 3), dtype=np.uint8) for _ in range(3)]
    boxes = []
    for count in (9, 0, 14):  # 23 crops; one frame without boxes
        corner = rng.uniform(0, 60, (count, 2))
        size = rng.uniform(10, 40, (count, 2))
        boxes.append(np.hstack([corner, corner + size]).astype(np.float32))
    return frames, boxes


def _assert_same_rows(got: np.ndarray, want: np.ndarray) -> None:
    """Equal up to float rounding: oneDNN may block a pass of 2 crops differently from 23."""
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: out of memory"),
    ],
)
def test_out_of_memory_halves_the_pass_and_keeps_every_crop(error: Exception) -> None:
    frames, boxes = _frames_and_boxes()
    unlimited = _model(limit=1000, error=error)
    expected = unlimited.embed_batch(frames, boxes)
    assert unlimited.backbone.pass_sizes == [23]

    limited = _model(limit=5, error=error)
    limited.backbone.load_state_dict(unlimited.backbone.state_dict())
    embedded = limited.embed_batch(frames, boxes)

    # 23 -> 12 + 11 -> 6 + 6 + 6 + 5 -> 3 + 3 (x3) + 5: every pass that fits runs once.
    sizes = limited.backbone.pass_sizes
    assert [s for s in sizes if s <= 5] == [3, 3, 3, 3, 3, 3, 5]
    assert sum(s for s in sizes if s <= 5) == 23
    assert [e.shape for e in embedded] == [(9, 16), (0, 16), (14, 16)]
    for got, want in zip(embedded, expected, strict=True):
        _assert_same_rows(got, want)


def test_out_of_memory_splits_each_chunk_of_max_batch_size() -> None:
    frames, boxes = _frames_and_boxes()
    error = torch.OutOfMemoryError("CUDA out of memory")
    reference = _model(limit=1000, error=error).embed_batch(frames, boxes)
    model = _model(limit=4, error=error, max_batch_size=8)  # chunks of 8, 8, 7
    embedded = model.embed_batch(frames, boxes)
    assert sum(s for s in model.backbone.pass_sizes if s <= 4) == 23
    for got, want in zip(embedded, reference, strict=True):
        _assert_same_rows(got, want)


def test_a_single_crop_that_does_not_fit_raises() -> None:
    frames, boxes = _frames_and_boxes()
    model = _model(limit=0, error=torch.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(torch.OutOfMemoryError):
        model.embed_batch(frames, boxes)
    assert model.backbone.pass_sizes[-1] == 1


def test_other_errors_are_not_retried() -> None:
    frames, boxes = _frames_and_boxes()
    model = _model(limit=0, error=RuntimeError("Given groups=1, weight of size [8, 3, 3, 3]"))
    with pytest.raises(RuntimeError, match="groups=1"):
        model.embed_batch(frames, boxes)
    assert model.backbone.pass_sizes == [23]


def test_is_out_of_memory() -> None:
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory."))
    assert is_out_of_memory(torch.OutOfMemoryError("Tried to allocate 2.00 GiB"))  # by type
    assert is_out_of_memory(RuntimeError("HIP out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(MemoryError())  # Python's own: not a forward pass to split


def test_frame_embedder_returns_every_crop_through_the_split() -> None:
    """The embedder actor's body gets all rows even when its passes run out of memory."""
    import cv2

    frames, boxes = _frames_and_boxes()
    items = [
        EmbedItem(
            image=cv2.imencode(".png", frame)[1].tobytes(),
            image_format="png",
            xyxy=xyxy,
            width=frame.shape[1],
            height=frame.shape[0],
        )
        for frame, xyxy in zip(frames, boxes, strict=True)
    ]
    error = torch.OutOfMemoryError("CUDA out of memory")
    reference = FrameEmbedder(_model(limit=1000, error=error)).embed(items)
    result = FrameEmbedder(_model(limit=2, error=error)).embed(items)
    assert result.num_crops == reference.num_crops == 23
    for got, want in zip(result.outcomes, reference.outcomes, strict=True):
        assert got.error is None
        _assert_same_rows(got.embeddings, want.embeddings)
