"""The sequence runner and `ray-deepsort eval` on small synthetic MOTChallenge sequences."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ray_deepsort.core
from ray_deepsort.eval import cli
from ray_deepsort.eval.runner import track_sequence
from ray_deepsort.io.mot import MotSequence, read_results
from ray_deepsort.synthetic import SceneConfig, SyntheticScene

# Few, well separated people, no occluders: a motion-only tracker should get most of it right.
EASY = SceneConfig(
    seed=0,
    num_objects=5,
    num_frames=60,
    width=640,
    height=360,
    fps=25.0,
    num_occluders=0,
    num_low_walls=0,
    miss_rate=0.02,
    false_positives_per_frame=0.1,
)


@pytest.fixture(scope="module")
def easy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sequences")
    SyntheticScene(EASY).write_mot_sequence(root / "EASY-A", video=True)
    SyntheticScene(replace(EASY, seed=1)).write_mot_sequence(root / "EASY-B", video=False)
    return root


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_runner_uses_seqinfo_frame_rate(easy_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[dict[str, Any]] = []

    class RecordingTracker(ray_deepsort.core.DeepSORTTracker):
        def __init__(self, **kwargs: Any) -> None:
            built.append(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(ray_deepsort.core, "DeepSORTTracker", RecordingTracker)
    run = track_sequence(easy_root / "EASY-B", tracker_kwargs={"lost_track_buffer": 12})
    assert built[0]["frame_rate"] == 25.0 and built[0]["lost_track_buffer"] == 12
    assert run.num_frames == 60 and not run.used_frames and run.ms_per_frame > 0
    assert set(run.results) <= set(range(1, 61)) and len(run.results) > 40
    assert all((d.tracker_id >= 0).all() for d in run.results.values())


class CountingEmbedder:
    """Stands in for a ReID model: records the frames it sees, embeds by box position."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def embed(self, frame: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        self.shapes.append(frame.shape)
        features = np.hstack([xyxy, np.ones((len(xyxy), 1))]).astype(np.float32)
        return features / np.linalg.norm(features, axis=1, keepdims=True)


def test_runner_feeds_video_frames_to_the_reid_model(easy_root: Path) -> None:
    embedder = CountingEmbedder()
    run = track_sequence(MotSequence(easy_root / "EASY-A"), reid_model=embedder)
    assert run.used_frames
    assert len(embedder.shapes) >= 55  # every frame with detections
    assert set(embedder.shapes) == {(EASY.height, EASY.width, 3)}
    # Without frames the model is never called: motion only.
    embedder = CountingEmbedder()
    assert not track_sequence(easy_root / "EASY-B", reid_model=embedder).used_frames
    assert embedder.shapes == []


