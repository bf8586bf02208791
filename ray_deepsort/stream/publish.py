"""Frame producers: a video file, a MOTChallenge sequence, or a synthetic multi-camera scene.

`ray-deepsort publish` writes RDSF v1 messages (key = stream id) to a frames topic, either as
fast as possible or at real-time pace (each frame is sent when its capture timestamp, relative
to the first frame, is reached on the wall clock).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ray_deepsort.stream.wire import DEFAULT_MAX_MESSAGE_BYTES, FrameMessage, encode_frame

logger = logging.getLogger(__name__)

_EXTENSION_FORMATS = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}


# --------------------------------------------------------------------------- frame building
def encode_image(image: np.ndarray, image_format: str, jpeg_quality: int = 90) -> bytes:
    """BGR uint8 image -> JPEG or PNG bytes."""
    import cv2

    if image_format == "jpeg":
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    elif image_format == "png":
        ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        raise ValueError(f"cannot encode images as {image_format!r}")
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {image.shape} image as {image_format}")
    return data.tobytes()


def make_frame(
    stream_id: str,
    frame_index: int,
    timestamp: float,
    detections: Any,
    *,
    image: np.ndarray | bytes | None = None,
    image_format: str = "jpeg",
    size: tuple[int, int] | None = None,
    embeddings: np.ndarray | None = None,
    jpeg_quality: int = 90,
) -> FrameMessage:
    """A `FrameMessage` from detections (`ray_deepsort.Detections` or supervision's) and an image.

    `image` is a BGR array (encoded here), already-encoded bytes in `image_format`, or None for
    motion-only frames (`size` = (width, height) still tells the tracker the picture size).
    """
    n = len(detections.xyxy)
    confidence = detections.confidence
    class_id = detections.class_id
    width, height = size if size is not None else (None, None)
    data: bytes | None = None
    if isinstance(image, np.ndarray):
        height, width = image.shape[:2]
        data = encode_image(image, image_format, jpeg_quality)
    elif isinstance(image, (bytes, bytearray)):
        data = bytes(image)
        if width is None:
            from ray_deepsort.stream.wire import image_size

            width, height = image_size(data, image_format)
    return FrameMessage(
        stream_id=stream_id,
        frame_index=int(frame_index),
        timestamp=float(timestamp),
        xyxy=np.asarray(detections.xyxy, np.float32).reshape(n, 4),
        confidence=np.ones(n, np.float32) if confidence is None else np.asarray(confidence),
        class_id=np.zeros(n, np.int64) if class_id is None else np.asarray(class_id),
        image=data,
        image_format="none" if data is None else image_format,
        width=width,
        height=height,
        embeddings=embeddings,
    )


def identity_embeddings(
    gt_id: np.ndarray, dim: int, seed: int, frame_index: int, noise: float = 0.1
) -> np.ndarray:
    """Stand-in for an upstream ReID model on synthetic scenes: one fixed random unit vector per
    ground-truth identity plus per-frame noise (false positives, id -1, get a random vector)."""
    gt_id = np.asarray(gt_id, np.int64)
    identities = np.random.default_rng([seed, 0x1D]).normal(
        0.0, 1.0, (int(gt_id.max(initial=0)) + 1, dim)
    )
    frame_rng = np.random.default_rng([seed, 0x4E, frame_index])
    strangers = frame_rng.normal(0.0, 1.0, (len(gt_id), dim))
    rows = np.where((gt_id >= 0)[:, None], identities[np.maximum(gt_id, 0)], strangers)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    rows += frame_rng.normal(0.0, noise / np.sqrt(dim), rows.shape)  # |noise| ~ `noise`
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


# --------------------------------------------------------------------------- sources
def synthetic_frames(
    cameras: int = 3,
    frames: int = 150,
    *,
    seed: int = 0,
    objects: int = 12,
    width: int = 640,
    height: int = 360,
    image_format: str = "jpeg",
    embeddings: str = "none",
    embedding_dim: int = 128,
    start_time: float | None = None,
    jpeg_quality: int = 90,
) -> tuple[dict[str, Any], Iterator[FrameMessage]]:
    """The scenes ("cam0", "cam1", ...) and their frames interleaved in arrival order.

    `image_format` "none" sends no images (motion-only); `embeddings` "identity" attaches
    `identity_embeddings` (then the job runs no ReID).
    """
    from ray_deepsort.synthetic import SceneConfig, camera_scenes

    config = SceneConfig(
        seed=seed, num_objects=objects, num_frames=frames, width=width, height=height
    )
    scenes = camera_scenes(cameras, config)
    base = time.time() if start_time is None else start_time

    def generate() -> Iterator[FrameMessage]:
        for i in range(frames):
            for k, (camera_id, scene) in enumerate(scenes.items()):
                detections = scene.detections(i)
                vectors = None
                if embeddings == "identity":
                    vectors = identity_embeddings(
                        detections.data["gt_id"], embedding_dim, seed * 1000 + k, i
                    )
                yield make_frame(
                    camera_id,
                    i,
                    base + i / scene.fps,
                    detections,
                    image=None if image_format == "none" else scene.frame(i),
                    image_format=image_format,
                    size=(scene.config.width, scene.config.height),
                    embeddings=vectors,
                    jpeg_quality=jpeg_quality,
                )

    return scenes, generate()


def mot_frames(
    seq_dir: str | Path,
    *,
    stream_id: str | None = None,
    with_images: bool = True,
    image_format: str = "jpeg",
    start_time: float | None = None,
    max_frames: int | None = None,
    jpeg_quality: int = 90,
) -> Iterator[FrameMessage]:
    """Frames of a MOTChallenge sequence (det/det.txt + img1/ or SEQ.mp4, or motion-only).

    Image files already in JPEG/PNG are sent byte for byte; video frames are encoded. Frame
    indexes are 0-based (MOT frame N is index N - 1).
    """
    from ray_deepsort.core import Detections
    from ray_deepsort.io.mot import MotSequence
    from ray_deepsort.io.video import open_video

    sequence = MotSequence(Path(seq_dir))
    info = sequence.info
    detections = sequence.detections()
    stream_id = stream_id or sequence.name
    base = time.time() if start_time is None else start_time
    count = min(sequence.num_frames, max_frames or sequence.num_frames)
    empty = Detections.empty()
    source = sequence.frame_source if with_images else None
    extension_format = _EXTENSION_FORMATS.get(info.im_ext.lower())
    video = open_video(str(sequence.video_path), need_pixels=True) if source == "video" else None
    decoded = video.frames if video is not None else iter(())
    try:
        for number in range(1, count + 1):
            image: np.ndarray | bytes | None = None
            fmt = image_format
            if source == "images" and sequence.image_dir is not None:
                path = sequence.image_dir / f"{number:06d}{info.im_ext}"
                if extension_format is not None:
                    image, fmt = path.read_bytes(), extension_format
                else:
                    import cv2

                    image = cv2.imread(str(path))
            else:
                image = next(decoded, (None, None))[1]
            yield make_frame(
                stream_id,
                number - 1,
                base + (number - 1) / info.frame_rate,
                detections.get(number, empty),
                image=image,
                image_format=fmt,
                size=(info.im_width, info.im_height),
                jpeg_quality=jpeg_quality,
            )
    finally:
        if video is not None:
            video.close()


def video_frames(
    video: str | Path,
    *,
    detections_path: str | Path | None = None,
    stream_id: str | None = None,
    image_format: str = "jpeg",
    start_time: float | None = None,
    max_frames: int | None = None,
    jpeg_quality: int = 90,
) -> Iterator[FrameMessage]:
    """Frames of a video file with detections from a MOT-format text file (frame N = Nth frame).

    Without `detections_path` frames carry no boxes (useful for plumbing tests only: the job
    tracks upstream detections, it does not detect).
    """
    from ray_deepsort.core import Detections
    from ray_deepsort.io.mot import read_detections
    from ray_deepsort.io.video import open_video

    detections = read_detections(detections_path) if detections_path else {}
    if not detections_path:
        logger.warning("no --detections given: frames of %s carry no boxes", video)
    source = open_video(str(video), need_pixels=True)
    stream_id = stream_id or Path(video).stem
    base = time.time() if start_time is None else start_time
    empty = Detections.empty()
    try:
        for index, image in source.frames:
            if max_frames is not None and index >= max_frames:
                break
            yield make_frame(
                stream_id,
                index,
                base + index / source.fps,
                detections.get(index + 1, empty),
                image=image,
                image_format=image_format,
                jpeg_quality=jpeg_quality,
            )
    finally:
        source.close()


# --------------------------------------------------------------------------- publishing
@dataclass
class PublishStats:
    frames: int = 0
    bytes: int = 0
    seconds: float = 0.0
    streams: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        rate = self.frames / self.seconds if self.seconds else 0.0
        return (
            f"published {self.frames} frames ({self.bytes / 1e6:.1f} MB) of "
            f"{len(self.streams)} stream(s) in {self.seconds:.1f}s ({rate:.0f} frames/s)"
        )


class FramePublisher:
    """A KafkaProducer that sends `FrameMessage`s keyed by stream id."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        security: dict[str, Any] | None = None,
        producer_options: dict[str, Any] | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        from kafka import KafkaProducer

        self.topic = topic
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers.split(","),
            client_id="ray-deepsort-publish",
            acks="all",
            linger_ms=5,
            batch_size=1024 * 1024,
            max_request_size=max_message_bytes + 64 * 1024,
            **(security or {}),
            **(producer_options or {}),
        )

    def send_raw(self, key: bytes | None, value: bytes, partition: int | None = None) -> Any:
        return self.producer.send(self.topic, key=key, value=value, partition=partition)

    def send(self, frame: FrameMessage, partition: int | None = None) -> tuple[Any, int]:
        value = encode_frame(frame)
        return self.send_raw(frame.stream_id.encode("utf-8"), value, partition), len(value)

    def flush(self) -> None:
        self.producer.flush()

    def close(self) -> None:
        self.producer.close()

    def __enter__(self) -> FramePublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def publish(
    frames: Iterable[FrameMessage],
    publisher: FramePublisher,
    *,
    realtime: bool = False,
    speed: float = 1.0,
    partitions: dict[str, int] | None = None,
) -> PublishStats:
    """Send every frame (optionally paced by capture time / `speed`); flush and check delivery.

    `partitions` pins streams to partitions (else Kafka's key hash decides).
    """
    stats = PublishStats()
    started = time.monotonic()
    first_timestamp: float | None = None
    futures = []
    for frame in frames:
        if realtime:
            if first_timestamp is None:
                first_timestamp = frame.timestamp
            due = started + (frame.timestamp - first_timestamp) / speed
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        partition = None if partitions is None else partitions.get(frame.stream_id)
        future, size = publisher.send(frame, partition)
        futures.append(future)
        stats.frames += 1
        stats.bytes += size
        stats.streams[frame.stream_id] = stats.streams.get(frame.stream_id, 0) + 1
        if len(futures) >= 1000:
            _check(futures, publisher)
    _check(futures, publisher)
    stats.seconds = time.monotonic() - started
    return stats


