"""`ray-deepsort demo`: the whole stream job on one machine, nothing to install by hand.

Starts the bundled Kafka-compatible broker (tansu, loopback, free port) and a local Ray,
publishes a synthetic multi-camera scene, runs the stream job until every frame is done, then
prints tracking metrics (HOTA, IDF1, MOTA against the scene's ground truth), throughput and where
the Parquet output is. Everything it started is stopped again.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ray_deepsort.flags import add_tracker_option
from ray_deepsort.reid.flags import add_model_arguments, model_name_from_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cameras", type=int, default=3, help="streams (one per camera)")
    parser.add_argument("--frames", type=int, default=150, help="frames per camera")
    parser.add_argument("--objects", type=int, default=10, help="people per camera")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument(
        "--output", type=Path, default=None, help="Parquet output (default: output/demo-<time>)"
    )
    add_model_arguments(parser)  # the embedder actors' model, as the stream job's [model]
    parser.add_argument(
        "--embeddings",
        choices=("cnn", "identity"),
        default="cnn",
        help="cnn: embedder actors run the ReID model; identity: frames carry precomputed "
        "stand-in embeddings (no CNN)",
    )
    add_tracker_option(parser)
    parser.add_argument("--shards", type=int, default=2, help="tracker shard actors")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument(
        "--input-height",
        type=int,
        default=None,
        help="ReID crop height (default: 128 for mobilenetv2-imagenet, which is faster at "
        "128x64; the model's own for others)",
    )
    parser.add_argument("--input-width", type=int, default=None, help="ReID crop width")
    parser.add_argument("--realtime", action="store_true", help="publish at camera speed")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--log-level", default="INFO")


def _results_rows(tracks: Any, stream_id: str) -> np.ndarray:
    """MOT rows (1-based frame, id, x, y, w, h) of one stream from the Parquet `tracks` table."""
    import pyarrow.compute as pc

    table = tracks.filter(pc.equal(tracks["stream_id"], stream_id))
    if table.num_rows == 0:
        return np.zeros((0, 6))
    frame = table["frame_index"].to_numpy() + 1
    x1, y1 = table["x1"].to_numpy(), table["y1"].to_numpy()
    x2, y2 = table["x2"].to_numpy(), table["y2"].to_numpy()
    rows = np.column_stack([frame, table["tracker_id"].to_numpy(), x1, y1, x2 - x1, y2 - y1])
    return rows[np.lexsort((rows[:, 1], rows[:, 0]))].astype(np.float64)


def count_topic_messages(
    bootstrap_servers: str, topic: str, expected: int, timeout_s: float
) -> int:
    """Messages in `topic` (reads until `expected` are seen or `timeout_s` passes)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        consumer.seek_to_beginning()
        seen = 0
        deadline = time.monotonic() + timeout_s
        while seen < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                seen += len(records)
        return seen
    finally:
        consumer.close(autocommit=False)


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    """Run everything; returns the report (also what `--json` prints)."""
    import ray

    from ray_deepsort.eval import evaluate_many
    from ray_deepsort.io.mot import GroundTruth
    from ray_deepsort.pipeline.parquet import ParquetResultWriter
    from ray_deepsort.stream.broker import create_topics, local_broker
    from ray_deepsort.stream.config import load_config
    from ray_deepsort.stream.job import StreamJob
    from ray_deepsort.stream.publish import (
        FramePublisher,
        partition_map,
        publish,
        synthetic_frames,
    )

    log = logging.getLogger("ray_deepsort.demo")
    output = args.output or Path("output") / time.strftime("demo-%Y%m%d-%H%M%S")
    total = args.cameras * args.frames
    model = model_name_from_flags(args.model, args.model_path)
    use_cnn = args.embeddings == "cnn" and model.lower() != "none"
    height, width = args.input_height, args.input_width
    mobilenet = model == "mobilenetv2-imagenet" or (
        model == "mobilenetv2_100" and not args.model_path
    )
    if height is None and width is None and mobilenet:
        height, width = 128, 64  # 4x fewer pixels than its own 256x128: a faster demo
    model_keys = [
        f"model.name={json.dumps(model if use_cnn else 'none')}",
        f"model.path={json.dumps(str(Path(args.model_path).resolve()) if args.model_path else '')}",
        f"model.backend={json.dumps(args.model_backend or 'auto')}",
        f"model.input_height={height or 0}",
        f"model.input_width={width or 0}",
    ]
    report: dict[str, Any] = {"output": str(output.resolve())}
    started = time.monotonic()
    with local_broker() as broker:
        log.info("broker (tansu) listening on %s", broker.bootstrap_servers)
        create_topics(
            broker.bootstrap_servers, {"frames": args.cameras, "tracks": 1, "frames-dlq": 1}
        )
        scenes, frames = synthetic_frames(
            args.cameras,
            args.frames,
            seed=args.seed,
            objects=args.objects,
            width=args.width,
            height=args.height,
            image_format="jpeg" if use_cnn else "none",
            embeddings="identity" if args.embeddings == "identity" else "none",
        )
        with FramePublisher(broker.bootstrap_servers, "frames") as publisher:
            stats = publish(
                frames,
                publisher,
                realtime=args.realtime,
                partitions=partition_map(list(scenes), args.cameras),
            )
        log.info("%s", stats.line())
        report["published"] = {"frames": stats.frames, "megabytes": round(stats.bytes / 1e6, 2)}

        config = load_config(
            None,
            [
                f"kafka.bootstrap_servers={json.dumps(broker.bootstrap_servers)}",
                'kafka.group_id="ray-deepsort-demo"',
                *model_keys,
                *(f"tracker.{name}={json.dumps(value)}" for name, value in args.tracker_params),
                f"actors.num_shards={args.shards}",
                f"output.path={json.dumps(str(output))}",
                f"job.expected_frames={total}",
                "job.max_idle_s=30",
                "job.progress_interval_s=5",
            ],
        )
        ray.init(
            address="local",
            num_cpus=args.num_cpus,
            include_dashboard=False,
            namespace="ray-deepsort-demo",
            logging_level=logging.WARNING,
        )
        try:
            summary = StreamJob(config).run()
        finally:
            ray.shutdown()
        report["job"] = summary.to_dict()
        report["results_topic_messages"] = count_topic_messages(
            broker.bootstrap_servers, "tracks", summary.frames, timeout_s=10
        )

    writer = ParquetResultWriter(output)
    tracks = writer.read("tracks")
    frames_table = writer.read("frames")
    report["parquet"] = {
        "tracks_rows": tracks.num_rows,
        "frames_rows": frames_table.num_rows,
        "tracks": writer.dataset_path("tracks"),
        "frames": writer.dataset_path("frames"),
    }
    sequences = {
        camera: (
            GroundTruth.from_rows(scene.ground_truth),
            _results_rows(tracks, camera),
            scene.num_frames,
        )
        for camera, scene in scenes.items()
    }
    report["metrics"] = evaluate_many(sequences)
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    return report


