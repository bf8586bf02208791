"""Mutation testing of the tracker core and the stream batch path with mutmut: the kill rate.

    .venv/bin/python benchmarks/mutation.py [--scope core|stream|all] [--keep DIR]

mutmut (a `dev` extra) makes small changes to the code (flip a comparison, change a constant,
drop a call...) one at a time and runs the tests that reach the changed function; a change no
test notices "survives". The run happens in a copy of the committed tree (`git archive HEAD`), so
the working tree is never touched. Prints killed / survived per module, the kill rate, and every
survivor with its diff, so each can be judged: a survivor is either a missing test or an
equivalent mutant (a change that cannot alter behaviour, e.g. a log message). Equivalent ones
are listed in `EQUIVALENT` below with the reason, and left out of the rate. Not a CI step: the
core alone takes several minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MUTMUT = str(Path(sys.executable).with_name("mutmut"))

SCOPES: dict[str, tuple[list[str], list[str]]] = {
    # source paths, test files that exercise them
    "core": (
        ["ray_deepsort/core/"],
        [
            "tests/unit/core/test_tracker.py",
            "tests/unit/core/test_tracker_gates.py",
            "tests/unit/core/test_tracker_reid.py",
            "tests/unit/core/test_tracker_lifecycle.py",
            "tests/unit/core/test_tracker_state_validation.py",
            "tests/unit/core/test_tracker_parameters.py",
            "tests/unit/core/test_core_properties.py",
            "tests/unit/core/test_kalman_filter.py",
            "tests/unit/core/test_linear_assignment.py",
            "tests/unit/core/test_nn_matching.py",
            "tests/unit/core/test_golden_tracks.py",
            "tests/unit/core/test_detections.py",
        ],
    ),
    "stream": (
        [
            "ray_deepsort/stream/sink.py",
            "ray_deepsort/stream/ledger.py",
            "ray_deepsort/stream/batches.py",
            "ray_deepsort/stream/partitions.py",
        ],
        [
            "tests/unit/stream/test_stream_driver.py",
            "tests/unit/stream/test_stream_reliability.py",
            "tests/unit/stream/test_stream_batches.py",
            "tests/unit/stream/test_stream_sink.py",
            "tests/unit/stream/test_stream_snapshot_driver.py",
            "tests/unit/stream/test_actor_recovery.py",
        ],
    ),
}

# Surviving mutants judged unable to change behaviour: name -> why. Re-judge after each run.
EQUIVALENT: dict[str, str] = {}


def _copy_tree(destination: Path) -> None:
    """The committed tree (HEAD) of the repository, without the working tree's changes."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", "HEAD"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout
    with tempfile.TemporaryFile() as handle:
        handle.write(archive)
        handle.seek(0)
        with tarfile.open(fileobj=handle) as tar:
            tar.extractall(destination, filter="data")


def _configure(tree: Path, sources: list[str], tests: list[str]) -> None:
    existing = [t for t in tests if (tree / t).is_file()]
    lines = [
        "",
        "[tool.mutmut]",
        f"source_paths = {json.dumps([s for s in sources if (tree / s).exists()])}",
        f"pytest_add_cli_args_test_selection = {json.dumps(existing)}",
        # The MOT15 golden runs take ~20 s each: the synthetic golden scenes stand in for them.
        'pytest_add_cli_args = ["-p", "no:warnings", "-p", "no:cacheprovider", "-k", "not mot15"]',
        'also_copy = ["ray_deepsort", "tests", "benchmarks", "README.md", "docs", "jobs"]',
        "",
    ]
    with open(tree / "pyproject.toml", "a") as handle:
        handle.write("\n".join(lines))


def _module_of(mutant: str) -> str:
    return mutant.split(".x", 1)[0].split(".x\u01c1", 1)[0].rsplit("__mutmut_", 1)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scope", choices=(*SCOPES, "all"), default="core")
    parser.add_argument("--keep", type=Path, help="run in DIR and keep it (default: a temp dir)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args(argv)
    scopes = list(SCOPES) if args.scope == "all" else [args.scope]
    sources = [s for scope in scopes for s in SCOPES[scope][0]]
    tests = [t for scope in scopes for t in SCOPES[scope][1]]

    tree = args.keep or Path(tempfile.mkdtemp(prefix="mutation-"))
    tree.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        _copy_tree(tree)
        _configure(tree, sources, tests)
        shared = REPO_ROOT / ".." / "shared"
        if shared.is_dir() and not (tree / "shared").exists():
            (tree / "shared").symlink_to(shared.resolve())  # tests read ROOT/../shared
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        log_path = tree / "mutmut-run.log"
        with open(log_path, "w") as log:
            run = subprocess.run(
                [MUTMUT, "run", "--max-children", str(args.max_children)],
                cwd=tree,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if run.returncode != 0:
            text = log_path.read_text(errors="replace").replace("\r", "\n")
            print(text[-3000:], file=sys.stderr)
            return run.returncode
        listing = subprocess.run(
            [MUTMUT, "results", "--all", "true"], cwd=tree, env=env, capture_output=True, text=True
        ).stdout
        status = dict(re.findall(r"^\s*(\S+__mutmut_\d+): (\S.*)$", listing, re.MULTILINE))
        per_module: dict[str, Counter[str]] = {}
        for mutant, outcome in status.items():
            per_module.setdefault(_module_of(mutant), Counter())[outcome] += 1
        survivors = [m for m, o in status.items() if o == "survived"]
        equivalent = [m for m in survivors if m in EQUIVALENT]
        print(f"mutmut over {', '.join(sources)}; tests: {len(tests)} files")
        print("| module | mutants | killed | survived | other |\n|---|---:|---:|---:|---:|")
        for module, counts in sorted(per_module.items()):
            total = sum(counts.values())
            other = total - counts["killed"] - counts["survived"]
            print(f"| {module} | {total} | {counts['killed']} | {counts['survived']} | {other} |")
        killed = sum(c["killed"] for c in per_module.values())
        judged = killed + len(survivors) - len(equivalent)
        rate = killed / judged if judged else 0.0
        print(
            f"\nkilled {killed} of {judged} non-equivalent mutants: {100 * rate:.1f} % "
            f"({len(equivalent)} equivalent, {sum(sum(c.values()) for c in per_module.values())} "
            f"in all; {time.monotonic() - started:.0f} s)"
        )
        if survivors:
            print("\nsurvivors:")
            for mutant in survivors:
                diff = subprocess.run(
                    [MUTMUT, "show", mutant], cwd=tree, env=env, capture_output=True, text=True
                ).stdout
                changed = [
                    line
                    for line in diff.splitlines()
                    if line[:1] in "+-" and not line.startswith(("+++", "---"))
                ]
                note = f"  (equivalent: {EQUIVALENT[mutant]})" if mutant in EQUIVALENT else ""
                print(f"- {mutant}{note}")
                for line in changed[:4]:
                    print(f"      {line.strip()[:110]}")
    finally:
        if args.keep is None:
            shutil.rmtree(tree, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
