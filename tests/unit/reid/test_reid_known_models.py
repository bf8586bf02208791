"""Known models: recognised by checksum, refused when corrupt, downloaded and cached safely.

Reads Intel's Open Model Zoo files from ../shared/models/intel-omz (never copied into the
project); downloads are tested against a local HTTP server serving that folder.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ray_deepsort.reid import ChecksumMismatchError, ModelLoadError, ReIDModel
from ray_deepsort.reid.download import CACHE_ENV
from ray_deepsort.reid.known_models import KNOWN_MODELS

pytest.importorskip("openvino")

OMZ = Path(__file__).resolve().parents[3] / ".." / "shared" / "models" / "intel-omz"
O288 = "person-reidentification-retail-0288"
O267 = "person-reidentification-retail-0267"
XML_0288 = OMZ / O288 / "FP16" / f"{O288}.xml"

pytestmark = pytest.mark.skipif(not XML_0288.is_file(), reason="needs ../shared/models/intel-omz")


def test_table_checksums_are_the_shared_files() -> None:
    for model in KNOWN_MODELS.values():
        if not model.name.startswith("person-"):
            continue
        for files in model.variants.values():
            for known in files:
                path = OMZ / model.name / known.path
                assert hashlib.sha256(path.read_bytes()).hexdigest() == known.sha256, path


def frame_and_boxes() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    return frame, np.array([[10, 10, 60, 140], [200, 50, 260, 290]], np.float64)


@pytest.fixture(scope="module")
def omz_0288() -> ReIDModel:
    return ReIDModel.from_file(XML_0288, device="cpu", threads=1)


def test_known_ir_gets_its_spec_and_gate(omz_0288: ReIDModel) -> None:
    spec = omz_0288.spec
    assert spec.name == O288 and spec.input_color_order == "bgr" and spec.crop == "stretch"
    assert spec.mean == (0.0, 0.0, 0.0) and spec.std == pytest.approx((1 / 255,) * 3)
    assert spec.appearance_threshold == KNOWN_MODELS[O288].spec.appearance_threshold
    frame, boxes = frame_and_boxes()
    embeddings = omz_0288.embed(frame, boxes)
    assert embeddings.shape == (2, 256)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    # Overrides win over the table.
    custom = ReIDModel.from_file(XML_0288, device="cpu", threads=1, appearance_threshold=0.5)
    assert custom.spec.appearance_threshold == 0.5


def test_fp16_and_fp32_irs_agree(omz_0288: ReIDModel) -> None:
    fp32 = ReIDModel.from_file(OMZ / O288 / "FP32" / f"{O288}.xml", device="cpu", threads=1)
    frame, boxes = frame_and_boxes()
    similarity = np.sum(fp32.embed(frame, boxes) * omz_0288.embed(frame, boxes), axis=1)
    assert similarity.min() > 0.999


def test_bgr_frames_and_rgb_frames_give_the_same_embedding(omz_0288: ReIDModel) -> None:
    rgb = ReIDModel.from_file(XML_0288, device="cpu", threads=1, color_order="rgb")
    frame, boxes = frame_and_boxes()
    np.testing.assert_allclose(
        rgb.embed(np.ascontiguousarray(frame[:, :, ::-1]), boxes),
        omz_0288.embed(frame, boxes),
        atol=1e-5,
    )


def copy_ir(tmp_path: Path, truncate_bin: bool, rename_xml: bool) -> Path:
    xml = tmp_path / f"{O288}.xml"
    text = XML_0288.read_text()
    xml.write_text(text + ("\n<!-- another build -->\n" if rename_xml else ""))
    weights = (XML_0288.with_suffix(".bin")).read_bytes()
    xml.with_suffix(".bin").write_bytes(weights[: len(weights) // 2] if truncate_bin else weights)
    return xml


def test_truncated_weights_of_a_known_ir_fail_the_checksum(tmp_path: Path) -> None:
    xml = copy_ir(tmp_path, truncate_bin=True, rename_xml=False)
    with pytest.raises(ChecksumMismatchError, match="truncated or corrupt"):
        ReIDModel.from_file(xml, device="cpu")


def test_truncated_weights_of_an_unknown_ir_are_a_clear_error(tmp_path: Path) -> None:
    xml = copy_ir(tmp_path, truncate_bin=True, rename_xml=True)
    spec = {"input_color_order": "bgr", "mean": (0,) * 3, "std": (1 / 255,) * 3, "crop": "stretch"}
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        ReIDModel.from_file(xml, device="cpu", **spec)


def test_wrong_input_shape_is_refused() -> None:
    with pytest.raises(ModelLoadError, match=r"takes 256x128.*input_size=\(256, 128\)"):
        ReIDModel.from_file(XML_0288, device="cpu", input_size=(128, 64))


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    xml = tmp_path / "alone.xml"
    shutil.copy(XML_0288, xml)
    with pytest.raises(FileNotFoundError, match=r"alone\.bin"):
        ReIDModel.from_file(xml, device="cpu")


def test_shipped_0267_onnx_is_repaired_and_matches_openvino() -> None:
    pytest.importorskip("onnxruntime")
    path = OMZ / O267 / f"{O267}.onnx"
    in_ort = ReIDModel.from_file(path, device="cpu", threads=1)
    in_openvino = ReIDModel.from_file(path, backend="openvino", device="cpu", threads=1)
    assert in_ort.backend.name == "onnxruntime" and in_openvino.backend.name == "openvino"
    frame, boxes = frame_and_boxes()
    a, b = in_ort.embed(frame, boxes), in_openvino.embed(frame, boxes)
    assert np.isfinite(a).all() and np.sum(a * b, axis=1).min() > 0.999


@pytest.fixture()
def model_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server over a copy of the OMZ folder (tests may tamper with the copy)."""
    root = tmp_path / "served"
    shutil.copytree(OMZ / O288, root / O288)
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(root)
    )  # logs go to stderr, captured by pytest
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_from_pretrained_downloads_checks_and_caches(
    model_server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root = model_server
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    model = ReIDModel.from_pretrained(O288, base_url=url, device="cpu", threads=1)
    cached = cache / "models" / O288 / "FP16"
    assert sorted(p.name for p in cached.iterdir()) == [f"{O288}.bin", f"{O288}.xml"]
    frame, boxes = frame_and_boxes()
    reference = ReIDModel.from_file(XML_0288, device="cpu", threads=1)
    np.testing.assert_allclose(model.embed(frame, boxes), reference.embed(frame, boxes), atol=1e-6)
    # A second call uses the cache: the server may be gone.
    shutil.rmtree(root)
    again = ReIDModel.from_pretrained(O288, base_url=url, device="cpu", threads=1)
    assert again.spec == model.spec


def test_download_with_a_wrong_checksum_is_refused_and_not_cached(
    model_server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root = model_server
    served_bin = root / O288 / "FP16" / f"{O288}.bin"
    served_bin.write_bytes(served_bin.read_bytes()[:-16])
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    with pytest.raises(ChecksumMismatchError, match="truncated, corrupt or another model"):
        ReIDModel.from_pretrained(O288, base_url=url, device="cpu")
    leftovers = [p.name for p in (cache / "models" / O288 / "FP16").iterdir()]
    assert leftovers == [f"{O288}.xml"]  # the good file stays, nothing of the bad one


def test_from_pretrained_with_a_local_path_never_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_DEEPSORT_MODEL_URL", "http://127.0.0.1:9/unreachable")
    model = ReIDModel.from_pretrained(O288, path=OMZ / O288, variant="FP32", device="cpu")
    assert model.spec.name == O288
    with pytest.raises(ValueError, match="known models"):
        ReIDModel.from_pretrained("osnet-imaginary")
    with pytest.raises(ValueError, match="variants"):
        ReIDModel.from_pretrained(O288, path=OMZ / O288, variant="INT4")
