"""Fleet simulation: the stream job fed by many cameras at once, on a local multi-node Ray.

S simulated cameras (default sweep 10, 100, 1,000 and 5,000) each publish `--fps` frames per
second for `--seconds` of video, in real time: the offered load is S x fps frames/s and every
frame's capture timestamp is the wall clock when it is sent, so the job's end-to-end latency
(capture -> result produced) is real. Cameras are keyed to the partitions of one topic (round
robin) and spread over each frame period (ten sub-slots), as unsynchronised cameras would be.

- default: each frame carries `--objects` boxes with precomputed L2-normalised float32
  embeddings (an upstream ReID service), so no CNN runs (`model.name="none"`).
- `--jpeg`: small JPEG frames without embeddings, embedded by the job's CNN embedder
  (`mobilenetv2_100`, 64x32 crops); for small fleets only (default S = 10, 100).

Every configuration runs with 1, 2 and 4 ingest workers (`actors.ingest_workers`) on a
`ray.cluster_utils.Cluster` (head + `--worker-nodes` nodes) against the bundled broker (one per
fleet size; fresh topics and consumer group per run). Messages are pre-encoded before the clock
starts, with a fixed-width slot for the timestamp; `--publishers` processes send them.

Per run it reports frames/s (`processing_frames_per_second`), ingest CPU per frame (over the
measured window, from the first frame published to the last one committed, and over the whole
run as `ingest_cpu_s / frames`), end-to-end latency p50/p99, consumer lag (max while running and
at the end), RSS per actor class (/proc VmRSS of every live actor) and per stream (tracker-shard
RSS / S, and its growth over the run / S), and checkpoint bytes per stream. It checks that the
Parquet `frames` dataset holds every published frame exactly once (OK/FAIL; exits 1 on FAIL),
and prints ratios measured in the same sweep: ingest CPU per frame against the smallest fleet
with the same worker count (acceptance: 1,000 streams within 1.5x of 10), frames/s against one
ingest worker.

    .venv/bin/python benchmarks/fleet.py --json runs/fleet.json            # full sweep
    .venv/bin/python benchmarks/fleet.py --jpeg --json runs/fleet-jpeg.json
    .venv/bin/python benchmarks/fleet.py --streams 10 --workers 1 --seconds 2   # smoke
"""

from __future__ import annotations

import os

# Single-threaded BLAS everywhere (Ray actors inherit it), as the other benchmarks do.
for _name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator, Mapping, Sequence  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from multiprocessing.connection import Connection  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

DEFAULT_STREAMS = "10,100,1000,5000"
DEFAULT_JPEG_STREAMS = "10,100"
SLOTS_PER_FRAME = 10  # cameras are spread over this many sub-slots of each frame period
EMBEDDING_VARIANTS = 4  # noisy copies of each object's vector, cycled over frames
TIMESTAMP_WIDTH = 17  # b"%.6f" of a wall-clock time between 2001 and 2286
CHECK_OK, CHECK_FAIL = "OK", "FAIL"

# One pre-encoded message: partition, key, everything before the timestamp, everything after.
Message = tuple[int, bytes, bytes, bytes]


# --------------------------------------------------------------------------- arguments
def parse_ints(text: str) -> list[int]:
    """ "10,100" -> [10, 100] (sorted, duplicates removed, each >= 1)."""
    values = sorted({int(item) for item in text.split(",") if item.strip()})
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_size(text: str) -> tuple[int, int]:
    """ "64x32" -> (64, 32): height x width."""
    height, _, width = text.partition("x")
    return int(height), int(width)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, with the fleet sizes defaulted per variant."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--streams",
        default=None,
        help=f"fleet sizes (default {DEFAULT_STREAMS}; {DEFAULT_JPEG_STREAMS} with --jpeg)",
    )
    parser.add_argument("--workers", default="1,2,4", help="ingest worker counts")
    parser.add_argument("--fps", type=float, default=10.0, help="frames/s of every camera")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds of video per camera")
    parser.add_argument("--objects", type=int, default=4, help="boxes per frame")
    parser.add_argument("--embedding-dim", type=int, default=128)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--jpeg", action="store_true", help="JPEG frames through the CNN")
    parser.add_argument("--width", type=int, default=320, help="frame width (pixels)")
    parser.add_argument("--height", type=int, default=180, help="frame height (pixels)")
    parser.add_argument("--input-size", default="64x32", help="CNN crop HxW (--jpeg)")
    parser.add_argument("--publishers", type=int, default=1, help="publisher processes")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--shard-cpus", type=float, default=0.5)
    parser.add_argument("--ingest-cpus", type=float, default=1.0)
    parser.add_argument("--embedders", type=int, default=1, help="CNN embedders (--jpeg)")
    parser.add_argument("--embedder-cpus", type=float, default=1.0)
    parser.add_argument("--head-cpus", type=int, default=4, help="logical CPUs of the head")
    parser.add_argument("--worker-nodes", type=int, default=1, help="Ray nodes beside the head")
    parser.add_argument("--node-cpus", type=int, default=4, help="logical CPUs of each node")
    parser.add_argument("--object-store-mb", type=int, default=200, help="per node")
    parser.add_argument("--batch-frames", type=int, default=64, help="batch.max_frames")
    parser.add_argument("--max-wait-ms", type=int, default=50, help="batch.max_wait_ms")
    parser.add_argument("--inflight", type=int, default=4, help="batch.max_inflight_batches")
    parser.add_argument("--checkpoint-every", type=int, default=1, help="batches")
    parser.add_argument("--fsync", action="store_true", help="output.fsync (default off)")
    parser.add_argument(
        "--lag-interval",
        type=float,
        default=1.0,
        help="job.progress_interval_s: how often the workers measure their lag",
    )
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    parser.add_argument(
        "--drain-timeout", type=float, default=600.0, help="after the last frame is published"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="/tmp/ray-deepsort-fleet")
    parser.add_argument("--keep-output", action="store_true")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    try:
        args.stream_counts = parse_ints(
            args.streams or (DEFAULT_JPEG_STREAMS if args.jpeg else DEFAULT_STREAMS)
        )
        args.worker_counts = parse_ints(args.workers)
        parse_size(args.input_size)
    except (ValueError, argparse.ArgumentTypeError) as error:
        parser.error(str(error))
    args.frames = max(1, round(args.seconds * args.fps))
    if args.publishers < 1 or args.partitions < 1 or args.objects < 1:
        parser.error("--publishers, --partitions and --objects must be >= 1")
    return args


