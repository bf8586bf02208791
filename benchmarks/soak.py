"""Soak: the stream job under a steady synthetic load for a long time (issue #5, acceptance 5).

A paced producer publishes frames of several synthetic cameras in real time: most carry
precomputed embeddings (as an upstream ReID service would send), a few carry JPEG images that the
job's CNN embedder has to embed, so every actor kind works. Scenes loop with ever-increasing frame
indices. A consumer of the results topic measures frame latency (result received minus the
frame's capture timestamp, which the producer sets to the publish time). Every `--sample-s`
seconds the RSS of every process is read from /proc (Linux): the job's actors (Ray worker
processes titled ``ray::<Actor>``), this driver and the broker.

It prints throughput (offered vs tracked), latency p50/p99 and, per process, RSS after warm-up,
at the end, the peak and the slope after warm-up (MiB per 10 minutes): "flat" means the slope
is within noise.

    .venv/bin/python benchmarks/soak.py --minutes 30 --json runs/soak.json
    .venv/bin/python benchmarks/soak.py --minutes 2            # quick check
"""

from __future__ import annotations

import os

for _name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import bisect  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib(pid: int) -> float | None:
    """Resident set size of `pid` in MiB (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return None


def _parent_pids() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def ray_actor_processes(root: int) -> dict[int, str]:
    """pid -> actor class of the live Ray workers below process `root` (the local Ray this
    script started) whose title names an actor (`ray::Class...`); other clusters are ignored."""
    parents = _parent_pids()
    found: dict[int, str] = {}
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor not in (None, 0, 1, root):
            ancestor = parents.get(ancestor)
        if ancestor != root:
            continue
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
        except (OSError, UnicodeDecodeError):
            continue
        if title.startswith("ray::") and not title.startswith("ray::IDLE"):
            name = title[5:].split(".", 1)[0].split(" ", 1)[0]
            if name.endswith("Actor"):
                found[pid] = name
    return found


@dataclass
class MemorySeries:
    """RSS samples per process label: [(seconds since start, MiB)]."""

    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def add(self, label: str, at: float, mib: float) -> None:
        self.samples.setdefault(label, []).append((at, mib))

    def summary(self, warmup_s: float) -> dict[str, dict[str, float]]:
        out = {}
        for label, series in sorted(self.samples.items()):
            points = np.array(series, float)
            after = points[points[:, 0] >= warmup_s]
            if len(after) < 2:
                after = points
            slope = np.polyfit(after[:, 0], after[:, 1], 1)[0] if len(after) >= 2 else 0.0
            out[label] = {
                "after_warmup_mib": round(float(after[0, 1]), 1),
                "end_mib": round(float(points[-1, 1]), 1),
                "peak_mib": round(float(points[:, 1].max()), 1),
                "slope_mib_per_10min": round(float(slope * 600), 2),
            }
        return out


class PacedProducer(threading.Thread):
    """Publishes every camera's frames at `fps` in real time until `stop` is set."""

    def __init__(self, args: argparse.Namespace, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True, name="soak-producer")
        from ray_deepsort.stream.publish import (
            FramePublisher,
            encode_image,
            identity_embeddings,
            partition_map,
        )
        from ray_deepsort.synthetic import SceneConfig, camera_scenes

        self.args = args
        self.stop = threading.Event()
        self.published = 0
        self.publisher = FramePublisher(bootstrap, topic)
        config = SceneConfig(
            seed=args.seed, num_objects=args.objects, num_frames=args.loop_frames,
            width=args.width, height=args.height,
        )  # fmt: skip
        scenes = camera_scenes(args.cameras + args.cnn_cameras, config)
        self.partitions = partition_map(list(scenes), args.partitions)
        # Pre-encode one loop of every camera: the producer must keep pace on a busy machine.
        self.loops: dict[str, list[tuple[Any, bytes | None, np.ndarray | None]]] = {}
        for k, (camera_id, scene) in enumerate(scenes.items()):
            with_images = k >= args.cameras
            frames = []
            for i in range(args.loop_frames):
                detections = scene.detections(i)
                image = encode_image(scene.frame(i), "jpeg") if with_images else None
                vectors = None
                if not with_images:
                    vectors = identity_embeddings(
                        detections.data["gt_id"], args.embedding_dim, k, i
                    )
                frames.append((detections, image, vectors))
            self.loops[camera_id] = frames
        self.size = (args.width, args.height)

    def run(self) -> None:
        from ray_deepsort.stream.publish import make_frame

        started = time.monotonic()
        tick = 0
        while not self.stop.is_set():
            due = started + tick / self.args.fps
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            for camera_id, frames in self.loops.items():
                detections, image, vectors = frames[tick % len(frames)]
                frame = make_frame(
                    camera_id, tick, time.time(), detections, image=image, size=self.size,
                    embeddings=vectors,
                )  # fmt: skip
                self.publisher.send(frame, self.partitions[camera_id])
                self.published += 1
            tick += 1
        self.publisher.flush()
        self.publisher.close()