def _check(futures: list[Any], publisher: FramePublisher) -> None:
    publisher.flush()
    for future in futures:
        if future.failed():
            raise RuntimeError(f"publishing failed: {future.exception}")
    futures.clear()


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers", default=None, help="default: from --config, else 127.0.0.1:9092"
    )
    parser.add_argument(
        "--topic", default=None, help="frames topic (default: from --config, else frames)"
    )
    parser.add_argument(
        "--config", help="stream job TOML: bootstrap servers, topic and security from [kafka]"
    )
    parser.add_argument("--realtime", action="store_true", help="pace frames by capture time")
    parser.add_argument("--speed", type=float, default=1.0, help="real-time speed factor")
    parser.add_argument(
        "--image-format", choices=("jpeg", "png", "none"), default="jpeg", help="'none': no images"
    )
    parser.add_argument("--jpeg-quality", type=int, default=90)
    parser.add_argument("--max-frames", type=int, default=None, help="frames per stream")
    parser.add_argument(
        "--create-topic",
        type=int,
        default=0,
        metavar="PARTITIONS",
        help="create the topic with this many partitions if it does not exist",
    )
    sources = parser.add_subparsers(dest="source", required=True)
    synthetic = sources.add_parser("synthetic", help="a synthetic multi-camera scene")
    synthetic.add_argument("--cameras", type=int, default=3)
    synthetic.add_argument("--frames", type=int, default=150)
    synthetic.add_argument("--objects", type=int, default=12)
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.add_argument("--width", type=int, default=640)
    synthetic.add_argument("--height", type=int, default=360)
    synthetic.add_argument(
        "--embeddings",
        choices=("none", "identity"),
        default="none",
        help="'identity': attach per-identity vectors so the job runs no ReID",
    )
    synthetic.add_argument("--embedding-dim", type=int, default=128)
    mot = sources.add_parser("mot", help="a MOTChallenge sequence folder (images + det.txt)")
    mot.add_argument("path", type=Path)
    mot.add_argument("--stream-id", default=None, help="default: the sequence name")
    video = sources.add_parser("video", help="a video file plus MOT-format detections")
    video.add_argument("path", type=Path)
    video.add_argument("--detections", type=Path, default=None, help="MOT det.txt for the video")
    video.add_argument("--stream-id", default=None, help="default: the file name")


