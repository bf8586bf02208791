"""One vocabulary for tracker parameters: the signature is the table every surface is built from.

Every `DeepSORTTracker` keyword can be set from the stream TOML (`--set tracker.NAME=...`),
`reprocess --tracker NAME=VALUE`, `demo --tracker NAME=VALUE` and `eval --NAME-WITH-DASHES`,
under the same name; an unknown name is an error that lists the valid ones.
"""

from __future__ import annotations

import argparse
import inspect
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ray_deepsort import demo
from ray_deepsort.archive import cli as archive_cli
from ray_deepsort.core import DeepSORTTracker
from ray_deepsort.core.parameters import (
    NOT_PARAMETERS,
    TrackerConfig,
    parse_assignment,
    tracker_kwargs,
    tracker_parameters,
)
from ray_deepsort.eval import cli as eval_cli
from ray_deepsort.stream.config import ConfigError, load_config
from ray_deepsort.synthetic import SceneConfig, SyntheticScene

ROOT = Path(__file__).resolve().parents[3]
SIGNATURE = inspect.signature(DeepSORTTracker.__init__).parameters
NAMES = [name for name in SIGNATURE if name not in NOT_PARAMETERS]

# A value other than the default for every parameter, as a command-line string.
OTHER_VALUE = {
    "lost_track_buffer": ("45", 45),
    "frame_rate": ("12.5", 12.5),
    "track_activation_threshold": ("0.4", 0.4),
    "minimum_consecutive_frames": ("2", 2),
    "minimum_iou_threshold": ("0.45", 0.45),
    "appearance_threshold": ("0.3", 0.3),
    "appearance_weight": ("0.8", 0.8),
    "distance_metric": ("euclidean", "euclidean"),
    "gallery_budget": ("7", 7),
    "gallery_dtype": ("float16", "float16"),
    "max_tracks": ("64", 64),
    "gate_position_only": ("false", False),
    "gating_threshold": ("9.0", 9.0),
    "class_agnostic": ("true", True),
    "reid_window_seconds": ("0", 0.0),
    "max_lost_tracks": ("5", 5),
    "reid_max_speed": ("2.5", 2.5),
}


def test_the_table_is_the_signature() -> None:
    table = tracker_parameters()
    assert list(table) == NAMES
    assert set(OTHER_VALUE) == set(NAMES)  # a new parameter needs a case below
    for name, parameter in table.items():
        assert parameter.default == SIGNATURE[name].default, name
        assert parameter.help, name
        assert parameter.coerce(OTHER_VALUE[name][0]) != parameter.default, name
    assert TrackerConfig().params() == {name: SIGNATURE[name].default for name in NAMES}
    DeepSORTTracker(**TrackerConfig().params())


def _documented_names(text: str, prefix: str = "") -> list[str]:
    return re.findall(rf"^\| `{re.escape(prefix)}(\w+)` \|", text, flags=re.MULTILINE)


def test_every_document_lists_every_parameter() -> None:
    readme = _documented_names((ROOT / "README.md").read_text())
    assert [n for n in readme if n in SIGNATURE] == list(SIGNATURE)[1:], "README parameter table"
    streaming = _documented_names((ROOT / "docs" / "streaming.md").read_text(), "tracker.")
    assert streaming == NAMES, "docs/streaming.md [tracker] table"
    toml = (ROOT / "jobs" / "stream.toml").read_text().split("[tracker]")[1].split("\n[")[0]
    assert re.findall(r"^#? ?(\w+) = ", toml, flags=re.MULTILINE) == NAMES, "jobs/stream.toml"


@pytest.mark.parametrize("name", NAMES)
def test_every_surface_sets_every_parameter(name: str) -> None:
    text, value = OTHER_VALUE[name]
    quoted = f'"{text}"' if isinstance(value, str) else text
    stream = load_config(None, [f"tracker.{name}={quoted}"]).tracker.params()
    assert stream[name] == value
    assert load_config(None, [f"tracker.{name}={text}"]).tracker.params()[name] == value

    args = _parse(
        archive_cli.add_arguments, ["in.mp4", "--output", "o", "--tracker", f"{name}={text}"]
    )
    assert archive_cli.config_from_args(args).tracker[name] == value

    args = _parse(demo.add_arguments, ["--tracker", f"{name}={text}"])
    assert dict(args.tracker_params) == {name: value}

    flag = "--" + name.replace("_", "-")
    args = _parse(eval_cli.add_arguments, ["seq", flag, text])
    assert eval_cli.tracker_flags(args) == {name: value}


