"""Command-line forms of the tracker's parameters, shared by `reprocess`, `demo` and `eval`.

Both are built from `core.parameters`, so every command takes every `DeepSORTTracker` keyword
under its own name. (The ReID model's flags are in `reid/flags.py`.)
"""

from __future__ import annotations

import argparse
from typing import Any

from ray_deepsort.core.parameters import TrackerParameter, parse_assignment, tracker_parameters


def _tracker_assignment(text: str) -> tuple[str, Any]:
    try:
        return parse_assignment(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_tracker_option(parser: Any, extra_help: str = "") -> None:
    """`--tracker NAME=VALUE` (repeatable) into `args.tracker_params`, a list of checked pairs."""
    parser.add_argument(
        "--tracker",
        dest="tracker_params",
        type=_tracker_assignment,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="DeepSORTTracker parameter (repeatable), e.g. --tracker lost_track_buffer=60; "
        f"names: {', '.join(tracker_parameters())}{extra_help}",
    )


def _flag_type(parameter: TrackerParameter) -> Any:
    def parse(text: str) -> Any:
        try:
            return parameter.coerce(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def add_tracker_flags(parser: argparse.ArgumentParser, note: str = "") -> None:
    """One `--name-with-dashes` flag per parameter; unset flags stay None (`tracker_flags`)."""
    group = parser.add_argument_group(f"tracker parameters (defaults: DeepSORTTracker's){note}")
    for parameter in tracker_parameters().values():
        default = "unset" if parameter.default is None else parameter.default
        group.add_argument(
            parameter.flag,
            dest=f"tracker_{parameter.name}",
            type=_flag_type(parameter),
            default=None,
            metavar="{" + ",".join(parameter.choices) + "}"
            if parameter.choices
            else parameter.kind.__name__.upper(),
            help=f"{parameter.summary} (default: {default})".replace("%", "%%"),
        )


def tracker_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The `DeepSORTTracker` keywords set by `add_tracker_flags` flags."""
    return {
        name: getattr(args, f"tracker_{name}")
        for name in tracker_parameters()
        if getattr(args, f"tracker_{name}", None) is not None
    }
