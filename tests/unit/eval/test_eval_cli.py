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
OMZ = Path(__file__).resolve().parents[3] / ".." / "shared" / "models" / "intel-omz"
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


# ------------------------------------------------------------------ never failing silently
SMALL = replace(EASY, num_objects=3, num_frames=20, width=320, height=240)


def small_sequence(root: Path, name: str = "SEQ", video: bool = False) -> Path:
    return SyntheticScene(SMALL).write_mot_sequence(root / name, video=video)


def run_cli(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    return cli.run(parse(argv), out=out), out.getvalue()


def replace_line(path: Path, number: int, line: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = line
    path.write_text("\n".join(lines) + "\n")


def seqinfo_without(key: str) -> Any:
    def edit(seq: Path) -> None:
        path = seq / "seqinfo.ini"
        path.write_text("".join(x for x in path.open() if not x.startswith(key)))

    return edit


def det_line(line: str, number: int = 1) -> Any:
    return lambda seq: replace_line(seq / "det" / "det.txt", number, line)


def gt_line(line: str, number: int = 1) -> Any:
    return lambda seq: replace_line(seq / "gt" / "gt.txt", number, line)


def gt_columns(count: int) -> Any:
    def edit(seq: Path) -> None:
        path = seq / "gt" / "gt.txt"
        path.write_text("".join(",".join(x.split(",")[:count]) + "\n" for x in path.open()))

    return edit


# (sequence name, edit of the files, extra flags, the error after "error: SEQ_DIR/")
BAD_INPUTS = {
    "seqinfo without seqLength": (
        "SEQ",
        seqinfo_without("seqLength"),
        [],
        "seqinfo.ini: [Sequence] has no seqLength",
    ),
    "seqinfo without [Sequence]": (
        "SEQ",
        seqinfo_without("[Sequence]"),
        [],
        "seqinfo.ini:1: no [Sequence] header before it",
    ),
    "det with 5 columns": (
        "SEQ",
        lambda seq: (seq / "det" / "det.txt").write_text("1,-1,10,20,30\n"),
        [],
        "det/det.txt:1: 5 values, expected at least 6 (frame,id,x,y,w,h,...)",
    ),
    "det without columns": (
        "SEQ",
        lambda seq: (seq / "det" / "det.txt").write_text("1\n"),
        [],
        "det/det.txt:1: 1 value, expected at least 6 (frame,id,x,y,w,h,...)",
    ),
    "det separated by spaces": (
        "SEQ",
        det_line("1 -1 10 20 30 40 0.9 -1 -1 -1"),
        [],
        "det/det.txt:1: values separated by spaces, tabs or semicolons; MOT files use commas",
    ),
    "det with a header": (
        "SEQ",
        lambda seq: (seq / "det" / "det.txt").write_text(
            "frame,id,x,y,w,h,conf\n" + (seq / "det" / "det.txt").read_text()
        ),
        [],
        "det/det.txt:1: 'frame' is not a number (a header line? MOT files have none)",
    ),
    "det frame after seqLength": (
        "SEQ",
        det_line("21,-1,10,20,30,40,0.9,-1,-1,-1", 3),
        [],
        "det/det.txt:3: frame 21 is outside 1..20 (seqLength in seqinfo.ini)",
    ),
    "missing --det file": (
        "SEQ",
        lambda seq: None,
        ["--det", "det_dpm"],
        "det/det_dpm.txt: no such file (det/ has det)",
    ),
    "gt frame 0": (
        "SEQ",
        gt_line("0,1,10,10,20,40,1,1,1"),
        [],
        "gt/gt.txt:1: frame 0 is outside 1..20 (seqLength in seqinfo.ini)",
    ),
    "gt unknown class": (
        "SEQ",
        gt_line("1,1,10,10,20,40,1,99,1"),
        [],
        "gt/gt.txt:1: class 99 is not a MOTChallenge class (1-13)",
    ),
    "gt duplicate id": (
        "SEQ",
        lambda seq: (seq / "gt" / "gt.txt").write_text(
            "1,1,10,10,20,40,1,1,1\n2,1,10,10,20,40,1,1,1\n1,1,50,10,20,40,1,1,1\n"
        ),
        [],
        "gt/gt.txt:3: id 1 appears twice in frame 1 (also on line 1)",
    ),
    "8-column MOT16 gt": (
        "MOT16-99",
        gt_columns(8),
        [],
        "gt/gt.txt:1: 8 columns, but MOT16 ground truth has 9 "
        "(frame,id,x,y,w,h,consider,class,visibility)",
    ),
    "6-column gt": (
        "SEQ",
        gt_columns(6),
        [],
        "gt/gt.txt:1: 6 columns: not MOTChallenge ground truth "
        "(MOT15 has 10 columns, MOT16/17/20 have 9)",
    ),
    "--benchmark against the name": (
        "MOT16-99",
        lambda seq: None,
        ["--benchmark", "MOT20"],
        ": benchmark MOT20 asked for, but the sequence is MOT16",
    ),
    "--benchmark against the columns": (
        "SEQ",
        lambda seq: None,
        ["--benchmark", "MOT15"],
        "gt/gt.txt:1: 9 columns, but MOT15 ground truth has 10 "
        "(frame,id,x,y,w,h,consider,wx,wy,wz)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_are_one_line_errors(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, edit, flags, message = BAD_INPUTS[case]
    seq = small_sequence(tmp_path, name)
    edit(seq)
    status, printed = run_cli([str(seq), "--model", "none", *flags])
    err = capsys.readouterr().err
    assert status == 2 and err == f"error: {seq}{'' if message[0] == ':' else '/'}{message}\n"
    assert "HOTA" not in printed  # refused before tracking


def test_duplicate_result_ids_are_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seq = small_sequence(tmp_path)
    results = tmp_path / "results" / "SEQ.txt"
    results.parent.mkdir()
    results.write_text("1,4,10,10,20,40,1,-1,-1,-1\n1,4,60,10,20,40,1,-1,-1,-1\n")
    assert run_cli([str(seq), "--results", str(results.parent)])[0] == 2
    assert capsys.readouterr().err == (
        f"error: {results}:2: id 4 appears twice in frame 1 (also on line 1)\n"
    )


def test_a_named_folder_must_be_a_sequence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seq = small_sequence(tmp_path)
    (seq / "seqinfo.ini").unlink()
    assert run_cli([str(seq), "--model", "none"])[0] == 2
    assert capsys.readouterr().err == (
        f"error: {seq}: not a MOTChallenge sequence (no seqinfo.ini) and no folder in it is one\n"
    )


def test_skipped_subfolders_are_listed(tmp_path: Path) -> None:
    small_sequence(tmp_path, "A")
    (tmp_path / "seqmaps").mkdir()
    status, printed = run_cli([str(tmp_path), "--model", "none"])
    assert status == 0
    assert printed.splitlines()[0] == f"skipped {tmp_path / 'seqmaps'}: no seqinfo.ini"


def test_empty_detections_and_ground_truth_warn(tmp_path: Path) -> None:
    seq = small_sequence(tmp_path)
    (seq / "det" / "det.txt").write_text("")
    status, printed = run_cli([str(seq), "--model", "none"])
    assert status == 0
    assert f"warning: SEQ: {seq / 'det' / 'det.txt'} has no detections: nothing to track" in printed
    assert "1 warning(s)" in printed
    seq = small_sequence(tmp_path / "again")
    (seq / "gt" / "gt.txt").write_text("")
    status, printed = run_cli([str(seq), "--model", "none", "--json", str(tmp_path / "m.json")])
    assert status == 0
    assert f"warning: SEQ: {seq / 'gt' / 'gt.txt'} is empty: no ground-truth boxes" in printed
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["metrics"]["SEQ"]["FN"] == 0 and report["metrics"]["SEQ"]["FP"] > 0
    assert report["warnings"] == [
        f"SEQ: {seq / 'gt' / 'gt.txt'} is empty: no ground-truth boxes, "
        "every tracker box counts as a false positive"
    ]


def test_each_sequence_reports_as_it_finishes(tmp_path: Path) -> None:
    small_sequence(tmp_path, "A")
    small_sequence(tmp_path, "B")
    status, printed = run_cli([str(tmp_path), "--model", "none"])
    assert status == 0
    lines = printed.splitlines()
    assert lines[0] == "reid: none (motion only)"
    assert lines[1] == (
        "[1/2] A: 20 frames, "
        f"{sum(1 for _ in (tmp_path / 'A' / 'det' / 'det.txt').open())} detections in "
        "det/det.txt, gt MOT17 (guessed from its 9 columns; --benchmark sets it)"
    )
    assert lines[2].startswith("[1/2] A: HOTA ") and "appearance no" in lines[2]
    assert lines[3].startswith("[2/2] B: ") and lines[4].startswith("[2/2] B: HOTA ")
    assert lines[6].startswith("Sequence") and lines[-1].startswith("COMBINED")
    status, printed = run_cli([str(tmp_path / "A"), "--model", "none", "--benchmark", "MOT20"])
    assert "gt MOT20 (--benchmark)" in printed


def test_det_flag_picks_another_detection_file(tmp_path: Path) -> None:
    seq = small_sequence(tmp_path)
    rows = np.loadtxt(seq / "det" / "det.txt", delimiter=",", ndmin=2)
    rows[:, 6] = rows[:, 6] * 5.0 - 1.0  # DPM-like scores
    np.savetxt(seq / "det" / "det_dpm.txt", rows, fmt="%d,%d,%.2f,%.2f,%.2f,%.2f,%.4f,%d,%d,%d")
    status, printed = run_cli([str(seq), "--model", "none", "--det", "det_dpm"])
    assert status == 0 and f"{len(rows)} detections in det/det_dpm.txt" in printed
    assert "are not confidences in 0..1" in printed and "--min-confidence" in printed
    status, printed = run_cli(
        [str(seq), "--model", "none", "--det", "det_dpm", "--min-confidence", "0"]
    )
    kept = int((rows[:, 6] >= 0).sum())
    assert status == 0 and "warning" not in printed
    assert f"{kept} of {len(rows)} detections in det/det_dpm.txt (confidence >= 0)" in printed


def test_appearance_column_counts_frames_without_an_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short or unreadable video leaves frames to motion only: the table must say so."""
    small_sequence(tmp_path, "FULL", video=True)
    short = small_sequence(tmp_path, "SHORT", video=True)
    SyntheticScene(replace(SMALL, num_frames=15)).write_video(short / "SHORT.mp4")
    broken = small_sequence(tmp_path, "BROKEN", video=True)
    (broken / "BROKEN.mp4").write_bytes(b"not a video")
    small_sequence(tmp_path, "NOVIDEO", video=False)
    monkeypatch.setattr(cli, "_load_reid", lambda *_: CountingEmbedder())
    status, printed = run_cli([str(tmp_path), "--json", str(tmp_path / "m.json")])
    assert status == 0
    appearance = {
        name: json.loads((tmp_path / "m.json").read_text())["metrics"][name]["appearance"]
        for name in ("FULL", "SHORT", "BROKEN", "NOVIDEO")
    }
    assert appearance == {
        "FULL": "yes",
        "SHORT": "partial (15 of 20 frames)",
        "BROKEN": "no",
        "NOVIDEO": "no",
    }
    table = printed[printed.index("Sequence") :].splitlines()
    assert table[0].endswith("appearance")
    assert any(
        line.startswith("SHORT") and line.endswith("partial (15 of 20 frames)") for line in table
    )
    assert (
        "warning: SHORT: no image for 5 of 20 frames from SHORT.mp4: "
        "those frames were tracked by motion only"
    ) in printed
    assert "warning: BROKEN: no image for 20 of 20 frames from BROKEN.mp4 (cannot " in printed
    assert "warning: NOVIDEO: no img1/ images and no NOVIDEO.mp4: tracked by motion only" in printed
    assert "3 warning(s)" in printed


def test_benchmark_choices_are_the_readers() -> None:
    from ray_deepsort.io.mot import BENCHMARKS

    assert ("auto", *BENCHMARKS) == cli.BENCHMARK_CHOICES
