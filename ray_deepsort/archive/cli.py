"""`ray-deepsort reprocess` and `python jobs/reprocess_archive.py`: track an archive of videos.

Exit status: 0 when every input is done (or was already), 3 when some inputs failed (they are
listed in the summary; re-running retries them), 2 for invalid options.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from ray_deepsort.flags import add_tracker_option
from ray_deepsort.reid.flags import add_model_arguments, model_name_from_flags
from ray_deepsort.reid.spec import OPENVINO_PRECISIONS

EXIT_PARTIAL = 3


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # bare strings need no quotes
    return key.strip(), value


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH, got {text!r}") from None
    return height, width


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        help="video files, folders (searched recursively), globs, MOTChallenge sequence "
        "folders, or @list.txt",
    )
    parser.add_argument("-o", "--output", required=True, help="output folder or s3://... URI")
    group = parser.add_argument_group("detections")
    group.add_argument(
        "--detections",
        default="auto",
        help="detections file per video: 'auto' ({dir}/{stem}.parquet|.csv|.det.txt|.txt; "
        "det/det.txt for sequences) or a pattern with {dir} {stem} {name} {path}",
    )
    group.add_argument(
        "--detections-frame-base",
        type=int,
        help="number of the first frame in detections files (default: 1 for MOT .txt, 0 else)",
    )
    group.add_argument("--min-confidence", type=float, help="drop detections below this score")
    group.add_argument(
        "--detector", default="", help="detector plugin module:callable (instead of files)"
    )
    group.add_argument(
        "--detector-kwargs", default="{}", help="JSON object of keyword arguments for the plugin"
    )
    group.add_argument("--detector-batch-frames", type=int, default=16)
    group.add_argument("--detectors", type=int, default=0, help="0: one per GPU, or one")
    group.add_argument("--detector-num-cpus", type=float, default=1.0)
    group = parser.add_argument_group("ReID and tracker")
    add_model_arguments(group)
    group.add_argument(
        "--model-threads",
        type=int,
        default=0,
        help="OpenVINO / ONNX Runtime threads per embedder (0: --embedder-num-cpus)",
    )
    group.add_argument(
        "--model-precision",
        default="auto",
        choices=OPENVINO_PRECISIONS,
        help="OpenVINO inference precision (auto: OpenVINO's choice, bf16 on CPUs that have it)",
    )
    group.add_argument(
        "--no-pretrained",
        dest="pretrained",
        action="store_false",
        help="timm names: random backbone weights (timing only)",
    )
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    group.add_argument(
        "--input-size", type=_size, default=None, help="ReID HxW (default: the model's own)"
    )
    add_tracker_option(group, extra_help="; frame_rate=R is --frame-rate R")
    group.add_argument(
        "--frame-rate",
        type=float,
        help="tracker frame rate for every input (default: each video's own frame rate)",
    )
    group = parser.add_argument_group("cluster")
    group.add_argument("--workers", type=int, default=0, help="concurrent videos (0: by CPUs)")
    group.add_argument("--worker-num-cpus", type=float, default=1.0)
    group.add_argument(
        "--worker-resource",
        type=_key_value,
        action="append",
        default=[],
        metavar="NAME=AMOUNT",
        help="custom Ray resource each video task needs (e.g. the nodes that mount the archive)",
    )
    group.add_argument("--embedders", type=int, default=0, help="0: one per GPU, or one")
    group.add_argument("--embedder-num-cpus", type=float, default=1.0)
    group.add_argument("--use-gpu", default="auto", choices=("auto", "true", "false"))
    group.add_argument(
        "--max-embed-crops", type=int, default=256, help="crops merged into one embedder batch"
    )
    group.add_argument(
        "--forward-batch",
        type=int,
        default=0,
        help="crops per CNN forward pass (0: all on GPU; on CPU a few, where small passes are "
        "faster: ray_deepsort.pipeline.embedder.DEFAULT_CPU_FORWARD_BATCH)",
    )
    group.add_argument("--coalesce-wait-ms", type=float, default=2.0)
    group.add_argument("--frames-per-request", type=int, default=8)
    group.add_argument("--max-inflight-requests", type=int, default=4)
    group.add_argument("--max-retries", type=int, default=3, help="retries of a dead worker")
    group.add_argument(
        "--ray-address",
        default="",
        help="host:port, ray://host:port or auto (the running local cluster); '' = the job's "
        "cluster under ray job submit, else a new local Ray",
    )
    group.add_argument("--num-cpus", type=int, help="CPUs of a new local Ray (--ray-address local)")
    group = parser.add_argument_group("output")
    group.add_argument("--chunk-frames", type=int, default=3000, help="frames per Parquet file")
    group.add_argument("--mot-results", action="store_true", help="also write mot/KEY.txt")
    group.add_argument("--include-unconfirmed", action="store_true")
    group.add_argument("--compression", default="zstd")
    group.add_argument("--no-fsync", dest="fsync", action="store_false")
    group.add_argument("--fingerprint", default="stat", choices=("stat", "sha256"))
    group.add_argument("--force", action="store_true", help="redo inputs marked done")
    group.add_argument("--progress", default="auto", choices=("auto", "bar", "log", "none"))
    group.add_argument("--summary-json", help="also write the summary as JSON here")
    group.add_argument(
        "--dry-run",
        action="store_true",
        help="list the inputs, their keys and detections, and what would be skipped; no Ray",
    )
    group.add_argument("--rehearse-worker-crash", default="", help=argparse.SUPPRESS)
    parser.add_argument("--log-level", default="INFO")


def config_from_args(args: argparse.Namespace) -> Any:
    from ray_deepsort.archive.driver import (
        ArchiveConfig,
        ArchiveConfigError,
        default_tracker_params,
    )

    tracker = default_tracker_params()
    tracker.update(args.tracker_params)
    if args.frame_rate is not None:
        tracker["frame_rate"] = args.frame_rate
    set_rate = args.frame_rate is not None or "frame_rate" in dict(args.tracker_params)
    try:
        detector_kwargs = json.loads(args.detector_kwargs)
    except json.JSONDecodeError as error:
        raise ArchiveConfigError(f"--detector-kwargs is not JSON: {error}") from None
    if not isinstance(detector_kwargs, dict):
        raise ArchiveConfigError("--detector-kwargs must be a JSON object")
    return ArchiveConfig(
        inputs=list(args.inputs),
        output=args.output,
        detections=args.detections,
        detections_frame_base=args.detections_frame_base,
        min_confidence=args.min_confidence,
        detector=args.detector,
        detector_kwargs=detector_kwargs,
        detector_batch_frames=args.detector_batch_frames,
        detectors=args.detectors,
        detector_num_cpus=args.detector_num_cpus,
        model=model_name_from_flags(args.model, args.model_path),
        model_path=args.model_path or "",
        model_backend=args.model_backend or "auto",
        model_threads=args.model_threads,
        model_precision=args.model_precision,
        pretrained=args.pretrained,
        device=args.device,
        input_size=args.input_size,
        tracker=tracker,
        frame_rate_from_video=not set_rate,
        embedders=args.embedders,
        embedder_num_cpus=args.embedder_num_cpus,
        use_gpu=args.use_gpu,
        max_embed_crops=args.max_embed_crops,
        forward_batch=args.forward_batch,
        coalesce_wait_ms=args.coalesce_wait_ms,
        workers=args.workers,
        worker_num_cpus=args.worker_num_cpus,
        worker_resources={name: float(amount) for name, amount in args.worker_resource},
        frames_per_request=args.frames_per_request,
        max_inflight_requests=args.max_inflight_requests,
        max_retries=args.max_retries,
        chunk_frames=args.chunk_frames,
        mot_results=args.mot_results,
        include_unconfirmed=args.include_unconfirmed,
        compression=args.compression,
        fsync=args.fsync,
        fingerprint=args.fingerprint,
        force=args.force,
        progress=args.progress,
        rehearse_worker_crash=args.rehearse_worker_crash,
    ).validate()


def run(args: argparse.Namespace) -> int:
    from ray_deepsort.archive.driver import ArchiveConfigError, run_archive

    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = config_from_args(args)
    except (ArchiveConfigError, ValueError) as error:
        print(f"reprocess: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        return dry_run(config)
    from ray_deepsort.pipeline.actors import PlacementError
    from ray_deepsort.pipeline.cluster import RayUnreachableError
    from ray_deepsort.pipeline.detector import DetectorPluginError

    try:
        summary = run_archive(config, ray_address=args.ray_address or None, num_cpus=args.num_cpus)
    except (PlacementError, DetectorPluginError, RayUnreachableError) as error:
        print(f"reprocess: {error}", file=sys.stderr)
        return 2
    print(summary.render())
    if args.summary_json:
        with open(args.summary_json, "w") as handle:
            json.dump(summary.to_dict(), handle, indent=2, sort_keys=True)
    return EXIT_PARTIAL if summary.failed else 0


def dry_run(config: Any) -> int:
    """Print the plan (what a run would do) without connecting to Ray."""
    from ray_deepsort.archive.driver import ArchiveJob

    job = ArchiveJob(config)
    todo = job.plan(record=False)
    summary = job.summary
    for planned in todo:
        detections = planned.detections.path or "detector plugin"
        print(f"todo  {planned.key:<30} {planned.item.path}  (detections: {detections})")
    for failure in summary.failures:
        print(f"fail  {failure.key or '-':<30} {failure.path}: {failure.reason}")
    print(
        f"{summary.inputs} inputs: {len(todo)} to do, {summary.skipped} already done, "
        f"{summary.failed} unusable"
    )
    return EXIT_PARTIAL if summary.failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="reprocess_archive", description="Track an archive of videos on a Ray cluster"
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
