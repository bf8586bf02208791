"""Topic limits against the bundled broker: `describe_configs` reads what topics were created
with, `--create-topics` creates topics that fit, and a topic too small is refused."""

from __future__ import annotations

import uuid

import pytest

from ray_deepsort.stream.broker import LocalBroker, admin_client, create_topics
from ray_deepsort.stream.config import StreamConfig, load_config
from ray_deepsort.stream.kafka_clients import (
    TopicLimitError,
    check_topic_limits,
    create_job_topics,
    read_topic_limits,
    required_topic_bytes,
)


def _config(broker: LocalBroker) -> StreamConfig:
    suffix = uuid.uuid4().hex[:8]
    return load_config(
        None,
        [
            f'kafka.bootstrap_servers="{broker.bootstrap_servers}"',
            f'kafka.frames_topics=["frames-{suffix}"]',
            f'kafka.results_topic="tracks-{suffix}"',
            f'kafka.dead_letter_topic="dlq-{suffix}"',
        ],
    )


def test_created_topics_fit_the_job(broker: LocalBroker) -> None:
    config = _config(broker)
    create_job_topics(config)
    admin = admin_client(broker.bootstrap_servers)
    try:  # the broker reports what they were created with: the check below is not vacuous
        assert read_topic_limits(admin, required_topic_bytes(config)) == required_topic_bytes(
            config
        )
    finally:
        admin.close()
    check_topic_limits(config)


def test_a_dead_letter_topic_with_kafkas_default_limit_is_refused(broker: LocalBroker) -> None:
    config = _config(broker)
    required = required_topic_bytes(config)
    sizes = {**required, config.kafka.dead_letter_topic: 1048588}  # Kafka's default
    create_topics(
        broker.bootstrap_servers,
        dict.fromkeys(sizes, 1),
        topic_configs={name: {"max.message.bytes": str(size)} for name, size in sizes.items()},
    )
    with pytest.raises(TopicLimitError, match=r"topic 'dlq-\w+' has max.message.bytes=1048588"):
        check_topic_limits(config)