# --------------------------------------------------------------------------- workload
def stream_id(camera: int) -> str:
    return f"cam{camera:05d}"


def box_tracks(
    streams: int, frames: int, objects: int, width: int, height: int, seed: int
) -> np.ndarray:
    """xyxy int32 [S, F, O, 4]: every object bounces around its camera's picture at a constant
    speed (a triangle wave, so tracks are continuous), all computed at once."""
    rng = np.random.default_rng([seed, 0xB0])
    box_w = np.maximum(1.0, rng.uniform(0.06, 0.15, (streams, objects)) * width)
    box_h = np.minimum(box_w * rng.uniform(1.5, 2.5, (streams, objects)), 0.9 * height)
    span = np.stack([width - box_w, height - box_h], axis=-1)  # S, O, 2
    start = rng.uniform(0.0, 2.0, (streams, objects, 2))
    speed = rng.uniform(-0.03, 0.03, (streams, objects, 2))  # spans per frame
    phase = start[:, None] + speed[:, None] * np.arange(frames)[None, :, None, None]
    wave = 1.0 - np.abs(1.0 - np.mod(phase, 2.0))  # in [0, 1]
    top_left = np.floor(wave * span[:, None])
    x1, y1 = top_left[..., 0], top_left[..., 1]
    x2 = x1 + np.maximum(1.0, np.round(box_w))[:, None]
    y2 = y1 + np.maximum(1.0, np.round(box_h))[:, None]
    return np.stack([x1, y1, x2, y2], axis=-1).astype(np.int32)


def unit_embeddings(
    streams: int, objects: int, dim: int, variants: int, seed: int, noise: float = 0.1
) -> np.ndarray:
    """float32 [S, V, O, D] unit vectors: one identity per object plus `variants` noisy copies
    (frame f uses copy f % V), as an upstream ReID model would send."""
    rng = np.random.default_rng([seed, 0xE3])
    identity = rng.standard_normal((streams, 1, objects, dim), dtype=np.float32)
    identity /= np.linalg.norm(identity, axis=-1, keepdims=True)
    jitter = rng.standard_normal((streams, variants, objects, dim), dtype=np.float32)
    vectors = identity + jitter * np.float32(noise / np.sqrt(dim))
    vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors.astype("<f4")


def camera_slot(camera: int, streams: int, slots: int = SLOTS_PER_FRAME) -> int:
    """The sub-slot of each frame period in which `camera` sends (cameras spread evenly)."""
    return camera * slots // streams


def stamp(pre: bytes, post: bytes, timestamp: float) -> bytes:
    """The message value with its capture timestamp filled in (fixed width: no re-encoding)."""
    return pre + b"%.6f" % timestamp + post


def _header_head(
    camera: int,
    frame_index: int,
    image_json: str,
    boxes_json: str,
    tail_json: str,
) -> bytes:
    """The RDSF v1 preamble and JSON header up to the timestamp, which comes last."""
    from ray_deepsort.stream.wire import MAGIC, PREAMBLE, VERSION

    head = (
        f'{{"stream_id":"{stream_id(camera)}","frame_index":{frame_index},'
        f'"image":{image_json},"detections":{{"xyxy":{boxes_json},{tail_json},"timestamp":'
    ).encode()
    return PREAMBLE.pack(MAGIC, VERSION, len(head) + TIMESTAMP_WIDTH + 1) + head


@dataclass(frozen=True)
class Workload:
    """What every publisher needs to rebuild its share of the fleet's messages."""

    streams: int
    frames: int
    objects: int
    embedding_dim: int
    width: int
    height: int
    jpeg: bool
    partitions: int
    seed: int


