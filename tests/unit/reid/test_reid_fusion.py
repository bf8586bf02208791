"""BatchNorm folding: same features, no BatchNorm left, and a refusal when folding would lie."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import timm
import torch
from torch import nn

from ray_deepsort.reid import ReIDModel
from ray_deepsort.reid.fusion import fold_batch_norms


def randomised_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine terms, as a trained network has."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    return model.eval()


def count_norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("arch", ["mobilenetv2_035", "test_resnet"])
def test_folded_copy_has_no_norms_and_the_same_output(arch: str) -> None:
    torch.manual_seed(0)
    model = randomised_norms(timm.create_model(arch, pretrained=False, num_classes=0))
    norms = count_norms(model)
    folded, count = fold_batch_norms(model, (64, 32))
    assert count == norms > 0
    assert count_norms(folded) == 0
    assert count_norms(model) == norms  # the original is left as it was
    x = torch.randn(3, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)


class ConvFeedsNormAndSkip(nn.Module):
    """The convolution's output is also added after the norm: folding would change the sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return (self.norm(y) + y).mean(dim=(2, 3))


def test_folding_that_changes_the_output_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    model = randomised_norms(ConvFeedsNormAndSkip())
    with caplog.at_level(logging.WARNING, logger="ray_deepsort.reid.fusion"):
        result, count = fold_batch_norms(model, (16, 8))
    assert result is model and count == 0
    assert isinstance(model.norm, nn.BatchNorm2d)
    assert "kept unfolded" in caplog.text


def test_reid_model_folds_by_default_with_the_same_embeddings() -> None:
    torch.manual_seed(0)
    folded = ReIDModel.from_timm("mobilenetv2_035", pretrained=False, input_size=(64, 32))
    torch.manual_seed(0)
    plain = ReIDModel.from_timm(
        "mobilenetv2_035", pretrained=False, input_size=(64, 32), fold_batch_norm=False
    )
    assert count_norms(folded.backbone) == 0 < count_norms(plain.backbone)
    frame = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 50, 100], [60, 5, 150, 115]], np.float32)
    np.testing.assert_allclose(folded.embed(frame, boxes), plain.embed(frame, boxes), atol=1e-4)
