"""Batched crop geometry: boxes -> aspect-preserving, zero-padded crops in one kernel call.

DeepSORT's appearance model sees every box at a fixed input aspect (Wojke et al. use 128x64,
h:w = 2:1). Squashing a wide box into a tall input distorts the person; cutting it (as a centre
crop does) loses half of them. We grow the shorter side of each box around its centre until the
box has the input aspect, so the whole detection is always inside the crop, and sample pixels
outside the frame as zeros. All crops of all frames come out of `torchvision.ops.roi_align`
calls (one per distinct frame size), never out of a per-box Python loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.ops import roi_align

# A box is never smaller than this (pixels) after widening: zero-area boxes still sample the
# pixel under their centre instead of an undefined region.
MIN_CROP_HEIGHT = 1.0


def validate_boxes(xyxy: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Boxes as float64 [N, 4]; a ValueError for a wrong shape or non-finite coordinates.

    Non-finite boxes are refused rather than embedded: a NaN box means the detector (or a
    caller's arithmetic) is broken, and a made-up embedding would hide that.
    """
    boxes = np.asarray(xyxy, dtype=np.float64)
    if boxes.size == 0:
        return np.zeros((0, 4), np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4] (x1, y1, x2, y2), got {boxes.shape}")
    finite = np.isfinite(boxes).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"boxes {bad[:10].tolist()} have non-finite coordinates (NaN/inf), "
            f"e.g. {boxes[bad[0]].tolist()}; filter them before embedding"
        )
    return boxes


def aspect_boxes(xyxy: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """Grow each box around its centre to the input aspect (h:w) without cutting any of it.

    `input_size` is (height, width). A box narrower than the aspect is widened, a wider one is
    made taller; inverted or zero-area boxes become a `MIN_CROP_HEIGHT`-tall box at their centre.
    """
    boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    aspect_hw = float(input_size[0]) / float(input_size[1])
    centre_x = 0.5 * (boxes[:, 0] + boxes[:, 2])
    centre_y = 0.5 * (boxes[:, 1] + boxes[:, 3])
    width = np.maximum(boxes[:, 2] - boxes[:, 0], 0.0)
    height = np.maximum(boxes[:, 3] - boxes[:, 1], 0.0)
    new_height = np.maximum(np.maximum(height, width * aspect_hw), MIN_CROP_HEIGHT)
    new_width = new_height / aspect_hw
    return np.stack(
        [
            centre_x - 0.5 * new_width,
            centre_y - 0.5 * new_height,
            centre_x + 0.5 * new_width,
            centre_y + 0.5 * new_height,
        ],
        axis=1,
    )


def sample_region(boxes: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """Pixel window (y0, y1, x0, x1) of a frame holding every pixel that crops of `boxes` read.

    Bilinear samples of a box [x1, x2) touch pixel columns floor(x1) - 1 .. ceil(x2); the
    window is that range clipped to the frame (at least one pixel). Cropping from the window
    instead of the frame gives the same values (window edges inside the frame are never
    reached; those on the frame edge are the frame's), and only the window is made float.
    """
    x0 = int(np.clip(np.floor(boxes[:, 0].min()) - 1, 0, width - 1))
    y0 = int(np.clip(np.floor(boxes[:, 1].min()) - 1, 0, height - 1))
    x1 = int(np.clip(np.ceil(boxes[:, 2].max()) + 1, x0 + 1, width))
    y1 = int(np.clip(np.ceil(boxes[:, 3].max()) + 1, y0 + 1, height))
    return y0, y1, x0, x1


def frames_to_tensor(
    frames: Sequence[np.ndarray],
    device: torch.device,
    region: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """Same-shape HxWx3 uint8 frames -> float32 [B, 3, h, w] on `device`, channel order kept.

    Each frame crosses to the device once, as uint8 (a quarter of the float bytes); the float
    conversion and NCHW layout happen there, for the `region` (y0, y1, x0, x1) window only.
    """
    uploaded = [
        torch.from_numpy(np.ascontiguousarray(f)).to(device, non_blocking=True) for f in frames
    ]
    batch = torch.stack(uploaded)
    if region is not None:
        y0, y1, x0, x1 = region
        batch = batch[:, y0:y1, x0:x1]
    return batch.permute(0, 3, 1, 2).to(dtype=torch.float32, memory_format=torch.contiguous_format)


def crop_boxes(
    frames: torch.Tensor,
    batch_index: torch.Tensor | np.ndarray,
    boxes: torch.Tensor | np.ndarray,
    output_size: tuple[int, int],
) -> torch.Tensor:
    """Bilinear crops [K, C, h, w] of `boxes` (already at the output aspect) from `frames`.

    `frames` is float [B, C, H, W], `batch_index[k]` says which frame box k comes from, and box
    coordinates are continuous pixel edges (pixel i spans [i, i+1)), as detectors report them.
    Samples more than one pixel outside the frame are zero; within that pixel roi_align repeats
    the edge. Large boxes average several samples per output pixel (roi_align's adaptive
    sampling), so downscaling does not alias.
    """
    device = frames.device
    index = torch.as_tensor(batch_index, dtype=torch.float32, device=device).reshape(-1, 1)
    coords = torch.as_tensor(boxes, dtype=torch.float32, device=device).reshape(-1, 4)
    rois = torch.cat([index, coords], dim=1)
    if rois.shape[0] == 0:
        return frames.new_zeros((0, frames.shape[1], *output_size))
    return roi_align(
        frames,
        rois,
        output_size=output_size,
        spatial_scale=1.0,
        sampling_ratio=-1,
        aligned=True,
    )


def stretch_boxes(xyxy: np.ndarray) -> np.ndarray:
    """The boxes as they are, for crops resized to the input size whatever their aspect.

    Inverted or zero-size boxes become `MIN_CROP_HEIGHT` wide and tall at their centre.
    """
    boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    centre = 0.5 * (boxes[:, :2] + boxes[:, 2:])
    half = 0.5 * np.maximum(boxes[:, 2:] - boxes[:, :2], MIN_CROP_HEIGHT)
    return np.concatenate([centre - half, centre + half], axis=1)
