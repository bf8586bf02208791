"""ReID backends: OpenVINO and ONNX Runtime against torch, broken exports, missing extras."""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ray_deepsort.reid import MissingExtraError, ModelLoadError, ModelSpec, ReIDModel
from ray_deepsort.reid.crops import stretch_boxes

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

SMALL = (128, 64)


def scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    frame[100:200, 40:90] = (30, 140, 220)  # a flat "person" (constant crop regions)
    boxes = np.array(
        [[40, 100, 90, 200], [150, 20, 200, 140], [-20, 180, 30, 260], [5, 5, 5, 5]], np.float64
    )
    return frame, boxes


def cosine_gap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(1.0 - np.sum(a * b, axis=1)))


@pytest.fixture(scope="module")
def torch_model() -> ReIDModel:
    return ReIDModel.mobilenetv2_imagenet(device="cpu", input_size=SMALL)


def test_openvino_conversion_matches_torch_within_1e4_cosine(torch_model: ReIDModel) -> None:
    converted = ReIDModel.mobilenetv2_imagenet(
        device="cpu", input_size=SMALL, backend="openvino", threads=1, precision="f32"
    )
    assert converted.backend.name == "openvino" and converted.spec == torch_model.spec
    frame, boxes = scene()
    reference, ours = torch_model.embed(frame, boxes), converted.embed(frame, boxes)
    assert ours.shape == reference.shape == (4, 1280)
    assert cosine_gap(reference, ours) < 1e-4


def export_onnx(module: torch.nn.Module, size: tuple[int, int], dynamic: bool) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            torch.zeros(1, 3, *size),
            buffer,
            dynamo=False,
            input_names=["data"],
            output_names=["embedding"],
            dynamic_axes={"data": {0: "n"}} if dynamic else None,
        )
    return buffer.getvalue()


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic-batch", "batch-1-export"])
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_onnx_export_matches_torch(
    torch_model: ReIDModel, tmp_path: Path, backend: str, dynamic: bool
) -> None:
    path = tmp_path / "mobilenet.onnx"
    path.write_bytes(export_onnx(torch_model.backbone.float(), SMALL, dynamic))
    spec = torch_model.spec
    model = ReIDModel.from_file(
        path,
        backend=backend,
        device="cpu",
        threads=1,
        precision="f32",  # OpenVINO's own choice may be bf16: not comparable at 1e-4
        max_batch_size=3,  # passes of 3 and 1 crops
        input_color_order=spec.input_color_order,
        mean=spec.mean,
        std=spec.std,
        crop=spec.crop,
    )
    assert model.backend.name == backend and model.input_size == SMALL  # read from the graph
    frame, boxes = scene()
    assert cosine_gap(torch_model.embed(frame, boxes), model.embed(frame, boxes)) < 1e-4


def test_unknown_export_without_a_spec_names_the_fields(tmp_path: Path) -> None:
    path = tmp_path / "net.onnx"
    path.write_bytes(export_onnx(torch.nn.Sequential(torch.nn.Flatten()), (8, 4), True))
    with pytest.raises(ValueError, match=r"input_color_order=.*mean=.*std=.*crop="):
        ReIDModel.from_file(path, device="cpu")
    with pytest.raises(ValueError, match="crop="):
        ReIDModel.from_file(
            path, device="cpu", input_color_order="rgb", mean=(0,) * 3, std=(1,) * 3
        )