def draw_frame(
    boxes: np.ndarray, width: int, height: int, background: np.ndarray, colours: np.ndarray
) -> np.ndarray:
    """A BGR picture: the camera's background with each object as a filled, outlined box."""
    import cv2

    image = background.copy()
    for (x1, y1, x2, y2), colour in zip(boxes.tolist(), colours.tolist(), strict=True):
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), tuple(colour), thickness=-1)
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), (255, 255, 255), thickness=1)
    return image


def build_messages(workload: Workload, cameras: Sequence[int]) -> list[list[list[Message]]]:
    """Pre-encoded messages of `cameras`, grouped [frame][sub-slot] in sending order.

    Boxes and embeddings come from arrays computed for the whole fleet at once (so a camera's
    frames do not depend on how cameras are split over publishers); each message is a header
    prefix plus a shared body, the timestamp goes in between at send time (`stamp`).
    """
    w = workload
    xyxy = box_tracks(w.streams, w.frames, w.objects, w.width, w.height, w.seed)
    chosen = np.asarray(cameras, dtype=np.int64)
    boxes_json = [
        [json.dumps(per_frame, separators=(",", ":")) for per_frame in per_camera]
        for per_camera in xyxy[chosen].tolist()
    ]
    confidence = "[" + ",".join(["0.9"] * w.objects) + "]"
    class_id = "[" + ",".join(["0"] * w.objects) + "]"
    groups: list[list[list[Message]]] = [
        [[] for _ in range(SLOTS_PER_FRAME)] for _ in range(w.frames)
    ]
    if w.jpeg:
        _jpeg_messages(w, chosen, xyxy, boxes_json, confidence, class_id, groups)
        return groups
    vectors = unit_embeddings(w.streams, w.objects, w.embedding_dim, EMBEDDING_VARIANTS, w.seed)
    image_json = f'{{"format":"none","length":0,"width":{w.width},"height":{w.height}}}'
    tail = (
        f'"confidence":{confidence},"class_id":{class_id}}},'
        f'"embeddings":{{"dtype":"float32","shape":[{w.objects},{w.embedding_dim}]}}'
    )
    for row, camera in enumerate(chosen.tolist()):
        key = stream_id(camera).encode()
        partition = camera % w.partitions
        slot = camera_slot(camera, w.streams)
        bodies = [b"}" + vectors[camera, v].tobytes() for v in range(EMBEDDING_VARIANTS)]
        for frame in range(w.frames):
            head = _header_head(camera, frame, image_json, boxes_json[row][frame], tail)
            groups[frame][slot].append((partition, key, head, bodies[frame % EMBEDDING_VARIANTS]))
    return groups


def _jpeg_messages(
    w: Workload,
    chosen: np.ndarray,
    xyxy: np.ndarray,
    boxes_json: list[list[str]],
    confidence: str,
    class_id: str,
    groups: list[list[list[Message]]],
) -> None:
    """JPEG frames without embeddings (the job's CNN embeds the crops)."""
    from ray_deepsort.stream.publish import encode_image

    rng = np.random.default_rng([w.seed, 0x1A])
    tail = f'"confidence":{confidence},"class_id":{class_id}}},"embeddings":null'
    gradient = np.linspace(0.3, 1.0, w.width, dtype=np.float32)[None, :, None]
    for row, camera in enumerate(chosen.tolist()):
        key = stream_id(camera).encode()
        partition = camera % w.partitions
        slot = camera_slot(camera, w.streams)
        tint = rng.uniform(40, 160, 3).astype(np.float32)
        background = np.broadcast_to(gradient * tint, (w.height, w.width, 3)).astype(np.uint8)
        colours = rng.integers(0, 256, (w.objects, 3))
        for frame in range(w.frames):
            image = encode_image(
                draw_frame(xyxy[camera, frame], w.width, w.height, background, colours),
                "jpeg",
                80,
            )
            image_json = (
                f'{{"format":"jpeg","length":{len(image)},"width":{w.width},"height":{w.height}}}'
            )
            head = _header_head(camera, frame, image_json, boxes_json[row][frame], tail)
            groups[frame][slot].append((partition, key, head, b"}" + image))


# --------------------------------------------------------------------------- publishers
@dataclass
class PublishReport:
    """What one publisher process did (wall-clock times)."""

    sent: int = 0
    bytes: int = 0
    build_s: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0  # after the final flush
    max_late_s: float = 0.0  # how far a sub-slot's sends started behind schedule
    errors: int = 0
    error: str = ""


