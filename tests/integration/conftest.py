"""Fixtures for integration tests: a real tansu broker and a real local Ray, started and stopped
by the tests themselves (nothing else has to run)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest
from stream_support import Topics

from ray_deepsort.stream.broker import LocalBroker, create_topics, local_broker


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker() -> Iterator[LocalBroker]:
    """One in-memory broker for the session (tests use their own topics and groups)."""
    with local_broker() as running:
        yield running


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """A private local Ray with 2 CPUs (never attaches to another cluster on the machine)."""
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        namespace="ray-deepsort-tests",
        logging_level=logging.WARNING,
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def topics(broker: LocalBroker) -> Topics:
    """Fresh topic names and consumer group per test; the frames topic has 3 partitions."""
    suffix = uuid.uuid4().hex[:8]
    names = Topics(f"frames-{suffix}", f"tracks-{suffix}", f"dlq-{suffix}", f"group-{suffix}")
    create_topics(
        broker.bootstrap_servers, {names.frames: 3, names.results: 2, names.dead_letters: 1}
    )
    return names
