"""Throughput of the whole stream job versus one in-process tracker loop (acceptance 4).

Two workloads built from the same synthetic multi-camera scene:

- cnn: JPEG frames, no embeddings; the job's embedder actors run `mobilenetv2_100`.
- embeddings: frames carry precomputed embeddings (stand-ins of `--embedding-dim` floats per box,
  as an upstream ReID service would send), so no CNN runs.

For each workload it measures frames/s of (a) one in-process loop over the same messages (decode
the RDSF bytes, decode the JPEG, `DeepSORTTracker.update` with the ReID model or the
embeddings; one tracker per stream) and (b) the Ray + Kafka job (bundled broker, local Ray)
for several shard / embedder counts. Job frames/s counts from the first batch submitted to the
last batch committed (actor start-up and the consumer-group join are reported separately).

    .venv/bin/python benchmarks/stream_throughput.py --json runs/stream_throughput.json
"""

from __future__ import annotations

import os

# Single-threaded BLAS for the in-process loop, as Ray gives its actors (OMP_NUM_THREADS = their
# CPUs): multi-threaded OpenBLAS on the tracker's small matrices is several times slower on a
# busy machine, which would flatter the job.
for _name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402


def parse_grid(text: str) -> list[tuple[int, int]]:
    """ "1x1,2x1" -> [(shards, embedders), ...]."""
    pairs = []
    for item in text.split(","):
        shards, _, embedders = item.partition("x")
        pairs.append((int(shards), int(embedders or 1)))
    return pairs


def build_messages(args: argparse.Namespace, mode: str) -> list[tuple[bytes, bytes]]:
    """The workload's RDSF messages (key, value), cameras interleaved as they would arrive."""
    from ray_deepsort.stream.publish import synthetic_frames
    from ray_deepsort.stream.wire import encode_frame

    _, frames = synthetic_frames(
        args.cameras,
        args.frames if mode == "cnn" else args.embedding_frames,
        seed=args.seed,
        objects=args.objects,
        width=args.width,
        height=args.height,
        image_format="jpeg" if mode == "cnn" else "none",
        embeddings="identity" if mode == "embeddings" else "none",
        embedding_dim=args.embedding_dim,
        start_time=1_732_500_000.0,
    )
    return [(f.stream_id.encode(), encode_frame(f)) for f in frames]


def in_process(
    messages: list[tuple[bytes, bytes]], mode: str, tracker_params: dict[str, Any], model: Any
) -> dict[str, float]:
    """One loop, one tracker per stream: what a single process does without Ray or Kafka."""
    import cv2

    from ray_deepsort.core import DeepSORTTracker, Detections
    from ray_deepsort.stream.wire import decode_frame

    trackers: dict[str, DeepSORTTracker] = {}
    boxes = 0
    started = time.perf_counter()
    for key, value in messages:
        frame = decode_frame(value, key)
        tracker = trackers.setdefault(
            frame.stream_id,
            DeepSORTTracker(reid_model=model if mode == "cnn" else None, **tracker_params),
        )
        detections = Detections(frame.xyxy, frame.confidence, frame.class_id)
        image = None
        if mode == "cnn" and frame.image is not None:
            image = cv2.imdecode(np.frombuffer(frame.image, np.uint8), cv2.IMREAD_COLOR)
        tracker.update(
            detections, frame=image, embeddings=frame.embeddings, frame_index=frame.frame_index
        )
        boxes += frame.num_detections
    seconds = time.perf_counter() - started
    return {
        "frames": len(messages),
        "boxes": boxes,
        "seconds": round(seconds, 3),
        "frames_per_second": round(len(messages) / seconds, 2),
    }