def publisher_main(
    connection: Connection,
    workload: Workload,
    cameras: list[int],
    bootstrap: str,
    topic: str,
    fps: float,
    progress: Any = None,
) -> None:
    """A publisher process: build its cameras' messages, connect, report ready, wait for the
    start time, then send every sub-slot on schedule with the wall clock as capture time.
    `progress` (a shared counter) tells the parent how many messages were sent so far."""
    report = PublishReport()
    try:
        began = time.perf_counter()
        groups = build_messages(workload, cameras)
        from ray_deepsort.stream.publish import FramePublisher

        publisher = FramePublisher(bootstrap, topic)
        publisher.producer.partitions_for(topic)  # metadata fetched before the clock starts
        report.build_s = round(time.perf_counter() - began, 3)
        connection.send(("ready", report.build_s))
        start_at = float(connection.recv())
        errors: list[Any] = []
        send = publisher.producer.send
        report.started_at = start_at
        slot_s = 1.0 / (fps * SLOTS_PER_FRAME)
        for frame, slots in enumerate(groups):
            for slot, messages in enumerate(slots):
                if not messages:
                    continue
                due = start_at + (frame * SLOTS_PER_FRAME + slot) * slot_s
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
                now = time.time()
                report.max_late_s = max(report.max_late_s, now - due)
                timestamp = b"%.6f" % now
                for partition, key, pre, post in messages:
                    value = pre + timestamp + post
                    send(topic, key=key, value=value, partition=partition).add_errback(
                        errors.append
                    )
                    report.bytes += len(value)
                report.sent += len(messages)
                if progress is not None:
                    progress.value = report.sent
        publisher.flush()
        report.finished_at = time.time()
        report.errors = len(errors)
        if errors:
            report.error = repr(errors[0])
        publisher.close()
    except BaseException as error:  # reported to the parent, which fails the run
        report.error = f"{type(error).__name__}: {error}"
    connection.send(("done", asdict(report)))
    connection.close()


class Publishers:
    """`--publishers` processes, each with every n-th camera; started before the job so that
    building the messages overlaps the actors' start-up."""

    def __init__(
        self, count: int, workload: Workload, bootstrap: str, topic: str, fps: float
    ) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a Ray driver
        self.connections: list[Connection] = []
        self.processes: list[Any] = []
        self.progress: list[Any] = []
        for index in range(min(count, workload.streams)):
            parent, child = context.Pipe()
            cameras = list(range(index, workload.streams, count))
            progress = context.Value("q", 0, lock=False)  # one writer: no lock needed
            process = context.Process(
                target=publisher_main,
                args=(child, workload, cameras, bootstrap, topic, fps, progress),
                name=f"fleet-publisher-{index}",
                daemon=True,
            )
            process.start()
            child.close()
            self.connections.append(parent)
            self.processes.append(process)
            self.progress.append(progress)
        self.build_s = 0.0
        self.reports: list[PublishReport] = []

    def wait_ready(self, timeout_s: float) -> None:
        """Until every publisher has built its messages and connected."""
        deadline = time.monotonic() + timeout_s
        for connection in self.connections:
            if not connection.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"a publisher was not ready within {timeout_s:g}s")
            kind, value = connection.recv()
            if kind != "ready":
                raise RuntimeError(f"publisher failed while building: {value}")
            self.build_s = max(self.build_s, float(value))

    def sent(self) -> int:
        """Messages sent so far by all publishers."""
        return sum(int(progress.value) for progress in self.progress)

    def start(self, at: float) -> None:
        for connection in self.connections:
            connection.send(at)

    def finished(self) -> bool:
        """Whether every publisher has reported (collects the reports as they come)."""
        for connection in self.connections[len(self.reports) :]:
            if not connection.poll(0):
                return False
            try:
                _, values = connection.recv()
                self.reports.append(PublishReport(**values))
            except EOFError:  # it died without a report
                self.reports.append(PublishReport(error="publisher exited without a report"))
        return True

    def close(self) -> None:
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()


