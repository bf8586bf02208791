"""Fold inference-mode BatchNorm layers into the convolutions that feed them.

In eval mode a BatchNorm is a per-channel affine map, which the convolution before it can
absorb into its weights and bias. On a CPU, MobileNetV2 spends about a sixth of a forward pass
in `batch_norm`; folded, that time is gone and the features are the same to float rounding.

Pairs are found by watching one forward pass (a BatchNorm whose input is exactly a Conv2d's
output), and the folded copy is kept only if it reproduces the original model's output, so a
convolution whose output is also used elsewhere (which folding would change) is caught.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

logger = logging.getLogger(__name__)


def fold_batch_norms(
    model: nn.Module, input_size: tuple[int, int] = (256, 128), tolerance: float = 1e-4
) -> tuple[nn.Module, int]:
    """A copy of `model` (eval mode) with BatchNorms folded, and how many were folded.

    Returns `model` itself and 0 when nothing can be folded or the folded copy's output on a
    random batch differs from the original's by more than `tolerance` (relative).
    """
    model.eval()
    probe = torch.randn(2, 3, *input_size, generator=torch.Generator().manual_seed(0))
    probe = probe.to(next(model.parameters()).device)
    with torch.inference_mode():
        expected = model(probe)
    folded = copy.deepcopy(model)
    pairs = _conv_norm_pairs(folded, probe)
    parents = {
        child: (parent, name)
        for parent in folded.modules()
        for name, child in parent.named_children()
    }
    count = 0
    for conv, norm in pairs:
        replacement = _without_norm(norm)
        if replacement is None or norm not in parents:
            continue
        _fold(conv, norm)
        parent, name = parents[norm]
        setattr(parent, name, replacement)
        count += 1
    if count == 0:
        return model, 0
    with torch.inference_mode():
        got = folded(probe)
    scale = float(expected.abs().max()) or 1.0
    error = float((got - expected).abs().max()) / scale
    if got.shape != expected.shape or error > tolerance:
        logger.warning(
            "BatchNorm folding changed the output (max relative error %.2g); kept unfolded", error
        )
        return model, 0
    return folded, count


def _conv_norm_pairs(model: nn.Module, probe: torch.Tensor) -> list[tuple[nn.Conv2d, nn.Module]]:
    """(conv, norm) pairs where the norm's input is the conv's output, each called once."""
    calls: Counter[nn.Module] = Counter()
    produced: dict[int, tuple[nn.Conv2d, torch.Tensor]] = {}
    pairs: list[tuple[nn.Conv2d, nn.Module]] = []

    def on_conv(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        calls[module] += 1
        produced[id(output)] = (module, output)  # held, so the id stays unique

    def on_norm(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        calls[module] += 1
        source = produced.get(id(inputs[0]))
        if source is not None and source[1] is inputs[0]:
            pairs.append((source[0], module))

    hooks = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(on_conv))
        elif isinstance(module, nn.BatchNorm2d):
            hooks.append(module.register_forward_hook(on_norm))
    try:
        with torch.inference_mode():
            model(probe)
    finally:
        for hook in hooks:
            hook.remove()
    return [
        (conv, norm)
        for conv, norm in pairs
        if calls[conv] == 1
        and calls[norm] == 1
        and norm.running_mean is not None
        and norm.num_features == conv.out_channels
    ]


def _without_norm(norm: nn.Module) -> nn.Module | None:
    """What is left of `norm` once folded: nothing, or timm's BatchNormAct2d's dropout and
    activation; None for other BatchNorm subclasses (their forward is unknown)."""
    if type(norm) is nn.BatchNorm2d:
        return nn.Identity()
    if type(norm).__name__ == "BatchNormAct2d" and hasattr(norm, "act") and hasattr(norm, "drop"):
        return nn.Sequential(norm.drop, norm.act)
    return None


def _fold(conv: nn.Conv2d, norm: nn.Module) -> None:
    conv.weight, conv.bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps, norm.weight,
        norm.bias,
    )  # fmt: skip
