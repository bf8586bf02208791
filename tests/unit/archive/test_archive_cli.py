"""`ray-deepsort reprocess` options, dry runs and errors (no Ray needed)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import pytest

from ray_deepsort.archive import cli
from ray_deepsort.archive.synthetic import SMALL_SCENE, write_synthetic_archive


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_flags_become_a_validated_config() -> None:
    config = cli.config_from_args(
        _parse(
            "/videos",
            "-o",
            "/out",
            "--tracker",
            "lost_track_buffer=60",
            "--tracker",
            "distance_metric=euclidean",
            "--frame-rate",
            "12.5",
            "--input-size",
            "128x64",
            "--detector",
            "pkg.mod:Detector",
            "--detector-kwargs",
            '{"score": 0.4}',
            "--worker-resource",
            "archive=1",
            "--no-fsync",
        )
    )
    assert config.tracker["lost_track_buffer"] == 60
    assert config.tracker["distance_metric"] == "euclidean"
    assert config.tracker["frame_rate"] == 12.5 and not config.frame_rate_from_video
    assert config.input_size == (128, 64)
    assert config.detector_kwargs == {"score": 0.4}
    assert config.worker_resources == {"archive": 1.0}
    assert not config.fsync and config.reid_enabled
    assert not cli.config_from_args(_parse("/v", "-o", "/o", "--model", "none")).reid_enabled


@pytest.mark.parametrize(
    "argv",
    [
        ["--tracker", "lost_track_buffer=-5"],
        ["--detector-kwargs", "[1, 2]"],
        ["--detector-kwargs", "{not json"],
        ["--chunk-frames", "0"],
    ],
)
def test_invalid_options_exit_2_before_any_work(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.run(_parse(str(tmp_path), "-o", str(tmp_path / "out"), *argv)) == 2
    assert "reprocess:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_dry_run_lists_the_plan_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_synthetic_archive(tmp_path / "in", 2, replace(SMALL_SCENE, num_frames=3), "csv")
    (tmp_path / "in" / "orphan.mp4").write_bytes(b"no detections for me")
    output = tmp_path / "out"
    status = cli.run(_parse(str(tmp_path / "in"), "-o", str(output), "--dry-run"))
    printed = capsys.readouterr().out
    assert status == cli.EXIT_PARTIAL  # one input is unusable
    assert "todo  cam0" in printed and "todo  cam1" in printed
    assert "fail  orphan" in printed and "detections file not found" in printed
    assert "3 inputs: 2 to do, 0 already done, 1 unusable" in printed
    assert not output.exists()


# ------------------------------------------------------------------- the model and its gate
OMZ = Path(__file__).resolve().parents[3] / ".." / "shared" / "models" / "intel-omz"
O288 = "person-reidentification-retail-0288"
XML_0288 = OMZ / O288 / "FP16" / f"{O288}.xml"


def test_model_flags_become_a_model_choice() -> None:
    from ray_deepsort.pipeline.embedder import ModelChoice

    default = cli.config_from_args(_parse("/v", "-o", "/o"))
    assert default.model_choice() == ModelChoice(max_batch_size=8)  # 8 crops per CPU pass
    config = cli.config_from_args(
        _parse(
            "/v",
            "-o",
            "/o",
            "--model",
            O288,
            "--model-path",
            "/models/0288",
            "--model-backend",
            "openvino",
            "--model-threads",
            "3",
            "--model-precision",
            "bf16",
            "--input-size",
            "256x128",
        )
    )
    assert config.model_choice(on_gpu=True) == ModelChoice(
        name=O288,
        path="/models/0288",
        backend="openvino",
        threads=3,
        precision="bf16",
        max_batch_size=256,
        input_size=(256, 128),
    )
    alone = cli.config_from_args(_parse("/v", "-o", "/o", "--model-path", "/m/x.onnx"))
    assert (alone.model, alone.model_path) == ("", "/m/x.onnx")  # the file says what it is
    with pytest.raises(SystemExit):
        _parse("/v", "-o", "/o", "--checkpoint", "w.pt")


@pytest.mark.parametrize("argv", [["--model-threads", "-1"], ["--model", "", "--model-path", ""]])
def test_invalid_model_options_exit_2(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.run(_parse(str(tmp_path), "-o", str(tmp_path / "out"), *argv)) == 2
    assert "reprocess: model" in capsys.readouterr().err


def test_config_hash_covers_the_model_choice() -> None:
    base = cli.config_from_args(_parse("/v", "-o", "/o"))
    changes = [
        {"model": "resnet50"},
        {"model": "", "model_path": "/m/x.onnx"},
        {"model_backend": "openvino"},
        {"model_precision": "bf16"},
        {"input_size": (128, 64)},
        {"pretrained": False},
        {"tracker": {**base.tracker, "appearance_threshold": 0.5}},
    ]
    hashes = {replace(base, **change).config_hash() for change in changes}
    assert len(hashes | {base.config_hash()}) == len(changes) + 1
    # How fast, not what: same hash.
    for change in ({"model_threads": 4}, {"embedders": 2}, {"forward_batch": 4}):
        assert replace(base, **change).config_hash() == base.config_hash()
    motion = replace(base, model="none")
    assert replace(motion, model_backend="openvino").config_hash() == motion.config_hash()


@pytest.mark.skipif(not XML_0288.is_file(), reason="needs ../shared/models/intel-omz")
def test_archive_resolves_the_gate_like_the_stream_job() -> None:
    from ray_deepsort.core import is_default
    from ray_deepsort.reid.known_models import KNOWN_MODELS

    gate_0288 = KNOWN_MODELS[O288].spec.appearance_threshold
    omz = cli.config_from_args(_parse("/v", "-o", "/o", "--model-path", str(XML_0288)))
    assert is_default(omz.tracker["appearance_threshold"])
    params, gate = omz.tracker_params()
    assert params["appearance_threshold"] == gate_0288 and gate.source == "model"
    assert omz.worker_settings().tracker_params["appearance_threshold"] == gate_0288
    explicit = cli.config_from_args(
        _parse(
            "/v", "-o", "/o", "--model-path", str(XML_0288), "--tracker", "appearance_threshold=0.7"
        )
    )
    assert explicit.worker_settings().tracker_params["appearance_threshold"] == 0.7
    assert explicit.tracker_params()[1].source == "explicit"
    assert explicit.config_hash() != omz.config_hash()
    from ray_deepsort.reid.known_models import KNOWN_MODELS

    mobilenet = cli.config_from_args(_parse("/v", "-o", "/o"))
    gate = KNOWN_MODELS["mobilenetv2-imagenet"].spec.appearance_threshold
    assert mobilenet.worker_settings().tracker_params["appearance_threshold"] == gate
    assert mobilenet.tracker_params()[1].source == "model"
    timm = cli.config_from_args(_parse("/v", "-o", "/o", "--model", "resnet50"))
    assert timm.worker_settings().tracker_params["appearance_threshold"] == 0.7
    assert timm.tracker_params()[1].source == "default"
    # A file that is another known model than --model names is refused before any work.
    with pytest.raises(ValueError, match="set the name to"):
        cli.config_from_args(
            _parse(
                "/v", "-o", "/o", "--model", "mobilenetv2-imagenet", "--model-path", str(XML_0288)
            )
        )