def test_eval_cli_tracks_writes_and_scores(easy_root: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    args = parse(
        [
            str(easy_root),
            "--model",
            "none",
            "--output",
            str(tmp_path / "results"),
            "--json",
            str(tmp_path / "metrics.json"),
            "--lost-track-buffer",
            "20",
        ]
    )
    assert cli.run(args, out=out) == 0
    table = out.getvalue()
    for token in ("EASY-A", "EASY-B", "COMBINED", "HOTA", "IDF1", "MOTA", "IDSW", "ms/frame"):
        assert token in table
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["tracker"] == {"lost_track_buffer": 20}
    for name in ("EASY-A", "EASY-B", "COMBINED"):
        metrics = report["metrics"][name]
        assert metrics["IDF1"] > 0.7 and metrics["MOTA"] > 0.6 and metrics["HOTA"] > 0.5, metrics
    assert report["metrics"]["EASY-A"]["reid"] == "none"
    assert read_results(tmp_path / "results" / "EASY-A.txt")

    # Re-evaluating the written files gives the same numbers.
    out = io.StringIO()
    args = parse(
        [
            str(easy_root),
            "--results",
            str(tmp_path / "results"),
            "--json",
            str(tmp_path / "again.json"),
        ]
    )
    assert cli.run(args, out=out) == 0
    again = json.loads((tmp_path / "again.json").read_text())["metrics"]
    for name in ("EASY-A", "EASY-B", "COMBINED"):
        for key in ("HOTA", "IDF1", "MOTA", "IDSW"):
            assert again[name][key] == pytest.approx(report["metrics"][name][key], abs=1e-6)


def test_eval_cli_reports_missing_inputs(easy_root: Path, tmp_path: Path) -> None:
    assert cli.run(parse([str(tmp_path / "nowhere"), "--model", "none"]), out=io.StringIO()) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.run(parse([str(empty), "--model", "none"]), out=io.StringIO()) == 2
    args = parse([str(easy_root / "EASY-A"), "--results", str(empty)])
    assert cli.run(args, out=io.StringIO()) == 2


def test_cli_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, argparse, ray_deepsort.eval.cli as c\n"
        "c.add_arguments(argparse.ArgumentParser())\n"
        "heavy = ('torch', 'ray', 'trackers', 'timm', 'kafka')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert output.stdout.strip() == "[]"


# ------------------------------------------------------------------ --model: the model vocabulary
OMZ = Path(__file__).resolve().parents[2] / ".." / "shared" / "models" / "intel-omz"
O288 = "person-reidentification-retail-0288"
XML_0288 = OMZ / O288 / "FP16" / f"{O288}.xml"


def test_reid_flags_become_a_model_choice(easy_root: Path) -> None:
    from ray_deepsort.pipeline.embedder import ModelChoice

    with_frames = [MotSequence(easy_root / "EASY-A")]
    without = [MotSequence(easy_root / "EASY-B")]
    choice = cli.reid_choice
    assert choice(parse(["x"]), with_frames) == ModelChoice()
    assert choice(parse(["x"]), without) is None  # auto: nothing to embed
    assert choice(parse(["x", "--model", "none"]), with_frames) is None
    assert choice(parse(["x", "--model", O288]), without) == ModelChoice(name=O288)
    assert choice(parse(["x", "--model", "resnet50", "--device", "cpu"]), with_frames) == (
        ModelChoice(name="resnet50", device="cpu")
    )
    assert choice(
        parse(["x", "--model-path", "/m/x.xml", "--model-backend", "openvino"]), without
    ) == ModelChoice(name="", path="/m/x.xml", backend="openvino")
    assert choice(parse(["x", "--model", O288, "--model-path", "/m/0288"]), with_frames) == (
        ModelChoice(name=O288, path="/m/0288")
    )
    assert choice(parse(["x", "--model-path", "/m/x.onnx"]), with_frames) == ModelChoice(
        name="", path="/m/x.onnx"
    )
    with pytest.raises(SystemExit):  # the old vocabulary is gone
        parse(["x", "--reid", "none"])


def test_eval_cli_reports_a_model_that_does_not_load(
    easy_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse([str(easy_root), "--model-path", str(tmp_path / "missing.xml")])
    assert cli.run(args, out=io.StringIO()) == 2
    assert "missing.xml" in capsys.readouterr().err


@pytest.mark.skipif(not XML_0288.is_file(), reason="needs ../shared/models/intel-omz")
def test_eval_cli_names_the_model_and_its_gate(easy_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    from ray_deepsort.reid.known_models import KNOWN_MODELS

    gate = KNOWN_MODELS[O288].spec.appearance_threshold
    out = io.StringIO()
    args = parse(
        [
            str(easy_root / "EASY-A"),
            "--model-path",
            str(XML_0288),
            "--device",
            "cpu",
            "--json",
            str(tmp_path / "metrics.json"),
        ]
    )
    assert cli.run(args, out=out) == 0
    assert f"reid: {O288} (openvino), appearance gate {gate:.2f}" in out.getvalue()
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["metrics"]["EASY-A"]["reid"] == O288
    weight = KNOWN_MODELS[O288].spec.appearance_weight
    assert report["reid"] == {
        "model": O288,
        "backend": "openvino",
        "appearance_threshold": gate,
        "appearance_weight": weight,
    }
    # An explicit gate wins over the model's.
    out = io.StringIO()
    args = parse(
        [str(easy_root / "EASY-A"), "--model-path", str(XML_0288), "--appearance-threshold", "0.5"]
    )
    assert cli.run(args, out=out) == 0
    assert f"reid: {O288} (openvino), appearance gate 0.50" in out.getvalue()
