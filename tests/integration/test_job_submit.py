"""`ray job submit --working-dir . -- python jobs/track_stream.py` against `ray start --head`.

Starting a separate Ray head takes machine-wide resources, so this runs only in CI (CI=true) or
when RAY_DEEPSORT_TEST_JOB_SUBMIT=1. The head runs with `--block` in a child process that this
test stops itself: `ray stop` would end every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from stream_support import Topics, ray_cli, starts_a_ray_head, wait_for_dashboard

from ray_deepsort.pipeline.parquet import ParquetResultWriter
from ray_deepsort.stream.broker import LocalBroker, free_port
from ray_deepsort.stream.publish import FramePublisher, publish, synthetic_frames

pytestmark = [pytest.mark.integration, starts_a_ray_head]

ROOT = Path(__file__).resolve().parents[2]


def test_ray_job_submit(broker: LocalBroker, topics: Topics, tmp_path: Path) -> None:
    # As from an activated virtualenv: the job's `python` must be the one that has the deps.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PATH": path}
    env.pop("RAY_ADDRESS", None)
    gcs_port, dashboard_port = free_port(), free_port()
    # Its own temp dir (short: Ray's unix sockets live in it), so the address file a killed head
    # leaves behind never reaches another Ray on the machine; removed at the end.
    temp_dir = tempfile.mkdtemp(prefix="rd-head-", dir="/tmp")
    head = subprocess.Popen(
        [
            ray_cli(),
            "start",
            "--head",
            "--block",
            f"--port={gcs_port}",
            "--num-cpus=2",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
            # Fixed default ports collide with any other Ray on the machine (the agent then
            # runs without HTTP and `ray job submit` waits forever for an agent): pick free ones.
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dashboard_port}"
    try:
        wait_for_dashboard(url, 120)
        _, frames = synthetic_frames(
            2, 40, objects=10, width=480, height=270, image_format="none", embeddings="identity"
        )
        with FramePublisher(broker.bootstrap_servers, topics.frames) as publisher:
            publish(frames, publisher, partitions={"cam0": 0, "cam1": 1})
        output = tmp_path / "out"
        command = [
            ray_cli(),
            "job",
            "submit",
            f"--address={url}",
            "--working-dir=.",
            "--",
            "python",
            "jobs/track_stream.py",
            "--config=jobs/stream.toml",
            f"--bootstrap-servers={broker.bootstrap_servers}",
            f"--frames-topic={topics.frames}",
            f"--results-topic={topics.results}",
            f"--dead-letter-topic={topics.dead_letters}",
            f"--group-id={topics.group}",
            f"--output={output}",
            "--model=none",
            "--expected-frames=80",
            "--max-idle=20",
        ]
        # The job agent comes up after the dashboard: seconds when idle, minutes on a busy machine.
        agent_deadline = time.monotonic() + 240
        while True:
            submitted = subprocess.run(
                command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400
            )
            no_agent = "No available agent" in submitted.stderr + submitted.stdout
            if not no_agent or time.monotonic() > agent_deadline:
                break
            time.sleep(3)
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        summary_text = submitted.stdout[submitted.stdout.index('{\n  "summary"') :]
        summary = json.loads(summary_text[: summary_text.index("\n}") + 2])["summary"]
        assert summary["frames"] == 80
        frames_table = ParquetResultWriter(output).read("frames")
        assert frames_table.num_rows == 80
    finally:
        # Only the processes of the head we started (its own process group), never `ray stop`.
        os.killpg(head.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=60)
        time.sleep(2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)