def format_report(report: dict[str, Any]) -> str:
    job = report["job"]
    lines = [
        "",
        "ray-deepsort demo",
        f"  job: {job['frames']} frames tracked, {job['dead_letters']} dead letters, "
        f"{job['frames_per_second']:.1f} frames/s ({job['actors']})",
        f"  results topic 'tracks': {report['results_topic_messages']} messages",
        "",
        f"  {'camera':<10}{'HOTA':>7}{'IDF1':>7}{'MOTA':>7}{'IDSW':>6}"
        f"{'GT ids':>8}{'track ids':>11}",
    ]
    for camera, metrics in report["metrics"].items():
        lines.append(
            f"  {camera:<10}{metrics['HOTA']:>7.3f}{metrics['IDF1']:>7.3f}{metrics['MOTA']:>7.3f}"
            f"{metrics['IDSW']:>6d}{metrics['gt_ids']:>8d}{metrics['tracker_ids']:>11d}"
        )
    parquet = report["parquet"]
    lines += [
        "",
        f"  Parquet ({parquet['tracks_rows']} track rows, {parquet['frames_rows']} frame rows):",
        f"    {parquet['tracks']}",
        f"    {parquet['frames']}",
        f"  total {report['elapsed_s']}s",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ray_deepsort.stream.cli import configure_logging

    configure_logging(args.log_level)
    report = run_demo(args)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(format_report(report))
    return 0
