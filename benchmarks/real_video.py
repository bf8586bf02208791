"""Person re-identification on real video: our tracker with each appearance model, and the peers.

    .venv/bin/python benchmarks/real_video.py [--sequences ...] [--methods ...] [--markdown FILE]

Sequences with frames in ../shared: TUD-Campus, TUD-Stadtmitte, KITTI-17 (MOT15, public
detections) and MOT16-09 (1080p, MOT17 FRCNN public detections in det/det.txt). Every tracker
gets the same detections and frames (`peers.run_peer`), and every result is scored by
`ray_deepsort.eval` (TrackEval's numbers). Ours run with default parameters (what a user gets
without tuning); the person-ReID models are loaded with `ReIDModel.from_file` from Intel's IRs.
Prints per-sequence and combined tables, then the acceptance check against motion only:
summed ID switches <= 0.75x, combined IDF1 >= +0.02, no sequence's IDF1 below by more than 0.01.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from peers.harness import (
    LABELS,
    REPO_ROOT,
    Run,
    combined,
    ensure_peer_venv,
    evaluate,
    machine_line,
    markdown_table,
    peer_versions,
    run_ours,
    run_peers,
    set_threads,
    source_line,
    work_dir,
)

SHARED = REPO_ROOT / ".." / "shared"
OMZ = SHARED / "models" / "intel-omz"
SEQUENCES = {
    "TUD-Campus": SHARED / "data" / "mot15" / "TUD-Campus",
    "TUD-Stadtmitte": SHARED / "data" / "mot15" / "TUD-Stadtmitte",
    "KITTI-17": SHARED / "data" / "mot15" / "KITTI-17",
    "MOT16-09": SHARED / "data" / "mot16" / "MOT16-09",
}
OURS = {
    "ours-motion": None,
    "ours-mobilenetv2": "mobilenetv2-imagenet",
    "ours-omz-0288": OMZ / "person-reidentification-retail-0288/FP16/"
    "person-reidentification-retail-0288.xml",
    "ours-omz-0287": OMZ / "person-reidentification-retail-0287/FP16/"
    "person-reidentification-retail-0287.xml",
}
PEERS = ("trackers-sort", "trackers-deepsort", "dsr-deepsort")
METHODS = (*OURS, *PEERS)
VIDEO_LABELS = {
    **LABELS,
    "ours-motion": "ours, motion only",
    "ours-mobilenetv2": "ours, MobileNetV2 ImageNet (torch)",
    "ours-omz-0288": "ours, OMZ 0288 (OpenVINO, from_file)",
    "ours-omz-0287": "ours, OMZ 0287 (OpenVINO, from_file)",
}
TIME_REFERENCE = {m: "ours-motion" for m in ("ours-motion", "trackers-sort")} | {
    m: "ours-omz-0288" for m in ("ours-mobilenetv2", "ours-omz-0287", *PEERS[1:], "ours-omz-0288")
}


def load_model(method: str, threads: int) -> Any:
    from ray_deepsort.reid import ReIDModel

    source = OURS[method]
    if source is None:
        return None
    if source == "mobilenetv2-imagenet":
        return ReIDModel.mobilenetv2_imagenet(device="cpu")
    return ReIDModel.from_file(source, device="cpu", threads=threads)


def acceptance(runs: dict[tuple[str, str], Run], names: list[str], method: str) -> list[str]:
    """The issue's three checks of `method` against ours-motion, one line each."""
    base = combined([runs["ours-motion", n] for n in names], "ours-motion", "all")
    ours = combined([runs[method, n] for n in names], method, "all")
    switches = ours.metrics["IDSW"] / max(base.metrics["IDSW"], 1)
    gain = ours.metrics["IDF1"] - base.metrics["IDF1"]
    worst = min(
        (runs[method, n].metrics["IDF1"] - runs["ours-motion", n].metrics["IDF1"], n) for n in names
    )
    return [
        f"- {method}: ID switches {ours.metrics['IDSW']} vs {base.metrics['IDSW']} = "
        f"{switches:.2f}x (<= 0.75: {'met' if switches <= 0.75 else 'NOT met'})",
        f"- {method}: combined IDF1 {ours.metrics['IDF1']:.3f} vs {base.metrics['IDF1']:.3f} = "
        f"{gain:+.3f} (>= +0.02: {'met' if gain >= 0.02 else 'NOT met'})",
        f"- {method}: worst sequence IDF1 change {worst[0]:+.3f} ({worst[1]}; >= -0.01: "
        f"{'met' if worst[0] >= -0.01 else 'NOT met'})",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", nargs="+", default=list(SEQUENCES), choices=SEQUENCES)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--max-frames", type=int, help="first N frames only (smoke runs)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per tracker")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    names = [n for n in args.sequences if (SEQUENCES[n] / "seqinfo.ini").is_file()]
    if not names:
        print(f"no sequences under {SHARED}", file=sys.stderr)
        return 1
    root = work_dir(args.workdir, "real-video-")
    started, load_before = time.perf_counter(), machine_line()
    threads = set_threads(args.threads)
    runs: dict[tuple[str, str], Run] = {}
    for method in [m for m in OURS if m in args.methods]:
        model = load_model(method, threads)
        for name in names:
            print(f"{name}: {method} ...", file=sys.stderr)
            runs[method, name] = run_ours(SEQUENCES[name], root, model, method, args.max_frames)
    peer_jobs = [(m, SEQUENCES[n]) for n in names for m in PEERS if m in args.methods]
    versions: dict[str, str] = {}
    if peer_jobs:
        python = ensure_peer_venv()
        versions = peer_versions(python)
        print(f"peers: {len(peer_jobs)} runs ...", file=sys.stderr)
        for run in run_peers(python, peer_jobs, root, args.max_frames, threads=threads):
            runs[run.method, run.seq_dir.name] = run
    for run in runs.values():
        evaluate(run)

    methods = [m for m in METHODS if m in args.methods]
    sections = []
    for name in names:
        rows = [runs[m, name] for m in methods if (m, name) in runs]
        sections.append(
            f"### {name} ({rows[0].frames} frames)\n\n"
            + markdown_table(rows, TIME_REFERENCE, VIDEO_LABELS)
        )
    totals = [combined([runs[m, n] for n in names], m, "all") for m in methods]
    sections.append(
        f"### Combined: {', '.join(names)}\n\n"
        + markdown_table(totals, TIME_REFERENCE, VIDEO_LABELS)
    )
    if "ours-motion" in args.methods:
        checks = [
            line
            for method in ("ours-omz-0288", "ours-omz-0287", "ours-mobilenetv2")
            if method in args.methods
            for line in acceptance(runs, names, method)
        ]
        sections.append("### Against motion only\n\n" + "\n".join(checks))
    report = "\n\n".join(sections)
    print(report)
    print(f"\nmachine before: {load_before}\nmachine after:  {machine_line()}")
    print(f"threads per tracker: {threads}; source: {source_line()}")
    print(f"peer versions: {json.dumps(versions)}")
    print(f"total wall time {time.perf_counter() - started:.0f} s; files in {root}")
    if args.markdown:
        args.markdown.write_text(report + "\n")
    if args.json:
        rows = [
            {
                "method": r.method,
                "sequence": r.sequence,
                "ms_per_frame": r.ms_per_frame,
                **r.metrics,
            }
            for r in runs.values()
        ]
        args.json.write_text(json.dumps({"versions": versions, "runs": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
