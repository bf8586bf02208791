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
        ["--tracker", "no_such_parameter=1"],
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
