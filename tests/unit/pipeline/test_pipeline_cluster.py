"""Ray start-up proceeds or fails fast: a dead cluster's leftover address file never hangs it."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from ray_deepsort.pipeline import cluster

DEAD = "192.0.2.2:55191"  # TEST-NET-1: never answers


@pytest.fixture
def listener() -> Iterator[str]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield f"127.0.0.1:{server.getsockname()[1]}"


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 0.5)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def test_no_address_outside_a_job_is_a_new_local_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "recorded_cluster_address", lambda: DEAD)
    assert cluster.ray_address("") == "local"
    assert cluster.ray_address("local") == "local"


def test_an_address_that_answers_is_used(monkeypatch: pytest.MonkeyPatch, listener: str) -> None:
    assert cluster.ray_address(listener) == listener
    assert cluster.ray_address(f"ray://{listener}") == f"ray://{listener}"
    monkeypatch.setenv("RAY_ADDRESS", listener)  # what `ray job submit` sets for its driver
    assert cluster.ray_address("") == listener
    monkeypatch.setattr(cluster, "recorded_cluster_address", lambda: listener)
    assert cluster.ray_address("auto") == listener


def test_an_address_that_does_not_answer_fails_fast_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(cluster.RayUnreachableError, match=f"Ray at {DEAD} does not answer"):
        cluster.ray_address(DEAD)
    monkeypatch.setattr(cluster, "recorded_cluster_address", lambda: DEAD)
    with pytest.raises(cluster.RayUnreachableError, match=DEAD):
        cluster.ray_address("auto")
    monkeypatch.setattr(cluster, "recorded_cluster_address", lambda: "")
    with pytest.raises(cluster.RayUnreachableError, match="no running Ray cluster"):
        cluster.ray_address("auto")
    with pytest.raises(cluster.RayUnreachableError, match="not host:port"):
        cluster.ray_address("somewhere")