class LatencyConsumer(threading.Thread):
    """Reads the results topic; latency = receive time - the frame's capture timestamp.

    Memory stays flat however long the soak runs (it shares the driver process, whose RSS is
    measured): latencies go into a fixed log-spaced histogram (bins 0.5 % wide), duplicates are
    found from each stream's last frame index (results of one stream arrive in order).
    """

    EDGES = np.geomspace(1e-4, 1e3, 3501)  # seconds

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True, name="soak-latency")
        self.stop = threading.Event()
        self.bootstrap, self.topic = bootstrap, topic
        self.measure_from = float("inf")  # wall time: the end of the warm-up
        self.counts = np.zeros(len(self.EDGES) + 1, np.int64)
        self.max_latency = 0.0
        self.recent: collections.deque[float] = collections.deque(maxlen=2000)
        self.last_frame: dict[str, int] = {}
        self.results = 0
        self.duplicates = 0

    def run(self) -> None:
        from kafka import KafkaConsumer

        from ray_deepsort.stream.wire import decode_result

        consumer = KafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap.split(","),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        try:
            while not self.stop.is_set():
                for records in consumer.poll(timeout_ms=200).values():
                    now = time.time()
                    for record in records:
                        message = decode_result(record.value)
                        stream, frame = message["stream_id"], message["frame_index"]
                        if frame <= self.last_frame.get(stream, -1):
                            self.duplicates += 1
                        self.last_frame[stream] = max(frame, self.last_frame.get(stream, -1))
                        self.results += 1
                        latency = now - message["timestamp"]
                        self.recent.append(latency)
                        if now >= self.measure_from:
                            self.counts[bisect.bisect_left(self.EDGES, latency)] += 1
                            self.max_latency = max(self.max_latency, latency)
        finally:
            consumer.close(autocommit=False)

    def percentile(self, q: float) -> float:
        """Upper edge (seconds) of the bin holding the q-th percentile after warm-up."""
        total = int(self.counts.sum())
        if not total:
            return float("nan")
        index = int(np.searchsorted(np.cumsum(self.counts), q / 100 * total))
        return float(self.EDGES[min(index, len(self.EDGES) - 1)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup-minutes", type=float, default=0.0, help="default: 1/6 of run")
    parser.add_argument("--cameras", type=int, default=6, help="cameras with embeddings")
    parser.add_argument("--cnn-cameras", type=int, default=1, help="cameras with JPEG frames")
    parser.add_argument("--fps", type=float, default=5.0, help="frames/s of every camera")
    parser.add_argument("--objects", type=int, default=12)
    parser.add_argument("--loop-frames", type=int, default=300)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--embedding-dim", type=int, default=128)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--checkpoint-every", type=int, default=20, help="batches")
    parser.add_argument("--sample-s", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")

    import ray

    from ray_deepsort.stream.broker import create_topics, local_broker
    from ray_deepsort.stream.config import load_config
    from ray_deepsort.stream.job import StreamJob

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="soak-"))
    duration_s = args.minutes * 60
    warmup_s = (args.warmup_minutes or args.minutes / 6) * 60
    suffix = uuid.uuid4().hex[:8]
    frames_topic, results_topic = f"soak-{suffix}", f"soak-out-{suffix}"
    with local_broker() as broker:
        bootstrap = broker.bootstrap_servers
        create_topics(
            bootstrap, {frames_topic: args.partitions, results_topic: 1, f"soak-dlq-{suffix}": 1}
        )
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
        config = load_config(
            None,
            [
                f'kafka.bootstrap_servers="{bootstrap}"',
                f'kafka.frames_topics=["{frames_topic}"]',
                f'kafka.results_topic="{results_topic}"',
                f'kafka.dead_letter_topic="soak-dlq-{suffix}"',
                f'kafka.group_id="soak-{suffix}"',
                f'output.path="{workdir / "out"}"',
                f"actors.num_shards={args.shards}",
                "actors.embedder_num_cpus=1",
                "actors.shard_num_cpus=0.5",
                "checkpoint.enabled=true",
                f"checkpoint.every_batches={args.checkpoint_every}",
                "job.progress_interval_s=0",
            ],
        )
        job = StreamJob(config)
        runner = threading.Thread(target=job.run, name="soak-job", daemon=True)
        producer = PacedProducer(args, bootstrap, frames_topic)
        latency = LatencyConsumer(bootstrap, results_topic)
        memory = MemorySeries()
        runner.start()
        # Wait until the ingest workers own partitions before offering load, so start-up is
        # not counted as latency.
        while not job.summary.owned and runner.is_alive():
            time.sleep(0.5)
        latency.start()
        producer.start()
        started = time.monotonic()
        latency.measure_from = time.time() + warmup_s
        print(f"soak: {args.minutes:g} min, workdir {workdir}", flush=True)
        while time.monotonic() - started < duration_s and runner.is_alive():
            at = time.monotonic() - started
            actors = ray_actor_processes(os.getpid())
            processes = {f"{name}[{pid}]": pid for pid, name in actors.items()}
            processes["driver"] = os.getpid()
            processes["broker"] = broker.process.pid
            for label, pid in processes.items():
                mib = rss_mib(pid)
                if mib is not None:
                    memory.add(label, at, mib)
            recent = list(latency.recent)
            print(
                f"  t={at / 60:5.1f} min published={producer.published} "
                f"tracked={job.summary.frames} "
                f"p50={1000 * np.median(recent) if recent else float('nan'):.0f} ms "
                + " ".join(f"{k}={v[-1][1]:.0f}MiB" for k, v in memory.samples.items()),
                flush=True,
            )
            time.sleep(args.sample_s)
        producer.stop.set()
        producer.join()
        deadline = time.monotonic() + 120
        while job.summary.frames < producer.published and time.monotonic() < deadline:
            time.sleep(0.5)
        elapsed = time.monotonic() - started  # the run, not the shutdown below
        job.request_stop()
        runner.join(timeout=120)
        time.sleep(2.0)
        latency.stop.set()
        latency.join()
        ray.shutdown()

    report = {
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}",
        "minutes": round(elapsed / 60, 2),
        "warmup_minutes": round(warmup_s / 60, 2),
        "offered_fps": round((args.cameras + args.cnn_cameras) * args.fps, 2),
        "published": producer.published,
        "tracked": job.summary.frames,
        "results_received": latency.results,
        "duplicates_in_sink": latency.duplicates,
        "dead_letters": job.summary.dead_letters,
        "throughput_fps": round(job.summary.frames / elapsed, 2),
        "latency_ms_p50": round(1000 * latency.percentile(50), 1),
        "latency_ms_p99": round(1000 * latency.percentile(99), 1),
        "latency_ms_max": round(1000 * latency.max_latency, 1),
        "checkpoints": job.summary.checkpoints,
        "memory": memory.summary(warmup_s),
        "args": vars(args),
    }
    print(json.dumps({k: v for k, v in report.items() if k != "args"}, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