def frames_from_args(args: argparse.Namespace) -> Iterator[FrameMessage]:
    if args.source == "synthetic":
        _, frames = synthetic_frames(
            args.cameras,
            args.frames if args.max_frames is None else min(args.frames, args.max_frames),
            seed=args.seed,
            objects=args.objects,
            width=args.width,
            height=args.height,
            image_format=args.image_format,
            embeddings=args.embeddings,
            embedding_dim=args.embedding_dim,
            jpeg_quality=args.jpeg_quality,
        )
        return frames
    if args.source == "mot":
        return mot_frames(
            args.path,
            stream_id=args.stream_id,
            with_images=args.image_format != "none",
            image_format="jpeg" if args.image_format == "none" else args.image_format,
            max_frames=args.max_frames,
            jpeg_quality=args.jpeg_quality,
        )
    if args.image_format == "none":
        raise SystemExit("video sources need an image format (jpeg or png)")
    return video_frames(
        args.path,
        detections_path=args.detections,
        stream_id=args.stream_id,
        image_format=args.image_format,
        max_frames=args.max_frames,
        jpeg_quality=args.jpeg_quality,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from ray_deepsort.stream.config import StreamConfig, load_config

    config = load_config(args.config) if args.config else StreamConfig()
    bootstrap = args.bootstrap_servers or config.kafka.bootstrap_servers
    topic = args.topic or config.kafka.frames_topics[0]
    security = dict(config.kafka.security)
    max_bytes = config.kafka.max_message_bytes
    if args.create_topic:
        from ray_deepsort.stream.broker import create_topics

        create_topics(bootstrap, {topic: args.create_topic}, client_options=security)
    with FramePublisher(
        bootstrap,
        topic,
        security=security,
        max_message_bytes=max_bytes,
    ) as publisher:
        stats = publish(frames_from_args(args), publisher, realtime=args.realtime, speed=args.speed)
    print(f"{stats.line()} to {topic}")
    return 0


def partition_map(stream_ids: Sequence[str], num_partitions: int) -> dict[str, int]:
    """Spread streams evenly over partitions (round robin in the given order)."""
    return {stream_id: k % num_partitions for k, stream_id in enumerate(stream_ids)}