def _parse(add_arguments: Any, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    return parser.parse_args(argv)


def test_unknown_or_malformed_parameters_are_errors_that_list_the_valid_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(ConfigError, match=r"unknown key tracker\.max_age; known: .*lost_track"):
        load_config(None, ["tracker.max_age=30"])
    with pytest.raises(ConfigError, match=r"tracker\.max_tracks must be an integer"):
        load_config(None, ["tracker.max_tracks=1.5"])
    with pytest.raises(ConfigError, match=r"tracker\.distance_metric must be 'cosine' or"):
        load_config(None, ['tracker.distance_metric="manhattan"'])
    with pytest.raises(ValueError, match=r"unknown tracker parameter 'max_age'; valid: lost_track"):
        parse_assignment("max_age=30")
    with pytest.raises(ValueError, match="gate_position_only must be true or false"):
        parse_assignment("gate_position_only=maybe")
    with pytest.raises(ValueError, match="expected NAME=VALUE"):
        parse_assignment("max_tracks")
    with pytest.raises(ValueError, match="unknown tracker parameter 'nope'"):
        tracker_kwargs({"nope": 1})
    for add_arguments, argv in (
        (archive_cli.add_arguments, ["in.mp4", "--output", "o", "--tracker", "max_age=3"]),
        (demo.add_arguments, ["--tracker", "max_age=3"]),
    ):
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert "unknown tracker parameter 'max_age'; valid: lost_track_buffer" in (
            capsys.readouterr().err
        )
    parser = argparse.ArgumentParser()
    eval_cli.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["seq", "--max-tracks", "many"])
    assert "tracker parameter max_tracks must be an integer: 'many'" in capsys.readouterr().err


def test_an_optional_parameter_can_be_unset_again() -> None:
    assert load_config(None, ["tracker.gating_threshold=none"]).tracker.gating_threshold is None
    assert parse_assignment("gating_threshold=default") == ("gating_threshold", None)
    assert load_config(None, []).tracker.gating_threshold is None
    with pytest.raises(ConfigError, match="gating_threshold"):
        load_config(None, ["tracker.gating_threshold=0"])  # the tracker's own range check


# ------------------------------------------------------- gating_threshold=9.0 changes the output
SCENE = SceneConfig(seed=0)


def _ids(params: dict[str, Any]) -> list[list[int]]:
    scene = SyntheticScene(SCENE)
    tracker = DeepSORTTracker(**params)
    return [
        tracker.update(scene.detections(i)).tracker_id.tolist() for i in range(scene.num_frames)
    ]


def test_stream_and_archive_gating_threshold_change_the_output() -> None:
    default = _ids(load_config(None, []).tracker.params())
    stream = load_config(None, ["tracker.gating_threshold=9.0"]).tracker.params()
    assert stream["gating_threshold"] == 9.0
    assert _ids(stream) != default

    args = _parse(
        archive_cli.add_arguments,
        ["in.mp4", "--output", "o", "--model", "none", "--tracker", "gating_threshold=9.0"],
    )
    archive_params, _ = archive_cli.config_from_args(args).validate().tracker_params()
    assert archive_params["gating_threshold"] == 9.0
    assert _ids(archive_params) == _ids(stream)


def test_eval_gating_threshold_changes_the_output(tmp_path: Path) -> None:
    SyntheticScene(SCENE).write_mot_sequence(tmp_path / "seq" / "SCENE-0", video=False)
    outputs = []
    for extra in ([], ["--gating-threshold", "9.0"]):
        results = tmp_path / f"results{len(extra)}"
        args = _parse(
            eval_cli.add_arguments,
            [str(tmp_path / "seq"), "--model", "none", "--output", str(results), *extra],
        )
        assert eval_cli.run(args, out=io.StringIO()) == 0
        outputs.append((results / "SCENE-0.txt").read_text())
    assert outputs[0] != outputs[1]
    rows = np.loadtxt(io.StringIO(outputs[1]), delimiter=",")
    assert len(rows) > 100
