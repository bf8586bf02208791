"""Command-line flags that choose a ReID model: one vocabulary for stream, archive, demo, eval.

Plain argparse and strings (no torch, no numpy), so every command's `--help` stays instant.
"""

from __future__ import annotations

from typing import Any

# `ModelChoice.backend` values: "auto" runs a file in its natural backend (an IR in OpenVINO,
# ONNX in ONNX Runtime, torch weights and timm names in torch).
BACKENDS = ("auto", "torch", "openvino", "onnxruntime")
DEFAULT_MODEL = "mobilenetv2-imagenet"
# Files `ReIDModel.from_file` loads: torch weights need a timm architecture; the rest are graphs.
TORCH_SUFFIXES = frozenset({".pt", ".pth", ".safetensors"})
MODEL_SUFFIXES = TORCH_SUFFIXES | {".xml", ".onnx"}


def add_model_arguments(parser: Any) -> None:
    """`--model`, `--model-path`, `--model-backend`: a `ModelChoice` on every command line.

    All default to None (not given), so a command can tell a flag from its config's value;
    `model_name_from_flags` gives the name they mean.
    """
    parser.add_argument(
        "--model",
        default=None,
        help="a known model (person-reidentification-retail-0288, -0287, -0267, "
        f"{DEFAULT_MODEL}), a timm name, or 'none' (motion only); default {DEFAULT_MODEL}, "
        "or with --model-path alone what the file is",
    )
    parser.add_argument(
        "--model-path",
        default=None,
        help="model file (.xml IR, .onnx; .pt/.safetensors with --model ARCH) or a known "
        "model's folder",
    )
    parser.add_argument(
        "--model-backend", default=None, choices=BACKENDS, help="default auto: the file's own"
    )


def model_name_from_flags(model: str | None, path: str | None, default: str = DEFAULT_MODEL) -> str:
    """The model name `--model`/`--model-path` mean: --model if given; with --model-path alone
    "" (the file says which model it is); else `default`."""
    if model is not None:
        return model
    return "" if path else default
