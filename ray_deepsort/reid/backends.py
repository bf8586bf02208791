"""Inference backends behind `ReIDModel`: torch, OpenVINO Runtime and ONNX Runtime.

A backend only runs the network: it takes normalised crops [B, 3, h, w] (float32 torch, on the
backend's `device`) and returns features [B, D]. Cropping, colour order and normalisation stay
in `ReIDModel`, so every backend sees exactly the same input. OpenVINO and ONNX Runtime are
optional extras; asking for one that is not installed raises `MissingExtraError` naming it.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ray_deepsort.reid.spec import OPENVINO_PRECISIONS

logger = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class MissingExtraError(ImportError):
    """An optional backend's package is not installed; the message names the pip extra."""


class ModelLoadError(ValueError):
    """A model file that cannot be used: unreadable, truncated, wrong input, non-finite output."""


def import_extra(module: str, extra: str, purpose: str) -> Any:
    """Import `module`, or raise `MissingExtraError` saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{purpose} needs the {module!r} package, which is not installed: "
            f'pip install "ray-deepsort[{extra}]"'
        ) from exc


class Backend(Protocol):
    """What `ReIDModel` needs of an inference engine."""

    name: str
    device: torch.device
    dtype: torch.dtype  # dtype the input crops should have

    def to(self, device: torch.device) -> None: ...

    def forward(self, batch: torch.Tensor) -> torch.Tensor: ...


def resolve_device(device: str | torch.device | None) -> torch.device:
    """ "auto" (or None) -> CUDA when available, else CPU; anything else as torch understands it.

    An explicit CUDA device without CUDA is an error here, at load time: a GPU worker whose
    torch does not match the node's driver must fail fast, not embed on the CPU or fail later.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"model device {str(device)!r} but torch {torch.__version__} sees no CUDA (CUDA "
            f"build: {torch.version.cuda or 'none'}): no GPU here, or a driver older than the "
            "build; use device 'auto' or 'cpu' to run on the CPU"
        )
    return resolved


class TorchBackend:
    """An `nn.Module` in eager torch. On CUDA it runs in float16 unless `half=False`."""

    name = "torch"

    def __init__(
        self, module: nn.Module, half: bool | None = None, channels_last: bool = True
    ) -> None:
        self.module = module.eval()
        self.half = half
        self.channels_last = channels_last
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    def to(self, device: torch.device) -> None:
        self.device = device
        use_half = device.type == "cuda" if self.half is None else self.half
        self.dtype = torch.float16 if use_half and device.type == "cuda" else torch.float32
        self.module.to(device=device, dtype=self.dtype)
        if self.channels_last:
            self.module.to(memory_format=torch.channels_last)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        batch = batch.to(device=self.device, dtype=self.dtype, memory_format=memory_format)
        with torch.inference_mode():
            features = self.module(batch)
        if features.ndim > 2:  # backbones built without global pooling
            features = features.flatten(2).mean(dim=2)
        return features.float()

    def describe(self) -> str:
        return f"torch {type(self.module).__name__} {self.dtype}".replace("torch.", "")


def _numpy_input(batch: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy())


class OpenVINOBackend:
    """An OpenVINO Runtime model (IR, ONNX, or converted from torch) with a dynamic batch.

    `precision` is the plugin's inference precision. "auto" keeps OpenVINO's choice: bf16 on
    CPUs with bf16 units (2–4x faster, features within a few 1e-3 of f32), f32 elsewhere, so
    features then differ slightly between machines; "f32" gives the same features everywhere.
    `threads` sets `INFERENCE_NUM_THREADS` (None: OpenVINO's choice, every core).
    """

    name = "openvino"

    def __init__(
        self,
        model: Any,
        input_size: tuple[int, int],
        precision: str = "auto",
        threads: int | None = None,
        ov_device: str = "CPU",
    ) -> None:
        ov = import_extra("openvino", "openvino", "the OpenVINO backend")
        if precision not in OPENVINO_PRECISIONS:
            raise ValueError(f"precision must be one of {OPENVINO_PRECISIONS}, got {precision!r}")
        if len(model.inputs) != 1 or len(model.outputs) < 1:
            raise ModelLoadError(
                f"a ReID network has one input and one output; this one has "
                f"{len(model.inputs)} inputs and {len(model.outputs)} outputs"
            )
        shape = model.inputs[0].get_partial_shape()
        check_input_shape(
            [None if d.is_dynamic else d.get_length() for d in shape], input_size, "OpenVINO"
        )
        model.reshape({model.inputs[0]: ov.PartialShape([-1, 3, *input_size])})
        config: dict[str, Any] = {}
        if precision != "auto":
            config["INFERENCE_PRECISION_HINT"] = precision
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = ov.Core().compile_model(model, ov_device, config)
        except RuntimeError as exc:
            raise ModelLoadError(f"OpenVINO could not compile the model: {exc}") from exc
        self.precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
        self.threads = threads
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self._request = self.compiled.create_infer_request()

    def to(self, device: torch.device) -> None:
        if device.type != "cpu":
            logger.warning("the OpenVINO backend runs on its own device (CPU); ignoring %s", device)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self._request.infer({0: _numpy_input(batch)})
        features = np.array(self._request.get_output_tensor(0).data, dtype=np.float32)
        return torch.from_numpy(features.reshape(len(features), -1))

    def describe(self) -> str:
        return f"openvino {self.precision}, threads={self.threads or 'auto'}"