# --------------------------------------------------------------------------- measuring
def vmrss_mb(pid: int) -> float | None:
    """VmRSS of `pid` in MB (None once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def live_actor_pids() -> dict[int, str]:
    """pid -> class name of every live actor of the connected cluster (GCS actor table: no
    dashboard needed; all nodes of a local cluster share this machine's /proc)."""
    from ray._private import state as ray_state

    table = ray_state.actors() or {}
    return {
        int(info["Pid"]): str(info["ActorClassName"])
        for info in table.values()
        if info.get("State") == "ALIVE" and info.get("Pid")
    }


def rss_by_class(pids: Mapping[int, str]) -> dict[str, dict[str, float]]:
    """{class: {count, total_mb, max_mb}} from /proc (processes gone meanwhile are skipped)."""
    out: dict[str, dict[str, float]] = {}
    for pid, name in pids.items():
        mb = vmrss_mb(pid)
        if mb is None:
            continue
        entry = out.setdefault(name, {"count": 0, "total_mb": 0.0, "max_mb": 0.0})
        entry["count"] += 1
        entry["total_mb"] = round(entry["total_mb"] + mb, 1)
        entry["max_mb"] = round(max(entry["max_mb"], mb), 1)
    return out


def checkpoint_bytes(output: Path) -> tuple[int, int]:
    """(stream checkpoint files, their bytes) under `output/_checkpoints/*/streams/`."""
    from ray_deepsort.pipeline.state_store import CHECKPOINT_DIR

    files = list((output / CHECKPOINT_DIR).glob("*/streams/*.npz"))
    return len(files), sum(path.stat().st_size for path in files)


def check_exactly_once(
    camera: np.ndarray, frame_index: np.ndarray, streams: int, frames: int
) -> dict[str, int]:
    """Counts of missing, duplicated and unexpected (stream, frame) rows; `camera` is -1 for a
    stream id that is not one of the fleet's."""
    camera = np.asarray(camera, np.int64)
    frame_index = np.asarray(frame_index, np.int64)
    known = (camera >= 0) & (camera < streams) & (frame_index >= 0) & (frame_index < frames)
    counts = np.bincount(camera[known] * frames + frame_index[known], minlength=streams * frames)
    return {
        "rows": int(camera.size),
        "missing": int((counts == 0).sum()),
        "duplicates": int(np.maximum(counts - 1, 0).sum()),
        "unexpected": int((~known).sum()),
    }


def parquet_check(output: Path, streams: int, frames: int) -> dict[str, int]:
    """`check_exactly_once` over the job's Parquet `frames` dataset (vectorised)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ray_deepsort.pipeline.parquet import ParquetResultWriter

    table = ParquetResultWriter(output).read("frames")
    ids = pa.array([stream_id(c) for c in range(streams)])
    camera = pc.fill_null(pc.index_in(table["stream_id"], value_set=ids), -1)
    return check_exactly_once(
        camera.to_numpy(zero_copy_only=False), table["frame_index"].to_numpy(), streams, frames
    )


def latency_ms(histogram: Mapping[str, int], quantiles: Sequence[float] = (50, 99)) -> list[float]:
    """Percentiles (ms) of the job's end-to-end latency histogram (NaN without frames)."""
    from ray_deepsort.stream.latency import percentile

    values = [percentile(histogram, q) for q in quantiles]
    return [float("nan") if v is None else round(1000 * v, 1) for v in values]


# --------------------------------------------------------------------------- one run
def group_settled(owned: Sequence[int], partitions: int) -> bool:
    """Every worker has joined the group and the assignment covers each partition once."""
    holders = sum(1 for count in owned if count > 0)
    return sum(owned) == partitions and holders == min(len(owned), partitions)


def job_overrides(
    args: argparse.Namespace, bootstrap: str, suffix: str, output: Path, workers: int
) -> list[str]:
    """The stream job's config for one run (fresh topics, group and output)."""
    height, width = parse_size(args.input_size)
    overrides = [
        f"kafka.bootstrap_servers={json.dumps(bootstrap)}",
        f'kafka.frames_topics=["fleet-{suffix}"]',
        f'kafka.results_topic="fleet-out-{suffix}"',
        f'kafka.dead_letter_topic="fleet-dlq-{suffix}"',
        f'kafka.group_id="fleet-{suffix}"',
        f"output.path={json.dumps(str(output))}",
        f"output.fsync={'true' if args.fsync else 'false'}",
        f"actors.ingest_workers={workers}",
        f"actors.ingest_num_cpus={args.ingest_cpus}",
        f"actors.num_shards={args.shards}",
        f"actors.shard_num_cpus={args.shard_cpus}",
        f"batch.max_frames={args.batch_frames}",
        f"batch.max_wait_ms={args.max_wait_ms}",
        f"batch.max_inflight_batches={args.inflight}",
        f"checkpoint.every_batches={args.checkpoint_every}",
        f"tracker.frame_rate={args.fps}",
        f"job.progress_interval_s={args.lag_interval}",
        "job.max_idle_s=0",
        "job.expected_frames=0",
    ]
    if args.jpeg:
        overrides += [
            'model.name="mobilenetv2_100"',
            f"model.input_height={height}",
            f"model.input_width={width}",
            f"actors.num_embedders={args.embedders}",
            f"actors.embedder_num_cpus={args.embedder_cpus}",
        ]
    else:
        overrides.append('model.name="none"')
    return overrides


@dataclass
class Sampler:
    """Lag and RSS sampled while a run is measured."""

    lag_max: int = 0  # the job's own: records not yet polled (summary.lag)
    uncommitted_max: int = 0  # records published and not yet committed
    rss_before: dict[str, dict[str, float]] = field(default_factory=dict)
    rss_end: dict[str, dict[str, float]] = field(default_factory=dict)
    rss_peak_mb: dict[str, float] = field(default_factory=dict)

    def rss(self) -> dict[str, dict[str, float]]:
        sample = rss_by_class(live_actor_pids())
        for name, entry in sample.items():
            self.rss_peak_mb[name] = max(self.rss_peak_mb.get(name, 0.0), entry["total_mb"])
        return sample


def run_one(args: argparse.Namespace, bootstrap: str, streams: int, workers: int) -> dict[str, Any]:
    """One configuration: topics, publishers, job; measure while it runs; check the output."""
    from ray_deepsort.stream.broker import create_topics
    from ray_deepsort.stream.config import load_config
    from ray_deepsort.stream.job import StreamJob

    suffix = uuid.uuid4().hex[:8]
    mode = "jpeg" if args.jpeg else "embeddings"
    output = Path(args.workdir) / f"{mode}-s{streams}-w{workers}-{suffix}"
    topic = f"fleet-{suffix}"
    create_topics(
        bootstrap, {topic: args.partitions, f"fleet-out-{suffix}": 1, f"fleet-dlq-{suffix}": 1}
    )
    workload = Workload(
        streams=streams,
        frames=args.frames,
        objects=args.objects,
        embedding_dim=args.embedding_dim,
        width=args.width,
        height=args.height,
        jpeg=args.jpeg,
        partitions=args.partitions,
        seed=args.seed,
    )
    total = streams * args.frames
    publishers = Publishers(args.publishers, workload, bootstrap, topic, args.fps)
    job = StreamJob(load_config(None, job_overrides(args, bootstrap, suffix, output, workers)))
    outcome: dict[str, Any] = {}

    def run_job() -> None:
        try:
            outcome["summary"] = job.run()
        except BaseException as error:  # re-raised by the caller
            outcome["error"] = error

    runner = threading.Thread(target=run_job, name="fleet-job", daemon=True)
    began = time.monotonic()
    runner.start()
    sampler = Sampler()
    try:
        publishers.wait_ready(args.ready_timeout)
        _wait_for_group(job, runner, workers, args.partitions, began + args.ready_timeout)
        ready_s = time.monotonic() - began
        sampler.rss_before = sampler.rss()
        cpu_before = job.summary.ingest_cpu_s
        start_at = time.time() + 0.2
        publishers.start(start_at)
        last_rss = time.monotonic()
        # Publishing may fall behind (reported), but not for ever.
        deadline = last_rss + 0.2 + 2 * args.seconds + 60 + args.drain_timeout
        published_by: float | None = None
        while runner.is_alive():
            time.sleep(0.25)
            done = job.summary.records_done()
            sampler.lag_max = max(sampler.lag_max, job.summary.lag)
            sampler.uncommitted_max = max(sampler.uncommitted_max, publishers.sent() - done)
            if time.monotonic() - last_rss >= 1.0:
                sampler.rss()
                last_rss = time.monotonic()
            if published_by is None and publishers.finished():
                published_by = time.monotonic()
                if any(report.error for report in publishers.reports):
                    break  # a publisher failed: the check below fails the run
            if published_by is not None and done >= total:
                break
            now = time.monotonic()
            if now > deadline or (published_by and now - published_by > args.drain_timeout):
                print(f"  timed out: {done}/{total} records committed")
                break
        done_at = time.time()
        cpu_window = job.summary.ingest_cpu_s - cpu_before
        sampler.rss_end = sampler.rss()
    finally:
        job.request_stop()
        runner.join(timeout=600)
        publishers.close()
    if "error" in outcome:
        raise outcome["error"]
    summary = outcome["summary"]
    if summary.lag:
        sampler.lag_max = max(sampler.lag_max, summary.lag)
    reports = publishers.reports
    files, ckpt_bytes = checkpoint_bytes(output)
    check = parquet_check(output, streams, args.frames)
    publish_errors = [r.error for r in reports if r.error]
    ok = (
        not publish_errors
        and check["missing"] == 0
        and check["duplicates"] == 0
        and check["unexpected"] == 0
        and summary.dead_letters == 0
    )
    sent = sum(r.sent for r in reports)
    publish_s = max((r.finished_at for r in reports), default=start_at) - start_at
    p50, p99 = latency_ms(summary.latency)
    shards = sampler.rss_end.get("TrackerShardActor", {}).get("total_mb", 0.0)
    shards_before = sampler.rss_before.get("TrackerShardActor", {}).get("total_mb", 0.0)
    row: dict[str, Any] = {
        "mode": mode,
        "streams": streams,
        "workers": workers,
        "frames_expected": total,
        "frames": summary.frames,
        "dead_letters": summary.dead_letters,
        "offered_fps": round(streams * args.fps, 1),
        "published": sent,
        "publish_fps": round(sent / max(publish_s, 1e-9), 1),
        "publish_max_late_ms": round(1000 * max((r.max_late_s for r in reports), default=0), 1),
        "build_s": publishers.build_s,
        "startup_s": round(ready_s, 2),
        "frames_per_second": summary.processing_frames_per_second,
        "window_fps": round(total / max(done_at - start_at, 1e-9), 1),
        "processing_s": summary.processing_s,
        "ingest_cpu_s": summary.ingest_cpu_s,
        "ingest_cpu_us_per_frame": round(1e6 * summary.ingest_cpu_s / max(summary.frames, 1), 1),
        "ingest_cpu_window_s": round(cpu_window, 3),
        "ingest_cpu_us_per_frame_window": round(1e6 * cpu_window / total, 1),
        "latency_p50_ms": p50,
        "latency_p99_ms": p99,
        "lag_max": sampler.lag_max,
        "lag_end": summary.lag,
        "uncommitted_max": sampler.uncommitted_max,
        "rss_before": sampler.rss_before,
        "rss_end": sampler.rss_end,
        "rss_peak_total_mb": sampler.rss_peak_mb,
        "ingest_peak_rss_mb": summary.ingest_peak_rss_mb,
        "shard_rss_kb_per_stream": round(1024 * shards / streams, 1),
        "shard_rss_growth_kb_per_stream": round(1024 * (shards - shards_before) / streams, 2),
        "checkpoint_files": files,
        "checkpoint_bytes_per_stream": round(ckpt_bytes / streams, 1),
        "check": {**check, "publish_errors": publish_errors},
        "status": CHECK_OK if ok else CHECK_FAIL,
        "stop_reason": summary.stop_reason,
        "actors": summary.actors,
        "elapsed_s": round(time.monotonic() - began, 1),
    }
    if not args.keep_output:
        shutil.rmtree(output, ignore_errors=True)
    return row


def _wait_for_group(
    job: Any, runner: threading.Thread, workers: int, partitions: int, deadline: float
) -> None:
    """Until every ingest worker owns its share of the partitions (the group has settled), so
    that start-up and the group join are not counted as latency."""
    while time.monotonic() < deadline:
        if not runner.is_alive():
            return  # the job failed to start: the caller raises its error
        running = list(job.running)  # their reports are refreshed by the driver every 0.25 s
        owned = [len(worker.report.owned) for worker in running]
        if len(owned) == workers and group_settled(owned, partitions):
            return
        time.sleep(0.25)
    raise TimeoutError("the ingest workers did not settle in the consumer group in time")


# --------------------------------------------------------------------------- reporting
def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Ingest CPU per frame against the smallest fleet with the same mode and worker count;
    frames/s against the fewest workers (1) with the same mode and fleet size."""
    for row in rows:
        same_workers = [
            r for r in rows if (r["mode"], r["workers"]) == (row["mode"], row["workers"])
        ]
        base = min(same_workers, key=lambda r: r["streams"])
        row["cpu_ratio_vs_smallest"] = _ratio(
            row["ingest_cpu_us_per_frame_window"], base["ingest_cpu_us_per_frame_window"]
        )
        row["cpu_ratio_vs_smallest_run"] = _ratio(
            row["ingest_cpu_us_per_frame"], base["ingest_cpu_us_per_frame"]
        )
        same_streams = [
            r for r in rows if (r["mode"], r["streams"]) == (row["mode"], row["streams"])
        ]
        fewest = min(same_streams, key=lambda r: r["workers"])
        row["fps_ratio_vs_fewest_workers"] = _ratio(
            row["frames_per_second"], fewest["frames_per_second"]
        )


def _ratio(value: float, base: float) -> float:
    return round(value / base, 2) if base else float("nan")


def acceptance_lines(
    rows: Sequence[Mapping[str, Any]], small: int = 10, large: int = 1000, limit: float = 1.5
) -> list[str]:
    """Ingest CPU per frame at `large` streams within `limit` x of `small`, per worker count."""
    lines = []
    by_key = {(r["mode"], r["workers"], r["streams"]): r for r in rows}
    for (mode, workers, streams), row in sorted(by_key.items()):
        base = by_key.get((mode, workers, small))
        if streams != large or base is None:
            continue
        ratio = _ratio(
            row["ingest_cpu_us_per_frame_window"], base["ingest_cpu_us_per_frame_window"]
        )
        verdict = "OK" if ratio <= limit else "OVER"
        lines.append(
            f"acceptance {mode} workers={workers}: ingest CPU/frame at {large} streams = "
            f"{ratio:.2f}x the {small}-stream figure (limit {limit:g}x): {verdict}"
        )
    return lines


COLUMNS: list[tuple[str, str, str]] = [
    # header, key, format
    ("mode", "mode", "{:<10}"),
    ("S", "streams", "{:>5}"),
    ("W", "workers", "{:>2}"),
    ("offer/s", "offered_fps", "{:>8.0f}"),
    ("pub/s", "publish_fps", "{:>8.0f}"),
    ("job fps", "frames_per_second", "{:>8.0f}"),
    ("fps/1w", "fps_ratio_vs_fewest_workers", "{:>6.2f}"),
    ("cpu us/f", "ingest_cpu_us_per_frame_window", "{:>8.0f}"),
    ("cpu x", "cpu_ratio_vs_smallest", "{:>6.2f}"),
    ("run us/f", "ingest_cpu_us_per_frame", "{:>8.0f}"),
    ("run x", "cpu_ratio_vs_smallest_run", "{:>6.2f}"),
    ("p50 ms", "latency_p50_ms", "{:>7.0f}"),
    ("p99 ms", "latency_p99_ms", "{:>7.0f}"),
    ("lag max", "lag_max", "{:>7}"),
    ("lag end", "lag_end", "{:>7}"),
    ("uncmt max", "uncommitted_max", "{:>9}"),
    ("MB/ingest", "ingest_rss_mb", "{:>9.0f}"),
    ("MB/shard", "shard_rss_mb", "{:>8.0f}"),
    ("MB/embed", "embedder_rss_mb", "{:>8.0f}"),
    ("KB/strm", "shard_rss_kb_per_stream", "{:>8.1f}"),
    ("dKB/strm", "shard_rss_growth_kb_per_stream", "{:>8.2f}"),
    ("ckpt B/strm", "checkpoint_bytes_per_stream", "{:>11.0f}"),
    ("check", "status", "{:>5}"),
]


def table_values(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row plus RSS per actor of each class at the end (MB, mean over that class's actors;
    NaN for a class that does not run)."""
    values = dict(row)
    for key, name in (
        ("ingest_rss_mb", "IngestWorkerActor"),
        ("shard_rss_mb", "TrackerShardActor"),
        ("embedder_rss_mb", "CoalescingEmbedderActor"),
    ):
        entry = row.get("rss_end", {}).get(name)
        values[key] = entry["total_mb"] / entry["count"] if entry else float("nan")
    return values


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per run, columns as in `COLUMNS`."""
    widths = [max(len(title), int(re.findall(r"\d+", fmt)[0])) for title, _, fmt in COLUMNS]
    lines = [" ".join(f"{title:>{w}}" for (title, _, _), w in zip(COLUMNS, widths, strict=True))]
    for row in rows:
        values = table_values(row)
        cells = []
        for (_, key, fmt), width in zip(COLUMNS, widths, strict=True):
            value = values.get(key, "")
            try:
                text = fmt.format(value)
            except (ValueError, TypeError):
                text = str(value)
            cells.append(f"{text:>{width}}")
        lines.append(" ".join(cells))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
@contextlib.contextmanager
def local_cluster(args: argparse.Namespace) -> Iterator[Any]:
    """A head plus `--worker-nodes` Ray nodes on this machine, connected; shut down after.

    `Cluster` points /tmp/ray/ray_current_cluster at itself and deletes it at shutdown; what
    was there before is put back, so other users of this machine see no change.
    """
    import ray
    from ray._private.utils import get_ray_address_file
    from ray.cluster_utils import Cluster

    from ray_deepsort.stream.broker import free_port

    address_file = Path(get_ray_address_file(None))
    previous = address_file.read_text() if address_file.exists() else None
    store = args.object_store_mb * 1024 * 1024
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": args.head_cpus,
            "object_store_memory": store,
            "include_dashboard": False,
            # Ray still binds a dashboard port; the default 8265 may be another cluster's.
            "dashboard_port": free_port(),
        },
    )
    try:
        for _ in range(args.worker_nodes):
            cluster.add_node(num_cpus=args.node_cpus, object_store_memory=store)
        ray.init(address=cluster.address, logging_level=logging.WARNING, namespace="fleet")
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        if previous is not None:
            address_file.parent.mkdir(parents=True, exist_ok=True)
            address_file.write_text(previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # `timeout` / Ctrl-C: unwind, so that the Ray nodes and the broker are shut down and the
    # Ray address file is put back (a killed Cluster leaves it naming a dead head).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    from ray_deepsort.stream.broker import local_broker

    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    mode = "jpeg" if args.jpeg else "embeddings"
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "settings": {k: v for k, v in vars(args).items()},
        "runs": [],
    }
    rows: list[dict[str, Any]] = report["runs"]
    began = time.monotonic()
    with local_cluster(args):
        for streams in args.stream_counts:
            with local_broker() as broker:
                for workers in args.worker_counts:
                    print(
                        f"{mode}: {streams} streams x {args.fps:g} fps, {workers} ingest "
                        "worker(s) ...",
                        flush=True,
                    )
                    row = run_one(args, broker.bootstrap_servers, streams, workers)
                    rows.append(row)
                    print(
                        f"  {row['status']}: {row['frames']}/{row['frames_expected']} frames, "
                        f"job {row['frames_per_second']:.0f} fps, published "
                        f"{row['publish_fps']:.0f}/{row['offered_fps']:.0f} fps, ingest "
                        f"{row['ingest_cpu_us_per_frame_window']:.0f} us/frame, p50/p99 "
                        f"{row['latency_p50_ms']}/{row['latency_p99_ms']} ms, run "
                        f"{row['elapsed_s']:.0f}s",
                        flush=True,
                    )
                    if row["publish_fps"] < 0.95 * row["offered_fps"]:
                        print("  (the publishers could not keep up with the offered rate)")
    add_ratios(rows)
    report["total_s"] = round(time.monotonic() - began, 1)
    report["acceptance"] = acceptance_lines(rows)
    print()
    print(format_table(rows))
    print(
        "cpu us/f: ingest CPU per frame from the first frame published to the last committed "
        "(run us/f: whole run, ingest_cpu_s / frames); x = against the smallest fleet, same "
        "workers; fps/1w = against the fewest workers, same fleet; lag = the job's (records not "
        "yet polled); uncmt = published - committed; MB/<actor> = RSS per actor at the end; "
        "KB/strm = all shards' RSS / S, dKB/strm = its growth over the run / S"
    )
    for line in report["acceptance"]:
        print(line)
    failed = [r for r in rows if r["status"] != CHECK_OK]
    verdict = CHECK_FAIL if failed else CHECK_OK
    print(f"exactly-once check: {verdict} ({len(rows) - len(failed)}/{len(rows)} runs OK)")
    for row in failed:
        print(f"  FAIL {row['mode']} S={row['streams']} W={row['workers']}: {row['check']}")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