def run_job(
    args: argparse.Namespace,
    broker: Any,
    messages: list[tuple[bytes, bytes]],
    mode: str,
    shards: int,
    embedders: int,
) -> dict[str, Any]:
    from ray_deepsort.stream.broker import create_topics
    from ray_deepsort.stream.config import load_config
    from ray_deepsort.stream.job import StreamJob
    from ray_deepsort.stream.publish import FramePublisher

    suffix = uuid.uuid4().hex[:8]
    topic = f"bench-{suffix}"
    create_topics(
        broker.bootstrap_servers, {topic: args.cameras, f"out-{suffix}": 1, f"dlq-{suffix}": 1}
    )
    publisher = FramePublisher(broker.bootstrap_servers, topic)
    streams = sorted({key for key, _ in messages})
    for key, value in messages:
        publisher.send_raw(key, value, partition=streams.index(key) % args.cameras)
    publisher.flush()
    publisher.close()
    height, width = (int(v) for v in args.input_size.split("x"))
    config = load_config(
        None,
        [
            f'kafka.bootstrap_servers="{broker.bootstrap_servers}"',
            f'kafka.frames_topics=["{topic}"]',
            f'kafka.results_topic="out-{suffix}"',
            f'kafka.dead_letter_topic="dlq-{suffix}"',
            f'kafka.group_id="bench-{suffix}"',
            f'output.path="{args.workdir}/{suffix}"',
            f'model.name="{"mobilenetv2_100" if mode == "cnn" else "none"}"',
            f"model.input_height={height}",
            f"model.input_width={width}",
            f"actors.num_shards={shards}",
            f"actors.num_embedders={embedders if mode == 'cnn' else 0}",
            f"actors.shard_num_cpus={args.shard_cpus}",
            f"actors.embedder_num_cpus={args.embedder_cpus}",
            f"batch.max_frames={args.batch_frames}",
            f"batch.max_embed_crops={args.embed_crops}",
            f"job.expected_frames={len(messages)}",
            "job.max_idle_s=60",
            "job.progress_interval_s=0",
        ],
    )
    summary = StreamJob(config).run()
    if summary.frames != len(messages):
        raise RuntimeError(f"job tracked {summary.frames} of {len(messages)} frames")
    return {
        "mode": mode,
        "shards": shards,
        "embedders": embedders if mode == "cnn" else 0,
        "frames": summary.frames,
        "frames_per_second": summary.processing_frames_per_second,
        "processing_s": summary.processing_s,
        "startup_and_join_s": round(summary.elapsed_s - summary.processing_s, 2),
        "batches": summary.batches,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--frames", type=int, default=60, help="frames per camera (cnn)")
    parser.add_argument(
        "--embedding-frames", type=int, default=400, help="frames per camera (embeddings)"
    )
    parser.add_argument("--objects", type=int, default=12)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embedding-dim", type=int, default=1280)
    parser.add_argument("--input-size", default="256x128", help="ReID crop HxW")
    parser.add_argument("--ray-cpus", type=int, default=4, help="logical CPUs of the local Ray")
    parser.add_argument("--shard-cpus", type=float, default=0.25)
    parser.add_argument("--embedder-cpus", type=float, default=1.0)
    parser.add_argument("--batch-frames", type=int, default=64)
    parser.add_argument("--embed-crops", type=int, default=128)
    parser.add_argument("--cnn-grid", default="1x1,2x1,4x1,2x2", help="shards x embedders")
    parser.add_argument("--embeddings-grid", default="1,2,4", help="shard counts")
    parser.add_argument("--modes", default="embeddings,cnn")
    parser.add_argument("--workdir", default="/tmp/ray-deepsort-bench")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import ray
    import torch

    from ray_deepsort.core.parameters import TrackerConfig
    from ray_deepsort.pipeline.embedder import ModelChoice, load_reid_model
    from ray_deepsort.stream.broker import local_broker

    tracker_params = TrackerConfig().params()
    height, width = (int(v) for v in args.input_size.split("x"))
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "torch_threads_in_process": torch.get_num_threads(),
        "settings": vars(args),
        "in_process": {},
        "job": [],
    }
    modes = args.modes.split(",")
    messages = {mode: build_messages(args, mode) for mode in modes}
    for mode in modes:
        model = None
        if mode == "cnn":
            model = load_reid_model(ModelChoice(device="cpu", input_size=(height, width)))
            in_process(messages[mode][:6], mode, tracker_params, model)  # warm-up
        threads = sorted({1, torch.get_num_threads()}) if mode == "cnn" else [1]
        default_threads = torch.get_num_threads()
        for count in threads:
            torch.set_num_threads(count)
            result = in_process(messages[mode], mode, tracker_params, model)
            result["torch_threads"] = count
            report["in_process"].setdefault(mode, result)  # 1 thread = one CPU embedder
            report["in_process"][f"{mode}_torch{count}"] = result
            print(f"in-process {mode}: {result}", flush=True)
        torch.set_num_threads(default_threads)

    with local_broker() as broker:
        ray.init(
            address="local",
            num_cpus=args.ray_cpus,
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
        try:
            for mode in modes:
                grid = (
                    parse_grid(args.cnn_grid)
                    if mode == "cnn"
                    else [(int(s), 0) for s in args.embeddings_grid.split(",")]
                )
                for shards, embedders in grid:
                    row = run_job(args, broker, messages[mode], mode, shards, embedders)
                    base = report["in_process"][mode]["frames_per_second"]
                    row["in_process_over_job"] = round(base / row["frames_per_second"], 2)
                    report["job"].append(row)
                    print(f"job {mode}: {row}", flush=True)
        finally:
            ray.shutdown()

    print("\nmode        shards embedders  job fps  in-process fps  in-process/job")
    for row in report["job"]:
        base = report["in_process"][row["mode"]]["frames_per_second"]
        print(
            f"{row['mode']:<12}{row['shards']:>6}{row['embedders']:>10}"
            f"{row['frames_per_second']:>9.1f}{base:>16.1f}{row['in_process_over_job']:>16.2f}"
        )
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