class ONNXRuntimeBackend:
    """An ONNX model in ONNX Runtime: CUDA/TensorRT providers on a CUDA device when present.

    A graph exported with a fixed batch of 1 is given a symbolic batch dimension when the `onnx`
    package can edit it; if the graph still cannot run larger batches, crops go one at a time.
    """

    name = "onnxruntime"

    def __init__(
        self,
        model_bytes: bytes,
        input_size: tuple[int, int],
        device: torch.device,
        threads: int | None = None,
    ) -> None:
        ort = import_extra("onnxruntime", "onnx", "the ONNX Runtime backend")
        self._ort = ort
        self.threads = threads
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self._input_size = input_size
        self._model_bytes = _with_symbolic_batch(model_bytes)
        self.to(device)

    def to(self, device: torch.device) -> None:
        if getattr(self, "_session_device", None) == device.type:
            return
        self._session_device = device.type
        ort = self._ort
        available = ort.get_available_providers()
        wanted = ["CPUExecutionProvider"]
        if device.type == "cuda":
            gpu = [p for p in GPU_PROVIDERS if p in available]
            if not gpu:
                logger.warning(
                    "ONNX Runtime has no CUDA provider here (%s): running on the CPU", available
                )
            wanted = gpu + wanted
        options = ort.SessionOptions()
        options.log_severity_level = 3  # initializer clean-up warnings drown real messages
        if self.threads is not None:
            options.intra_op_num_threads = int(self.threads)
        try:
            self.session = ort.InferenceSession(self._model_bytes, options, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelLoadError(f"ONNX Runtime could not load the model: {exc}") from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelLoadError(f"a ReID network has one input; this one has {len(inputs)}")
        shape = [d if isinstance(d, int) else None for d in inputs[0].shape]
        check_input_shape(shape, self._input_size, "ONNX")
        self._input_name = inputs[0].name
        self._batch_one = shape[0] == 1 or not self._runs_batches()
        self.providers = self.session.get_providers()

    def _runs_batches(self) -> bool:
        """Whether the graph takes two crops at once (reshapes baked for batch 1 do not)."""
        try:
            self._run(np.zeros((2, 3, *self._input_size), np.float32))
        except Exception:  # onnxruntime's own error types
            logger.info("the ONNX graph only runs batch 1: crops go through one at a time")
            return False
        return True

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        array = _numpy_input(batch)
        if self._batch_one and len(array) > 1:
            rows = [self._run(array[i : i + 1]) for i in range(len(array))]
            return torch.from_numpy(np.concatenate(rows))
        return torch.from_numpy(self._run(array))

    def _run(self, array: np.ndarray) -> np.ndarray:
        output = self.session.run(None, {self._input_name: array})[0]
        return np.asarray(output, np.float32).reshape(len(array), -1)

    def describe(self) -> str:
        return f"onnxruntime {self.providers[0]}, threads={self.threads or 'auto'}"


def check_input_shape(shape: list[int | None], input_size: tuple[int, int], kind: str) -> None:
    """Refuse a network whose input is not [N, 3, H, W] with H, W fitting `input_size`."""
    if len(shape) != 4 or shape[1] not in (3, None):
        raise ModelLoadError(
            f"the {kind} model's input has shape {shape}; a ReID network takes [N, 3, H, W]"
        )
    height, width = shape[2], shape[3]
    if (height is not None and height != input_size[0]) or (
        width is not None and width != input_size[1]
    ):
        raise ModelLoadError(
            f"the {kind} model takes {height}x{width} (height x width) crops, but the spec says "
            f"input_size={input_size}; pass input_size=({height}, {width})"
        )


def _with_symbolic_batch(model_bytes: bytes) -> bytes:
    """The graph with a symbolic first dimension on its input and outputs, if `onnx` is there."""
    try:
        import onnx
    except ImportError:
        return model_bytes
    model = onnx.load_from_string(model_bytes)
    initializers = {init.name for init in model.graph.initializer}
    for value in [*model.graph.input, *model.graph.output]:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) > 0:
            dims[0].dim_param = "batch"
    return model.SerializeToString()
