"""`ray-deepsort` command line: one subcommand per user task, each implemented in its package.

Subcommand modules are imported only when chosen, so `ray-deepsort eval` never pays for Ray.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module with `add_arguments(parser)` and `run(args) -> int`, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("ray_deepsort.demo", "run the whole stream job on a synthetic scene, locally"),
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
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
