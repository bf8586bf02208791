"""`ray-deepsort`: one subcommand per user task, each implemented in its own package.

Subcommand modules import torch, Ray and Kafka only inside `run`, so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module with `add_arguments(parser)` and `run(args) -> int`, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("ray_deepsort.demo", "run the whole stream job on a synthetic scene, locally"),
    "stream": ("ray_deepsort.stream.cli", "run the Kafka -> Ray DeepSORT stream job"),
    "publish": (
        "ray_deepsort.stream.publish",
        "publish a video, MOT sequence or synthetic scene to a frames topic",
    ),
    "reprocess": (
        "ray_deepsort.archive.cli",
        "track an archive of videos or MOTChallenge sequences on a Ray cluster (resumable)",
    ),
    "render": ("ray_deepsort.archive.render", "draw tracks from the Parquet output onto a video"),
    "eval": ("ray_deepsort.eval.cli", "track MOTChallenge sequences and print HOTA/IDF1/MOTA"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ray-deepsort", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
