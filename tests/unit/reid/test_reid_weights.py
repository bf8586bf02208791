"""Checkpoint loading: wrappers, safetensors, checked positional mapping, weights_only refusal."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from ray_deepsort.reid import ReIDModel, load_checkpoint, read_checkpoint

ARCH = "test_resnet"  # a tiny timm ResNet: quick to build and run


def reference_backbone(num_classes: int = 0, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(ARCH, pretrained=False, num_classes=num_classes).eval()


def assert_same_weights(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    reference_state = reference.state_dict()
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        torch.testing.assert_close(value, reference_state[key], rtol=0, atol=0, msg=key)


def fresh_backbone(seed: int = 1) -> torch.nn.Module:
    """Same architecture, different random weights: loading must overwrite every tensor."""
    return reference_backbone(seed=seed)


def test_from_timm_without_pretrained_weights_embeds() -> None:
    model = ReIDModel.from_timm(ARCH, pretrained=False, input_size=(64, 32), device="cpu")
    assert model.to("cpu") is model
    assert model.embedding_dim == model.backbone.num_features
    assert model.device == torch.device("cpu") and model.dtype == torch.float32


def test_pretrained_download_failure_names_the_offline_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import huggingface_hub.constants

    # Fail fast and deterministically as an offline machine does, whatever the local cache holds.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(OSError, match="checkpoint_path") as error:
        ReIDModel.from_timm("mobilenetv2_100", pretrained=True, device="cpu")
    assert "mobilenetv2_imagenet" in str(error.value)
    with pytest.raises(ValueError, match="no model"):
        ReIDModel.from_timm("not_a_timm_model", pretrained=False)


def test_pt_checkpoint_with_same_keys_loads_by_name(tmp_path: Path) -> None:
    reference = reference_backbone()
    path = tmp_path / "weights.pt"
    torch.save(reference.state_dict(), path)
    model = ReIDModel.from_timm(
        ARCH, checkpoint_path=path, input_size=(64, 32), device="cpu", fold_batch_norm=False
    )
    assert_same_weights(model.backbone, reference)
    x = torch.randn(2, 3, 64, 32)
    with torch.inference_mode():
        torch.testing.assert_close(model.raw_features(x), reference(x))


def test_safetensors_checkpoint_loads(tmp_path: Path) -> None:
    reference = reference_backbone()
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    backbone = fresh_backbone()
    result = load_checkpoint(backbone, path)
    assert result.mode == "name"
    assert_same_weights(backbone, reference)


def test_wrapped_dataparallel_checkpoint_with_classifier_loads_into_feature_model(
    tmp_path: Path,
) -> None:
    trained = reference_backbone(num_classes=7)  # e.g. trained on 7 identities
    state = {f"module.{k}": v for k, v in trained.state_dict().items()}
    path = tmp_path / "trainer.pth"
    torch.save({"epoch": 12, "state_dict": state, "optimizer": {"lr": 0.1}}, path)
    backbone = fresh_backbone()
    result = load_checkpoint(backbone, path)
    assert result.mode == "name"
    assert result.dropped_keys == ["fc.weight", "fc.bias"]
    trunk = reference_backbone(num_classes=0)
    trunk.load_state_dict({k: v for k, v in trained.state_dict().items() if "fc." not in k})
    assert_same_weights(backbone, trunk)
    # A model that keeps its classifier loads it too.
    classifier_model = reference_backbone(num_classes=7, seed=2)
    assert load_checkpoint(classifier_model, path).dropped_keys == []
    assert_same_weights(classifier_model, trained)


def test_renamed_keys_map_by_position_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trained = reference_backbone(num_classes=5)
    renamed = {f"net.layer{i}.param": v for i, v in enumerate(trained.state_dict().values())}
    # A torchvision-style classifier at the end: dropped, since the ReID model has none.
    renamed = {k: v for k, v in list(renamed.items())[:-2]}
    renamed["classifier.1.weight"] = trained.fc.weight.detach().clone()
    renamed["classifier.1.bias"] = trained.fc.bias.detach().clone()
    path = tmp_path / "other_names.pt"
    torch.save({"model": renamed}, path)
    backbone = fresh_backbone()
    with caplog.at_level(logging.WARNING, logger="ray_deepsort.reid.weights"):
        result = load_checkpoint(backbone, path)
    assert result.mode == "position"
    assert result.dropped_keys == ["classifier.1.weight", "classifier.1.bias"]
    assert any("by position" in record.getMessage() for record in caplog.records)
    trunk = reference_backbone(num_classes=0)
    trunk.load_state_dict({k: v for k, v in trained.state_dict().items() if "fc." not in k})
    assert_same_weights(backbone, trunk)


def test_wrong_shape_is_a_value_error_naming_the_tensor(tmp_path: Path) -> None:
    state = reference_backbone().state_dict()
    key = next(k for k, v in state.items() if v.ndim == 4 and k != next(iter(state)))
    state[key] = torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 2)
    path = tmp_path / "bad_shape.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_checkpoint(fresh_backbone(), path)

    renamed = {f"p{i}": v for i, v in enumerate(state.values())}
    torch.save(renamed, path)
    with pytest.raises(ValueError, match=r"first differing tensor: tensor #\d+: model's") as error:
        load_checkpoint(fresh_backbone(), path)
    assert key in str(error.value)


def test_missing_tensor_is_a_value_error(tmp_path: Path) -> None:
    state = reference_backbone().state_dict()
    last_key = [k for k in state if not k.endswith("num_batches_tracked")][-1]
    del state[last_key]
    path = tmp_path / "truncated.pt"
    torch.save({f"x{i}": v for i, v in enumerate(state.values())}, path)
    with pytest.raises(ValueError, match="has no counterpart") as error:
        load_checkpoint(fresh_backbone(), path)
    assert last_key in str(error.value)


class _Exploit:
    """Unpickling this would create a file: proof of code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


