"""`connect_ray` never waits on a dead cluster named by Ray's leftover address file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ray_deepsort.pipeline import cluster

DEAD = "192.0.2.2:55191"  # TEST-NET-1: never answers


def test_an_explicit_address_is_used_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "recorded_cluster_address", lambda: DEAD)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster.ray_address("ray://head:10001") == "ray://head:10001"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")  # what `ray job submit` sets
    assert cluster.ray_address("") == "10.0.0.5:6379"


def test_a_recorded_cluster_is_joined_only_if_it_answers(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(cluster, "PROBE_TIMEOUT_S", 0.5)
    monkeypatch.setattr(cluster, "recorded_cluster_address", lambda: "")
    assert cluster.ray_address("") == "local"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        alive = f"127.0.0.1:{listener.getsockname()[1]}"
        monkeypatch.setattr(cluster, "recorded_cluster_address", lambda: alive)
        assert cluster.ray_address("") == "auto"
    monkeypatch.setattr(cluster, "recorded_cluster_address", lambda: DEAD)
    assert cluster.ray_address("") == "local"
    assert DEAD in caplog.text and "starting a local Ray" in caplog.text


def test_the_address_file_ray_leaves_behind_is_read(tmp_path: Path) -> None:
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(DEAD)
    env = {**os.environ, "RAY_TMPDIR": str(tmp_path)}
    env.pop("RAY_ADDRESS", None)
    code = (
        "from ray_deepsort.pipeline import cluster\n"
        "cluster.PROBE_TIMEOUT_S = 0.5\n"
        "print(cluster.recorded_cluster_address(), cluster.ray_address(''))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.split() == [DEAD, "local"], result.stderr
