"""Ray start-up with a dead head's leftover address file: the commands start, or fail fast.

Each command runs as a user would run it (a subprocess of the installed CLI) with Ray's temp
dir isolated in a fresh folder (`RAY_TMPDIR`) that holds a stale `ray_current_cluster`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stream_support import Topics

from ray_deepsort.archive.synthetic import write_synthetic_archive
from ray_deepsort.stream.broker import LocalBroker
from ray_deepsort.stream.publish import FramePublisher, publish, synthetic_frames

DEAD = "192.0.2.2:55191"  # TEST-NET-1: never answers
CLI = str(Path(sys.executable).with_name("ray-deepsort"))
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def stale_ray_env() -> Iterator[dict[str, str]]:
    # Short path: Ray's unix sockets live under it (at most 107 characters).
    temp = tempfile.mkdtemp(prefix="rd-", dir="/tmp")
    (Path(temp) / "ray").mkdir()
    (Path(temp) / "ray" / "ray_current_cluster").write_text(DEAD)
    env = {**os.environ, "RAY_TMPDIR": temp}
    env.pop("RAY_ADDRESS", None)
    try:
        yield env
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _run(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_reprocess_starts_a_local_ray(stale_ray_env: dict[str, str], tmp_path: Path) -> None:
    write_synthetic_archive(tmp_path / "in", 1)
    done = _run(
        [
            "reprocess",
            str(tmp_path / "in"),
            "--output",
            str(tmp_path / "out"),
            "--model",
            "none",
            "--num-cpus",
            "2",
            "--progress",
            "none",
        ],
        stale_ray_env,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Started a local Ray instance" in done.stderr


def test_stream_starts_a_local_ray_or_fails_fast_on_a_dead_address(
    stale_ray_env: dict[str, str], broker: LocalBroker, topics: Topics, tmp_path: Path
) -> None:
    common = [
        "stream",
        "--config=jobs/stream.toml",
        f"--bootstrap-servers={broker.bootstrap_servers}",
        f"--frames-topic={topics.frames}",
        f"--results-topic={topics.results}",
        f"--dead-letter-topic={topics.dead_letters}",
        f"--group-id={topics.group}",
        f"--output={tmp_path / 'out'}",
        "--model=none",
        "--set=ray.namespace=startup-test",
    ]
    started = time.monotonic()
    failed = _run([*common, f"--ray-address={DEAD}"], stale_ray_env, timeout=60)
    assert failed.returncode == 2
    assert f"Ray at {DEAD} does not answer" in failed.stderr
    assert time.monotonic() - started < 30

    _, frames = synthetic_frames(1, 20, objects=4, image_format="none", embeddings="identity")
    with FramePublisher(broker.bootstrap_servers, topics.frames) as publisher:
        publish(frames, publisher, partitions={"cam0": 0})
    done = _run(
        [*common, "--expected-frames=20", "--max-idle=20", "--shards=1"],
        stale_ray_env,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"frames": 20' in done.stdout
