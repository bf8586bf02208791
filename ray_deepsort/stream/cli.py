"""`ray-deepsort stream` and `python jobs/track_stream.py`: run the stream job from a config file.

Precedence: built-in defaults < `--config FILE` < the common flags below <
`--set section.key=value`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from ray_deepsort.reid.flags import add_model_arguments, model_name_from_flags

# flag -> (config key, TOML-quote the value)
_FLAG_KEYS: dict[str, tuple[str, bool]] = {
    "bootstrap_servers": ("kafka.bootstrap_servers", True),
    "results_topic": ("kafka.results_topic", True),
    "dead_letter_topic": ("kafka.dead_letter_topic", True),
    "group_id": ("kafka.group_id", True),
    "output": ("output.path", True),
    "model": ("model.name", True),
    "model_path": ("model.path", True),
    "model_backend": ("model.backend", True),
    "shards": ("actors.num_shards", False),
    "ingest_workers": ("actors.ingest_workers", False),
    "embedders": ("actors.num_embedders", False),
    "max_batch_frames": ("batch.max_frames", False),
    "max_wait_ms": ("batch.max_wait_ms", False),
    "max_embed_crops": ("batch.max_embed_crops", False),
    "commit_interval": ("job.commit_interval_s", False),
    "max_idle": ("job.max_idle_s", False),
    "expected_frames": ("job.expected_frames", False),
    "ray_address": ("ray.address", True),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML config file (see jobs/stream.toml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config key (repeatable), e.g. --set batch.max_frames=32",
    )
    parser.add_argument("--bootstrap-servers", help="kafka.bootstrap_servers")
    parser.add_argument("--frames-topic", action="append", help="kafka.frames_topics (repeatable)")
    parser.add_argument("--results-topic", help="kafka.results_topic ('' disables)")
    parser.add_argument("--dead-letter-topic", help="kafka.dead_letter_topic ('' disables)")
    parser.add_argument("--group-id", help="kafka.group_id")
    parser.add_argument("--output", help="output.path (directory or s3://... URI)")
    add_model_arguments(parser)  # model.name, model.path, model.backend
    parser.add_argument("--shards", type=int, help="actors.num_shards")
    parser.add_argument(
        "--ingest-workers", type=int, help="actors.ingest_workers (consumers of the group)"
    )
    parser.add_argument("--embedders", type=int, help="actors.num_embedders (0 = auto)")
    parser.add_argument("--max-batch-frames", type=int, help="batch.max_frames")
    parser.add_argument("--max-wait-ms", type=int, help="batch.max_wait_ms")
    parser.add_argument("--max-embed-crops", type=int, help="batch.max_embed_crops")
    parser.add_argument("--commit-interval", type=float, help="job.commit_interval_s")
    parser.add_argument("--max-idle", type=float, help="job.max_idle_s (0 = run until stopped)")
    parser.add_argument("--expected-frames", type=int, help="job.expected_frames")
    parser.add_argument(
        "--ray-address",
        help="ray.address ('' = the job's cluster under ray job submit, else a new local Ray)",
    )
    parser.add_argument("--create-topics", action="store_true", help="kafka.create_topics = true")
    parser.add_argument(
        "--print-config", action="store_true", help="print the effective config and exit"
    )
    parser.add_argument("--log-level", default="INFO")


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """The common flags as `section.key=value` overrides, followed by the explicit `--set`s."""
    overrides: list[str] = []
    for flag, (key, quoted) in _FLAG_KEYS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        overrides.append(f"{key}={json.dumps(value) if quoted else value}")
    if getattr(args, "model_path", None) is not None and getattr(args, "model", None) is None:
        overrides.append(f"model.name={json.dumps(model_name_from_flags(None, args.model_path))}")
    if getattr(args, "frames_topic", None):
        overrides.append(f"kafka.frames_topics={json.dumps(list(args.frames_topic))}")
    if getattr(args, "create_topics", False):
        overrides.append("kafka.create_topics=true")
    return [*overrides, *args.overrides]


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> int:
    from ray_deepsort.stream.config import ConfigError, dumps, load_config

    configure_logging(args.log_level)
    try:
        config = load_config(args.config, overrides_from_args(args))
    except (ConfigError, OSError) as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dumps(config))
        return 0
    from ray_deepsort.pipeline.cluster import RayUnreachableError
    from ray_deepsort.pipeline.tracker_shard import CheckpointRestoreError
    from ray_deepsort.stream.job import run_stream_job
    from ray_deepsort.stream.kafka_clients import TopicLimitError

    try:
        summary = run_stream_job(config, install_signal_handlers=True)
    except RayUnreachableError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except CheckpointRestoreError as error:  # checkpoint.on_invalid = "fail"
        print(f"error: {error}", file=sys.stderr)
        return 1
    except TopicLimitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"summary": summary.to_dict()}, indent=2, sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="track_stream", description="Ray + Kafka DeepSORT stream job"
    )
    add_arguments(parser)
    args: Any = parser.parse_args(argv)
    return run(args)