def test_checkpoint_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    path = tmp_path / "malicious.pt"
    torch.save({"state_dict": reference_backbone().state_dict(), "extra": _Exploit(marker)}, path)
    with pytest.raises(ValueError, match="pickled Python objects"):
        read_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_without_tensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(ValueError, match="no tensors"):
        read_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.pt")


def test_unknown_weights_file_takes_timm_normalisation_and_keeps_overrides(tmp_path: Path) -> None:
    """`from_file` on torch weights it does not know: timm's mean/std for that network (0.5
    for tf_mobilenetv3_small_minimal_100, not ImageNet's), with the caller's spec overrides."""
    import timm

    net = timm.create_model("tf_mobilenetv3_small_minimal_100", pretrained=False, num_classes=0)
    path = tmp_path / "weights.pt"
    torch.save(net.state_dict(), path)
    model = ReIDModel.from_file(
        path,
        architecture="tf_mobilenetv3_small_minimal_100",
        device="cpu",
        input_size=(64, 32),
        crop="stretch",
    )
    assert model.spec.mean == (0.5, 0.5, 0.5) and model.spec.std == (0.5, 0.5, 0.5)
    assert model.input_size == (64, 32) and model.spec.crop == "stretch"
    explicit = ReIDModel.from_file(
        path,
        architecture="tf_mobilenetv3_small_minimal_100",
        device="cpu",
        input_size=(64, 32),
        mean=(0.4, 0.4, 0.4),
    )
    assert explicit.spec.mean == (0.4, 0.4, 0.4)


def test_from_timm_keeps_the_input_size_of_a_given_spec() -> None:
    from ray_deepsort.reid import ModelSpec

    model = ReIDModel.from_timm(
        "mobilenetv2_100", pretrained=False, device="cpu", spec=ModelSpec(input_size=(64, 32))
    )
    assert model.input_size == (64, 32)