def nan_graph() -> bytes:
    """A graph whose output is sqrt(-1 - |x|): NaN for every input, and no MVN to repair."""
    helper = onnx.helper
    nodes = [
        helper.make_node("GlobalAveragePool", ["data"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Abs", ["flat"], ["magnitude"]),
        helper.make_node("Neg", ["magnitude"], ["negative"]),
        helper.make_node("Sub", ["negative", "one"], ["below_zero"]),
        helper.make_node("Sqrt", ["below_zero"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "nan",
        [helper.make_tensor_value_info("data", onnx.TensorProto.FLOAT, ["n", 3, 8, 4])],
        [helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, ["n", 3])],
        [onnx.numpy_helper.from_array(np.ones((), np.float32), "one")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_non_finite_export_is_refused(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "nan.onnx"
    path.write_bytes(nan_graph())
    spec = {"input_color_order": "rgb", "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop": "stretch"}
    with pytest.raises(ModelLoadError, match="NaN or inf"):
        ReIDModel.from_file(path, backend=backend, device="cpu", **spec)


def mvn_graph(epsilon_free: bool = True) -> bytes:
    """Input -> MeanVarianceNormalization over H, W -> pooled: NaN on a flat crop in ORT."""
    helper = onnx.helper
    nodes = [
        helper.make_node("MeanVarianceNormalization", ["data"], ["normalised"], axes=[2, 3]),
        helper.make_node("GlobalMaxPool", ["normalised"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mvn",
        [helper.make_tensor_value_info("data", onnx.TensorProto.FLOAT, [1, 3, 8, 4])],
        [helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, [1, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)]).SerializeToString()


def test_mean_variance_normalization_without_epsilon_is_repaired(tmp_path: Path) -> None:
    import onnxruntime

    path = tmp_path / "mvn.onnx"
    path.write_bytes(mvn_graph())
    flat = np.full((1, 3, 8, 4), 7.0, np.float32)
    raw = onnxruntime.InferenceSession(path.read_bytes(), providers=["CPUExecutionProvider"])
    assert np.isnan(raw.run(None, {"data": flat})[0]).all()  # the broken export, as shipped
    spec = {"input_color_order": "rgb", "mean": (0.0,) * 3, "std": (1.0,) * 3, "crop": "stretch"}
    model = ReIDModel.from_file(path, backend="onnxruntime", device="cpu", **spec)
    frame, boxes = scene()
    embeddings = model.embed(frame, boxes)
    assert np.isfinite(embeddings).all()
    # The repaired graph is MVN with eps inside the square root: check one crop by hand.
    crops = torch.rand((1, 3, 8, 4)) * 255
    x = crops.numpy().astype(np.float64)
    centred = x - x.mean(axis=(2, 3), keepdims=True)
    expected = (centred / np.sqrt((centred**2).mean(axis=(2, 3), keepdims=True) + 1e-5)).max(
        axis=(2, 3)
    )
    np.testing.assert_allclose(model.raw_features(crops).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_missing_extras_name_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(MissingExtraError, match=r"ray-deepsort\[openvino\]"):
        ReIDModel.mobilenetv2_imagenet(device="cpu", input_size=SMALL, backend="openvino")
    path = tmp_path / "net.onnx"
    path.write_bytes(mvn_graph())
    spec = {"input_color_order": "rgb", "mean": (0.0,) * 3, "std": (1.0,) * 3, "crop": "stretch"}
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtraError, match=r"ray-deepsort\[onnx\]"):
        ReIDModel.from_file(path, backend="onnxruntime", device="cpu", **spec)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(MissingExtraError, match=r"ray-deepsort\[onnx\].*ray-deepsort\[openvino\]"):
        ReIDModel.from_file(path, device="cpu", **spec)


def test_stretch_crop_policy_resizes_the_box_itself() -> None:
    boxes = np.array([[10, 20, 30, 100], [5, 5, 5, 5]], np.float64)
    np.testing.assert_allclose(stretch_boxes(boxes), [[10, 20, 30, 100], [4.5, 4.5, 5.5, 5.5]])
    # A model with crop="stretch" sees a wide box squashed: a left/right split frame gives a
    # crop whose left half is the left colour, whatever the box's aspect.
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[:, 100:] = 255
    identity = ReIDModel(
        torch.nn.Flatten(),
        device="cpu",
        spec=ModelSpec(input_size=(4, 2), crop="stretch", mean=(0,) * 3, std=(1 / 255,) * 3),
    )
    crop = identity.raw_features(identity.preprocess(torch.zeros(0, 3, 4, 2)))  # shape check only
    assert crop.shape == (0, 24)
    rows = identity.embed(frame, np.array([[0, 0, 200, 100]], np.float64))
    pixels = rows.reshape(3, 4, 2)
    assert (pixels[:, :, 0] == 0).all() and (pixels[:, :, 1] > 0).all()


def test_spec_validates_and_is_shown() -> None:
    with pytest.raises(ValueError, match="crop"):
        ModelSpec(crop="centre")
    with pytest.raises(ValueError, match="input_color_order"):
        ModelSpec(input_color_order="hsv")
    with pytest.raises(ValueError, match="unknown model spec fields"):
        ModelSpec().replace(colour="rgb")
    model = ReIDModel(torch.nn.Flatten(), device="cpu", input_size=(8, 4))
    assert "crop='pad'" in repr(model) and "input_size=(8, 4)" in repr(model)
